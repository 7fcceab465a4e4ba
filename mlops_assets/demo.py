"""`mlops-demo`: run every model's lifecycle job (<model>_mlops_lifecycle: every asset and
check but served_image, which needs an image builder and has its own job) once, one model after
the other, in this process, as ``dg launch --job`` does: a run on the local Dagster instance,
its steps as MLOPS_EXECUTOR says. ``--model`` runs one.

It gives DAGSTER_HOME a persistent default under $MLOPS_HOME, so the run it
makes is there when you open `dagster dev` with the same DAGSTER_HOME.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import os
import shutil
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from shlex import quote
from typing import TYPE_CHECKING

from mlops_assets.instance_config import LOCAL_RUNS_YAML
from mlops_assets.settings import home, setting

if TYPE_CHECKING:
    from dagster import DagsterInstance, Definitions, JobDefinition

    from mlops_assets.lib.failures import RunOutcome

JOB = "mlops_lifecycle"
DEFS = "mlops_assets.definitions"

# A local instance: SQLite under DAGSTER_HOME; runs whose processes died are marked failed.
# A clone has it at .mlops/dagster_home/dagster.yaml (the README's DAGSTER_HOME), so that
# `dagster dev`, `dg dev` and `dg launch` find it before mlops-demo has run: Dagster reads
# the instance's config before it loads any of this project's code, and `dagster dev` wants
# the folder to exist. mlops-demo writes it into any other DAGSTER_HOME that lacks one.
DAGSTER_YAML = f"""\
# This project's local Dagster instance: runs, events and schedules in SQLite in this folder;
# a run whose processes all died is marked failed (mlops_assets/lib/dead_runs.py).
{LOCAL_RUNS_YAML}telemetry:
  enabled: false
"""


def dagster_home() -> Path:
    path = Path(os.environ.get("DAGSTER_HOME") or home() / "dagster_home").resolve()
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return path


@cache
def definitions() -> Definitions:
    """The code location, built once per process for every model's run."""
    from mlops_assets.definitions import build_definitions

    return build_definitions()


def lifecycle_job(model: str) -> JobDefinition:
    """The model's lifecycle job as the code location defines it; a module-level function, so
    that a step process (MLOPS_EXECUTOR=multiprocess) can rebuild it."""
    return definitions().resolve_job_def(f"{model}_{JOB}")


def models() -> list[str]:
    """Every model of the code location, by its lifecycle job."""
    suffix = f"_{JOB}"
    return sorted(
        job.name.removesuffix(suffix)
        for job in definitions().resolve_all_job_defs()
        if job.name.endswith(suffix)
    )


def fail_dead_runs(instance: DagsterInstance) -> None:
    """Runs of this instance left STARTED by a process that died are marked failed (with
    their MLflow runs): no daemon may be running to notice them (lib/dead_runs.py)."""
    from mlops_assets.definitions import build_resources, model_scopes
    from mlops_assets.lib.dead_runs import sweep_dead_runs

    def fail_mlflow_runs(run_id: str, reason: str) -> None:
        # The dead run's MLflow runs are in its model's experiment: every model's is searched.
        deployment = build_resources()["mlflow"]
        for model in model_scopes().values():
            model.view("mlflow", deployment).fail_runs_of(run_id)  # type: ignore[attr-defined]

    for run_id, reason in sweep_dead_runs(instance, on_dead=fail_mlflow_runs):
        print(f"run {run_id} was still marked as running, but {reason}: marked failed",
              file=sys.stderr)  # fmt: skip


@contextmanager
def local_instance() -> Iterator[DagsterInstance]:
    """The instance at DAGSTER_HOME. A new SQLite instance makes its tables on first use, and
    two processes doing so at once collide (a UNIQUE constraint on alembic's version): the
    first use is one process at a time."""
    from dagster import DagsterInstance

    lock = Path(os.environ["DAGSTER_HOME"]) / ".instance.lock"
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        instance = DagsterInstance.get()
        fcntl.flock(handle, fcntl.LOCK_UN)
    with instance:
        yield instance


# Exit codes (README, "Exit codes").
EXIT_OK = 0
EXIT_RUN_FAILED = 1  # a step failed (a rejected input, a blocking check) or the run could not start
EXIT_CHECKS_FAILED = 2  # the run finished, but a check of ERROR severity failed (or, asked, a WARN)


def run_lifecycle(model: str, partition: str) -> tuple[bool, RunOutcome]:
    from dagster import build_reconstructable_job, execute_job

    from mlops_assets.lib.console import JOB_CONFIG
    from mlops_assets.lib.failures import run_outcome

    with local_instance() as instance:
        fail_dead_runs(instance)
        result = execute_job(
            build_reconstructable_job(__name__, "lifecycle_job", reconstructable_args=(model,)),
            instance=instance,
            tags={"dagster/partition": partition},
            # The project's console logger (lib/console.py): an expected rejection is printed
            # with its reason and without a stack trace.
            run_config=JOB_CONFIG,
        )
        return result.success, run_outcome(instance, result.run_id)


def summary(
    succeeded: bool, outcome: RunOutcome, fail_on_warn: bool, what: str
) -> tuple[int, list[str]]:
    """The exit code and the lines that end the output: every check that failed or warned,
    with its message, then the verdict, whose last line says why."""
    lines = []
    if outcome.checks:
        lines.append(f"checks that did not pass ({len(outcome.checks)}):")
        lines.extend(f"  {check.line}" for check in outcome.checks)
    reasons = outcome.reasons()
    if not succeeded:
        code = EXIT_RUN_FAILED
        why = reasons[0] if reasons else "the run failed (see the log above)"
        more = f" (and {len(reasons) - 1} more failed steps above)" if len(reasons) > 1 else ""
        verdict = f"FAILED: {what}: {why}{more}"
    elif outcome.failed_errors or (fail_on_warn and outcome.warnings):
        code = EXIT_CHECKS_FAILED
        failed = outcome.failed_errors or outcome.warnings
        verdict = f"FAILED CHECKS: {what} ran, but {failed[0].line}" + (
            f" (and {len(failed) - 1} more above)" if len(failed) > 1 else ""
        )
    else:
        code = EXIT_OK
        warned = f", {len(outcome.warnings)} warnings above" if outcome.warnings else ""
        verdict = f"Done: {what}{warned}."
    return code, [*lines, verdict]


def ui_command(
    instance_home: Path,
    cwd: Path | None = None,
    python: str | None = None,
    root: Path | None = None,
) -> str:
    """The `dagster dev` command that shows this instance, as the user can paste it from
    ``cwd``: with this environment's own `dagster` (whatever its venv is called), from the
    project root, whose workspace.yaml names the code location. Without a project root (a
    non-editable install), the definitions module is named instead."""
    here = (cwd or Path.cwd()).resolve()
    dagster = Path(os.path.abspath(Path(python or sys.executable).parent / "dagster"))
    root = root.resolve() if root else Path(__file__).resolve().parents[1]
    if not (root / "workspace.yaml").is_file():
        return f"DAGSTER_HOME={quote(str(instance_home))} {quote(str(dagster))} dev -m {DEFS}"
    shown = dagster.relative_to(root) if dagster.is_relative_to(root) else dagster
    cd = "" if here == root else f"cd {quote(str(root))} && "
    return f"{cd}DAGSTER_HOME={quote(str(instance_home))} {quote(str(shown))} dev"


def import_skops_first() -> None:
    """Import skops.io (with scikit-learn and SciPy) before Dagster and MLflow.

    skops.io's import names each of SciPy's 232 ufuncs by scanning ``sys.modules`` in import
    order until it reaches SciPy. Imported at the first training step, after Dagster, MLflow
    and pandas (about 2,200 modules ahead of SciPy), that scan took 0.63 s; imported first,
    0.17 s. The run imports all three anyway, so nothing extra is loaded. Only this process
    gains: a run launched from `dagster dev`, and each MLOPS_EXECUTOR=multiprocess step,
    starts in Dagster's own command, which imports Dagster first.
    """
    import skops.io  # noqa: F401


def why(exc: BaseException) -> str:
    """One line saying why ``exc`` stopped the run before it started, with the free space of
    DAGSTER_HOME's disk when that is nearly gone (SQLite says only "disk I/O error")."""
    first = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {first}"
    where = os.environ.get("DAGSTER_HOME") or str(home())
    try:
        free = shutil.disk_usage(where).free
    except OSError:
        return text
    if free < 64 * 1024 * 1024:
        text += f" (the disk of {where} has {free:,} bytes free)"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlops-demo",
        description="Materialise every asset and check of each model's lifecycle once "
        "(served_image has its own job, <model>_serve_champion).",
    )
    parser.add_argument(
        "--model",
        action="append",
        help="run this model's lifecycle only (repeat for more; default: every model)",
    )
    parser.add_argument(
        "--partition",
        help="day of the incoming batch to score (default: each model's latest complete day)",
    )
    parser.add_argument(
        "--fail-on-warn",
        action="store_true",
        help="exit 2 when a check fails with WARN severity too "
        "(default: MLOPS_DEMO_FAIL_ON_WARN, off)",
    )
    args = parser.parse_args(argv)
    import_skops_first()
    # Read after skops: the settings import the resources, and with them Dagster.
    fail_on_warn = args.fail_on_warn or setting("MLOPS_DEMO_FAIL_ON_WARN").lower() in (
        "1",
        "true",
        "yes",
    )
    # A run imports and builds a great deal (Dagster, MLflow, scikit-learn, Evidently), and
    # under the default thresholds each full collection walks all of it again: ten walks,
    # 1.7 s of a 10,000-row run. Collect less often, as batch tools like mypy do; cycles
    # are still collected, and arrays are freed by reference count as ever.
    gc.set_threshold(50_000, 20, 10)
    try:
        os.environ["DAGSTER_HOME"] = str(dagster_home())
        known = models()
    except Exception as exc:  # the code location does not load: say why, last
        traceback.print_exc()
        print(f"\nFAILED: {JOB} could not run: {why(exc)}", file=sys.stderr)
        return EXIT_RUN_FAILED
    unknown = sorted(set(args.model or ()) - set(known))
    if unknown:
        parser.error(f"no model named {', '.join(unknown)} (models: {', '.join(known)})")
    verdicts = []
    for model in args.model or known:
        code, lines = run_model(model, args.partition, fail_on_warn)
        if code is None:
            parser.error(f"{model}: no complete day to score yet: give --partition")
        verdicts.append((code, lines))
    print(
        "\nSee it in the UI:\n"
        f"  {ui_command(Path(os.environ['DAGSTER_HOME']))}\n"
        "  then open http://127.0.0.1:3000/asset-groups\n",
        file=sys.stderr,
    )
    for _, lines in verdicts:  # each model's failed checks, then its verdict
        print("\n".join(lines), file=sys.stderr)
    code = max(c for c, _ in verdicts)
    if len(verdicts) > 1:  # the last line says why: the first model that failed, or all done
        failed = [lines[-1] for c, lines in verdicts if c != EXIT_OK]
        print(
            failed[0] if failed else f"Done: {len(verdicts)} models' lifecycles.",
            file=sys.stderr,
        )
    # The run is over and stored. What is left is the interpreter's teardown, whose garbage
    # collections walk every object the run's libraries made (about two seconds); objects
    # moved to the permanent generation are not walked. Exit handlers still run.
    gc.freeze()
    return code


def run_model(
    model: str, partition: str | None, fail_on_warn: bool
) -> tuple[int | None, list[str]]:
    """Run one model's lifecycle: its exit code (None: no day to score yet) and the lines that
    say what happened, the verdict last."""
    if partition is None:
        partitions = lifecycle_job(model).partitions_def
        partition = partitions.get_last_partition_key() if partitions else None
        if partition is None:
            return None, []
    what = f"{model}_{JOB} for partition {partition}"
    print(f"running {what}", file=sys.stderr)
    try:
        succeeded, outcome = run_lifecycle(model, partition)
    except Exception as exc:  # the run could not even start: say why, last
        traceback.print_exc()
        return EXIT_RUN_FAILED, [f"FAILED: {what} could not run: {why(exc)}"]
    return summary(succeeded, outcome, fail_on_warn, what)


if __name__ == "__main__":
    raise SystemExit(main())
