"""A cold lifecycle run as a user starts it, against a plain script doing the same work.

For each row count the labelled data and one day's batch (a tenth of the rows) are written
as CSV once; then, interleaved and several times each, on an empty state every time:

- lifecycle: ``mlops-demo`` (the README's first command: every asset and check of
  mlops_lifecycle in one Dagster run, its steps as Dagster starts them);
- plain: ``bench/plain_lifecycle.py`` (the same computations, no project code, no Dagster);
- with ``--multiprocess`` also the lifecycle under MLOPS_EXECUTOR=multiprocess (a process
  per step, the default before in_process).

Each is timed as a whole process from outside; peak RSS is the largest sum over the whole
process tree, sampled every 50 ms. Prints min/median/max and the median ratios.

First, as many times interleaved, a process that only imports each side's libraries: the
plain script's (pandas, pyarrow, scikit-learn, skops, Evidently), and those plus what the
lifecycle adds (Dagster, MLflow with its SQLite stores, the definitions). That is the least
either run can take, whatever it then does; each row's figures are also printed beyond it.

    .venv/bin/python bench/cold_lifecycle.py --rows 10000 --runs 3 [--multiprocess]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTITION = "2026-11-20"
# What plain_lifecycle.py imports for its work, and what the lifecycle imports as well. (The
# lifecycle's run imports more: this is a floor, not its whole import time.)
PLAIN_IMPORTS = (
    "numpy, pandas, pyarrow.parquet, skops.io, evidently, evidently.presets, sklearn.compose, "
    "sklearn.ensemble, sklearn.impute, sklearn.metrics, sklearn.pipeline, sklearn.preprocessing"
)
LIFECYCLE_IMPORTS = (
    f"{PLAIN_IMPORTS}, dagster, mlflow, mlflow.sklearn, mlflow.store.tracking.sqlalchemy_store, "
    "mlflow.store.model_registry.sqlalchemy_store, mlops_assets.definitions"
)


def tree_rss_mb(root: int) -> float:
    """The resident memory of ``root`` and all its descendants, in MiB (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        rss[int(entry)] = int(fields[21])
    members = {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in members and pid not in members:
                members.add(pid)
                changed = True
    page = os.sysconf("SC_PAGE_SIZE")
    return sum(rss.get(pid, 0) for pid in members) * page / 2**20


def timed(
    command: list[str], env: dict[str, str], cwd: Path = ROOT, log: Path | None = None
) -> tuple[float, float]:
    """Seconds ``command`` took as a whole process, and the peak RSS of its process tree. Its
    output goes to ``log``, or to a temporary file (a pipe left unread would stop a process
    that says much), whose end is shown if it fails."""
    with open(log, "w+b") if log else tempfile.TemporaryFile() as output:
        start = time.monotonic()
        process = subprocess.Popen(
            command, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT
        )
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, tree_rss_mb(process.pid))
            time.sleep(0.05)
        seconds = time.monotonic() - start
        if process.returncode != 0:
            output.seek(0)
            said = output.read().decode(errors="replace")
            raise SystemExit(f"{command[0]} failed ({process.returncode}):\n{said[-3000:]}")
    return seconds, peak


def write_data(folder: Path, rows: int) -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT))
    from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes

    labelled = folder / "labelled.csv"
    labelled.write_bytes(to_csv_bytes(generate_house_prices(rows, seed=42)))
    incoming = folder / "incoming"
    incoming.mkdir()
    batch = incoming / f"{PARTITION}.csv"
    batch.write_bytes(to_csv_bytes(generate_house_prices(max(rows // 10, 100), seed=20261120)))
    return labelled, batch


def project_free_env() -> dict[str, str]:
    """This environment without the project's, MLflow's and Dagster's settings."""
    return {
        k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "DAGSTER_"))
    }


def commands(
    work: Path, labelled: Path, batch: Path, multiprocess: bool
) -> dict[str, tuple[list[str], dict[str, str]]]:
    bin_dir = Path(sys.executable).parent
    base = project_free_env()
    lifecycle_env = dict(
        base,
        MLOPS_HOME=str(work / "home"),
        MLOPS_SOURCE_URI=str(labelled),
        MLOPS_INCOMING_URI=str(batch.parent / "{date}.csv"),
    )
    demo = [str(bin_dir / "mlops-demo"), "--partition", PARTITION, "--model", "house_prices"]
    found = {
        "lifecycle": (demo, lifecycle_env),
        "plain": (
            [
                sys.executable,
                str(ROOT / "bench/plain_lifecycle.py"),
                str(labelled),
                str(batch),
                str(work / "plain"),
            ],
            base,
        ),
    }
    if multiprocess:
        found["multiprocess"] = (demo, dict(lifecycle_env, MLOPS_EXECUTOR="multiprocess"))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--multiprocess", action="store_true")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; medians of {args.runs} interleaved cold runs", flush=True)
    floors = import_floors(args.runs)
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="mlops-cold-") as tmp:
            labelled, batch = write_data(Path(tmp), rows)
            results: dict[str, list[tuple[float, float]]] = {}
            for _ in range(args.runs):
                work = Path(tmp) / "work"
                for name, (command, env) in commands(
                    work, labelled, batch, args.multiprocess
                ).items():
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir()
                    results.setdefault(name, []).append(timed(command, env))
            medians = report(rows, results, "plain")
            for name, (median_s, median_mb) in medians.items():
                floor_s, floor_mb = floors["plain" if name == "plain" else "lifecycle"]
                print(
                    f"{rows:>10,} rows {name:>12} beyond its imports: "
                    f"{median_s - floor_s:5.1f} s, {median_mb - floor_mb:5.0f} MiB",
                    flush=True,
                )


def report(
    rows: int,
    results: dict[str, list[tuple[float, float]]],
    against: str,
    notes: dict[str, str] | None = None,
) -> dict[str, tuple[float, float]]:
    """Prints each command's median time (min, max) and peak tree RSS over its runs, with its
    note if any, then the ratios of each median to ``against``'s; returns the medians."""
    medians = {}
    for name, runs in results.items():
        seconds = sorted(s for s, _ in runs)
        medians[name] = (statistics.median(seconds), statistics.median(p for _, p in runs))
        print(
            f"{rows:>10,} rows {name:>12}: {medians[name][0]:7.1f} s "
            f"(min {seconds[0]:.1f}, max {seconds[-1]:.1f}), "
            f"peak tree RSS {medians[name][1]:6.0f} MiB{(notes or {}).get(name, '')}",
            flush=True,
        )
    base_s, base_mb = medians[against]
    for name, (median_s, median_mb) in medians.items():
        if name != against:
            print(
                f"{rows:>10,} rows {name:>12} / {against}: time {median_s / base_s:.2f}x, "
                f"peak RSS {median_mb / base_mb:.2f}x",
                flush=True,
            )
    return medians


def import_floors(runs: int) -> dict[str, tuple[float, float]]:
    """Medians of ``runs`` interleaved processes that only import each side's libraries."""
    env = project_free_env()
    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(runs):
        for name, modules in (("plain", PLAIN_IMPORTS), ("lifecycle", LIFECYCLE_IMPORTS)):
            command = [sys.executable, "-c", f"import {modules}"]
            results.setdefault(name, []).append(timed(command, env))
    floors = {}
    for name, found in results.items():
        floors[name] = (
            statistics.median(s for s, _ in found),
            statistics.median(p for _, p in found),
        )
        print(
            f"{'imports only':>16} {name:>12}: {floors[name][0]:7.1f} s, "
            f"peak RSS {floors[name][1]:6.0f} MiB",
            flush=True,
        )
    return floors


if __name__ == "__main__":
    main()
