"""This checkout against an earlier commit, on what every user pays: loading the code location
and one model's main job, whole processes, paired and interleaved.

    .venv/bin/python bench/against_commit.py COMMIT [--runs 7] [--model house_prices]

COMMIT is checked out in a temporary git worktree and imported from there with this venv (so
only the project's code differs). Each pair runs the earlier commit's process, then this
checkout's, in a fresh state folder (``mlops-demo``: a cold lifecycle, as the README's first
command). Prints each side's median wall, user and system seconds and the median of the pairs'
ratios (this / earlier) with their spread. Before the models were components (any commit
before ModelLifecycle), the earlier commit's ``mlops-demo`` runs its one model; this
checkout's runs ``--model``.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOAD = "import mlops_assets.definitions as d; d.defs().get_repository_def().get_all_jobs()"
DEMO = (
    "import sys; from mlops_assets.demo import main; "
    "sys.argv = ['mlops-demo', *sys.argv[1:]]; sys.exit(main())"
)


def clean_env() -> dict[str, str]:
    """This process's environment without any project setting or Dagster home."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLOPS_") and k not in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI")
    }


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, float]:
    """Wall, user and system seconds of ``command`` and every process it waited for."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed:\n{done.stderr[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def run(tree: Path, code: str, args: list[str]) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="against-") as home:
        env = clean_env() | {"PYTHONPATH": str(tree), "MLOPS_HOME": str(Path(home) / "mlops")}
        # cwd outside both trees: Python puts it ahead of PYTHONPATH.
        return timed([sys.executable, "-c", code, *args], env, Path(home))


Times = tuple[float, float, float]


def report(name: str, pairs: list[tuple[Times, Times]]) -> None:
    print(f"{name} ({len(pairs)} pairs)")
    for i, what in enumerate(("wall", "user", "sys")):
        now = statistics.median(p[0][i] for p in pairs)
        then = statistics.median(p[1][i] for p in pairs)
        ratios = sorted(p[0][i] / p[1][i] for p in pairs if p[1][i] > 0)
        spread = f"{ratios[0]:.2f}x-{ratios[-1]:.2f}x" if ratios else "-"
        ratio = f"{statistics.median(ratios):.2f}x" if ratios else "-"
        print(f"  {what:4}  this {now:6.2f}s  earlier {then:6.2f}s  ratio {ratio} ({spread})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commit")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--model", default="house_prices")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="against-commit-"))
    earlier = scratch / "tree"
    try:
        subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "worktree",
                "add",
                "-q",
                "--detach",
                str(earlier),
                args.commit,
            ],
            check=True,
        )
        components = (earlier / "mlops_assets" / "components").is_dir()
        if not components and args.model != "house_prices":
            raise SystemExit(f"{args.commit} has one model, the house-price one, not {args.model}")
        old_demo = ["--model", args.model] if components else []
        cases: list[tuple[str, Callable[[Path], tuple[float, float, float]]]] = [
            ("loading the code location", lambda tree: run(tree, LOAD, [])),
            (
                f"mlops-demo, {args.model}",
                lambda tree: run(tree, DEMO, ["--model", args.model] if tree == ROOT else old_demo),
            ),
        ]
        for name, case in cases:
            case(ROOT), case(earlier)  # warm the page cache, not counted
            pairs: list[tuple[Times, Times]] = []
            for i in range(args.runs):  # which side goes first alternates
                if i % 2:
                    now = case(ROOT)
                    pairs.append((now, case(earlier)))
                else:
                    then = case(earlier)
                    pairs.append((case(ROOT), then))
            report(name, pairs)
    finally:
        if earlier.exists():
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(earlier)])
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
