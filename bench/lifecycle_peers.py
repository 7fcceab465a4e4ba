"""The lifecycle against the tools a team would pick instead, on the same work, in one run.

For each row count the labelled data and one day's batch (a tenth of the rows) are written as
CSV once (bench/cold_lifecycle.py's data); then, interleaved and several times each, each cold
(an empty state every time), each timed from outside as a whole process with the peak RSS of
its process tree:

- lifecycle: ``mlops-demo --model house_prices``, as a user starts the project (every asset and
  check of the house-price lifecycle in one Dagster run);
- plain: bench/plain_lifecycle.py, the same computations as a plain script (no tracking, no
  registry, no checks): the floor;
- the peers of bench/peers/ (ZenML, Kedro with kedro-mlflow, Metaflow), each the same lifecycle
  (read and hash the CSV, validate, clean, split, Parquet, the same HistGradientBoosting
  Pipeline, log and register it in MLflow with the alias ``champion``, score the batch,
  Evidently drift on a sample) written as its docs recommend over the shared computations of
  bench/peers/house_lifecycle.py, in a venv of its own made from its pins, started as its user
  starts it (``python run.py``, ``kedro run``, ``python flow.py run``) in a fresh work folder
  holding its project, the data and every bit of its state (MLflow in SQLite there).

A peer's one-time set-up (ZenML's stack registration) runs before each of its runs, untimed,
and is printed apart. After each peer's run the bench checks what it made: one prediction per
batch row in ``out/predictions.parquet``, ``out/drift.html``, and the registered model with its
alias in the run's MLflow; a run that did not stops the bench. Every process runs with
``MLFLOW_DISABLE_TELEMETRY=true`` (MLflow 3 would otherwise try to send usage events from each,
a network call that has nothing to do with the work). Prints medians (and min/max) and, for
each, the ratio of its median to the lifecycle's.

    .venv/bin/python bench/lifecycle_peers.py [--rows 10000 1000000] [--runs 3]
        [--peers zenml,kedro,metaflow] [--logs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cold_lifecycle import commands, project_free_env, report, timed, write_data
from venvs import run_logged, venv_from_pins

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / "bench" / "peers"
PEERS = ("zenml", "kedro", "metaflow")
SHARED = PEERS_DIR / "house_lifecycle.py"
MODEL_NAME = "house-price-regressor"
ALIAS = "champion"
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true"}


def peer_config(peer: str) -> dict:
    """``peer``'s peer.json: its pins, env, set-up and run commands, docs, what it cannot do."""
    config: dict = json.loads((PEERS_DIR / peer / "peer.json").read_text())
    return config


def peer_work(peer: str, work: Path, labelled: Path, batch: Path) -> None:
    """A fresh work folder for one run of ``peer``: its project, the shared computations and
    the data, as its user would have them."""
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(
        PEERS_DIR / peer, work, ignore=shutil.ignore_patterns("__pycache__", "README.md")
    )
    shutil.copy2(SHARED, work / SHARED.name)
    (work / "data").mkdir(exist_ok=True)
    shutil.copy2(labelled, work / "data" / "labelled.csv")
    shutil.copy2(batch, work / "data" / "batch.csv")


def peer_env(config: dict, python: Path, work: Path) -> dict[str, str]:
    env = dict(project_free_env(), **QUIET)
    env["PATH"] = f"{python.parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(python.parents[1])
    env["PYTHONPATH"] = str(work)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
    for name, value in config.get("env", {}).items():
        env[name] = str(value).replace("{W}", str(work))
    return env


def argv(command: list[str], python: Path) -> list[str]:
    """``command`` with its program from the peer's venv where the venv has it."""
    program = python.parent / command[0]
    return [str(program) if program.exists() else command[0], *command[1:]]


def check_peer_run(peer: str, work: Path, batch_rows: int) -> None:
    """Stops the bench unless ``peer``'s run made what the lifecycle makes."""
    import pandas as pd

    predictions = work / "out" / "predictions.parquet"
    problems = []
    if not predictions.exists():
        problems.append("no out/predictions.parquet")
    else:
        scored = pd.read_parquet(predictions)
        if len(scored) != batch_rows or "prediction" not in scored.columns:
            problems.append(
                f"out/predictions.parquet has {len(scored)} rows (the batch: {batch_rows}) and "
                f"columns {list(scored.columns)}"
            )
    if not (work / "out" / "drift.html").exists():
        problems.append("no out/drift.html")
    with sqlite3.connect(work / "mlflow.db") as db:
        aliased = db.execute(
            "SELECT version FROM registered_model_aliases WHERE name = ? AND alias = ?",
            (MODEL_NAME, ALIAS),
        ).fetchall()
    if not aliased:
        problems.append(f"no {MODEL_NAME}@{ALIAS} in its MLflow registry")
    if problems:
        raise SystemExit(f"{peer}'s run in {work} did not do the work: {'; '.join(problems)}")


def run_peer(
    peer: str,
    python: Path,
    work: Path,
    labelled: Path,
    batch: Path,
    batch_rows: int,
    log: Path | None = None,
) -> tuple[float, float, float]:
    """One cold run of ``peer``: (seconds, peak tree RSS in MiB, set-up seconds)."""
    config = peer_config(peer)
    peer_work(peer, work, labelled, batch)
    env = peer_env(config, python, work)
    started = time.monotonic()
    for command in config.get("setup", []):
        run_logged(
            argv(command, python), work / "setup.log", f"{peer}'s set-up {command}", env, work
        )
    setup_seconds = time.monotonic() - started
    seconds, peak = timed(argv(config["run"], python), env, cwd=work, log=log)
    check_peer_run(peer, work, batch_rows)
    return seconds, peak, setup_seconds


def log_path(logs: Path | None, rows: int, name: str, run: int) -> Path | None:
    """Where a timed run's output is kept (``--logs``), if anywhere."""
    return logs / f"{rows}-{name}-{run}.log" if logs else None


def peer_venvs(peers: list[str]) -> dict[str, Path]:
    return {
        peer: venv_from_pins(
            f"peer-{peer}", PEERS_DIR / peer / peer_config(peer).get("requirements", "")
        )
        for peer in peers
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", default=",".join(PEERS))
    parser.add_argument(
        "--logs", type=Path, help="keep each timed run's output here, as ROWS-NAME-RUN.log"
    )
    args = parser.parse_args()
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peers {sorted(unknown)}: choose from {', '.join(PEERS)}")
    pythons = peer_venvs(peers)
    print(
        f"{os.cpu_count()} cores; medians of {args.runs} interleaved cold runs; "
        f"peers {', '.join(peers)}",
        flush=True,
    )
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="mlops-peers-") as tmp:
            labelled, batch = write_data(Path(tmp), rows)
            with batch.open() as lines:
                batch_rows = sum(1 for _ in lines) - 1
            results: dict[str, list[tuple[float, float]]] = {}
            setups: dict[str, list[float]] = {}
            for run in range(1, args.runs + 1):
                work = Path(tmp) / "work"
                for name, (command, env) in commands(work, labelled, batch, False).items():
                    shutil.rmtree(work, ignore_errors=True)
                    work.mkdir()
                    results.setdefault(name, []).append(
                        timed(command, dict(env, **QUIET), log=log_path(args.logs, rows, name, run))
                    )
                for peer in peers:
                    seconds, peak, setup = run_peer(
                        peer,
                        pythons[peer],
                        work,
                        labelled,
                        batch,
                        batch_rows,
                        log_path(args.logs, rows, peer, run),
                    )
                    results.setdefault(peer, []).append((seconds, peak))
                    setups.setdefault(peer, []).append(setup)
                    print(f"{rows:>10,} rows {peer:>12}: {seconds:7.1f} s", flush=True)
            notes = {
                peer: f", set-up {statistics.median(seconds):.1f} s untimed"
                for peer, seconds in setups.items()
            }
            report(rows, results, "lifecycle", notes)


if __name__ == "__main__":
    main()
