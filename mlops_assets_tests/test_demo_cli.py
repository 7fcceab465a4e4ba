"""The README's run command, `mlops-demo`, in a subprocess: the whole graph in one run on the
local Dagster instance it sets up; then the UI command it prints, run as printed."""

import contextlib
import os
import re
import signal
import time
import urllib.request
from pathlib import Path
from shlex import quote, split
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from mlops_assets.demo import ui_command
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.stack.process import ServerProcess, free_port, wait_until
from mlops_assets_tests.conftest import (
    LIFECYCLE_ASSETS,
    PARTITION,
    TEST_INCOMING,
    demo_env,
    imported_before,
    run_mlops_demo,
)
from mlops_assets_tests.dagster_services import ROOT, graphql, wait_for
from mlops_assets_tests.test_definitions import EXPECTED_CHECKS, MODELS

# Runs mlops-demo in a subprocess.
pytestmark = pytest.mark.slow

# The line mlops-demo prints under "See it in the UI:".
PRINTED_UI_COMMAND = re.compile(r"^  (.*DAGSTER_HOME=.* dev)$", re.MULTILINE)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One mlops-demo run, from a folder that is not the project root, as a user might."""
    cwd = tmp_path_factory.mktemp("demo")
    out = run_mlops_demo(
        cwd / "mlops", cwd=cwd, extra_env={"PYTHONPROFILEIMPORTTIME": "1"}, models=()
    )
    return cwd, out


def test_mlops_demo_materialises_the_graph(demo):
    tmp_path, out = demo
    assert out.returncode == 0, out.stderr[-5000:]
    # SciPy comes before Dagster (demo.import_skops_first): skops.io's import scans the
    # modules loaded ahead of SciPy once for each of its ufuncs.
    imported_before(out.stderr, "skops.io", "dagster")
    dagster_home = tmp_path / "mlops" / "dagster_home"
    assert f"DAGSTER_HOME={dagster_home}" in out.stderr
    assert "dagster dev" in out.stderr
    # A user's first command prints no Python warning (MLflow's about a local dataset source
    # being ambiguous with itself was one: mlflow_registry.LOCAL_SOURCE_AMBIGUITY).
    assert not re.findall(r"^.*\w+Warning: .*$", out.stderr, re.MULTILINE)

    # Every shipped model's lifecycle, one run each, as the README's main job runs them.
    lines = out.stderr.strip().splitlines()
    assert lines[-3:] == [
        f"Done: house_prices_mlops_lifecycle for partition {PARTITION}.",
        f"Done: wine_cultivars_mlops_lifecycle for partition {PARTITION}.",
        "Done: 2 models' lifecycles.",
    ]
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = {run.job_name: run for run in instance.get_runs()}
        assert set(runs) == {f"{m}_mlops_lifecycle" for m in ("house_prices", "wine_cultivars")}
        for job, run in runs.items():
            model = job.removesuffix("_mlops_lifecycle")
            assert run.status == DagsterRunStatus.SUCCESS
            assert run.tags["dagster/partition"] == PARTITION
            events = instance.all_logs(run.run_id)
            materialized = {
                e.dagster_event.asset_key.to_user_string()
                for e in events
                if e.dagster_event
                and e.dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION
            }
            checks = [
                e.dagster_event.event_specific_data
                for e in events
                if e.dagster_event
                and e.dagster_event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION
            ]
            assert materialized == {f"{model}/{asset}" for asset in LIFECYCLE_ASSETS}
            assert sum(len(EXPECTED_CHECKS[asset]) for asset in LIFECYCLE_ASSETS) == len(checks)
            assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]


def test_mlops_demo_exits_non_zero_when_the_run_fails(tmp_path):
    missing = tmp_path / "no-such-source.csv"
    out = run_mlops_demo(
        tmp_path / "mlops", cwd=tmp_path, extra_env={"MLOPS_SOURCE_URI": str(missing)}
    )
    assert out.returncode == 1, out.stderr[-5000:]
    assert "FAILED: house_prices_mlops_lifecycle" in out.stderr
    assert str(missing) in out.stderr
    with DagsterInstance.from_config(str(tmp_path / "mlops" / "dagster_home")) as instance:
        [run] = instance.get_runs()
        assert run.status == DagsterRunStatus.FAILURE


def test_a_rejected_training_file_ends_with_its_reason_and_no_stack_trace(tmp_path):
    """Found by a new user: 8 of 12 rejected files ended in DagsterStepOutputNotFoundError
    for a check that did not fail, the reason 45 lines up."""
    bad = tmp_path / "houses.csv"
    bad.write_bytes(to_csv_bytes(generate_house_prices(300, seed=3).drop(columns=["area"])))
    out = run_mlops_demo(tmp_path / "mlops", cwd=tmp_path, extra_env={"MLOPS_SOURCE_URI": str(bad)})
    assert out.returncode == 1, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"FAILED: house_prices_mlops_lifecycle for partition {PARTITION}: house_prices/raw_data: "
        "required_columns_present "
        "failed: file 'houses.csv', column 'area': column is missing"
    ), last
    assert last.endswith("(rule: required column)")
    for internal in ("Stack Trace", "Traceback", "DagsterStepOutputNotFoundError", "dagster._core"):
        assert internal not in out.stderr, internal
    # The rule groups it could not evaluate are skipped, not failed.
    assert "check values_match_schema not evaluated: an earlier rule failed" in out.stderr


def test_a_failed_check_that_does_not_block_exits_2_and_every_finding_is_listed(tmp_path):
    """Found by a new user: a labelled batch from another distribution failed
    quality_not_degraded (ERROR), and mlops-demo printed Done and exited 0."""
    drifted = TEST_INCOMING + "&drift=1"  # labelled, from another distribution
    out = run_mlops_demo(
        tmp_path / "mlops", cwd=tmp_path, extra_env={"MLOPS_INCOMING_URI": drifted}
    )
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    listed = lines[lines.index("checks that did not pass (2):") + 1 : -1]
    assert [line.split(":")[0] for line in listed] == [
        f"  WARN house_prices/drift_report.drift_share_below_threshold [{PARTITION}]",
        f"  ERROR house_prices/drift_report.quality_not_degraded [{PARTITION}]",
    ]
    assert "batch rmse" in listed[1]
    assert lines[-1].startswith(
        f"FAILED CHECKS: house_prices_mlops_lifecycle for partition {PARTITION} ran, but ERROR "
        "house_prices/drift_report.quality_not_degraded"
    )


def test_mlops_demo_on_a_full_disk_says_why_last_and_exits_non_zero(tmp_path, small_disk):
    """Found by a drill: with the disk full, mlops-demo died at start with a raw traceback
    (SQLite's "disk I/O error" at its end)."""
    # Fill it, as a full disk is.
    with contextlib.suppress(OSError), open(small_disk.path / "filler", "wb") as filler:
        filler.write(b"\0" * (2 << 20))
    out = run_mlops_demo(
        tmp_path / "mlops",
        cwd=tmp_path,
        extra_env={"DAGSTER_HOME": str(small_disk.path / "dagster_home")},
    )
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("FAILED: mlops_lifecycle could not run: ")
    assert f"(the disk of {small_disk.path / 'dagster_home'} has 0 bytes free)" in last


def test_the_printed_ui_command_is_the_readmes_from_the_project_root(tmp_path):
    home = tmp_path / "dagster_home"
    venv = str(ROOT / ".venv" / "bin" / "python")
    readme = (ROOT / "README.md").read_text()
    assert "DAGSTER_HOME=$PWD/.mlops/dagster_home .venv/bin/dagster dev\n" in readme
    assert ui_command(home, cwd=ROOT, python=venv) == f"DAGSTER_HOME={home} .venv/bin/dagster dev"
    # From anywhere else, it goes to the project root first (workspace.yaml is there) ...
    assert (
        ui_command(home, cwd=tmp_path, python=venv)
        == f"cd {ROOT} && DAGSTER_HOME={home} .venv/bin/dagster dev"
    )
    # ... and a venv by another name, or outside the project, is the one that is named.
    elsewhere = "/opt/venvs/mlops/bin/python"
    assert (
        ui_command(home, cwd=ROOT, python=elsewhere)
        == f"DAGSTER_HOME={home} /opt/venvs/mlops/bin/dagster dev"
    )


UI_STATE = """
{
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } }
  runsOrError { ... on Runs { results { runId status tags { key value } } } }
  assetsOrError { ... on AssetConnection { nodes {
    key { path }
    definition { assetChecksOrError { ... on AssetChecks { checks { name } } } }
    assetMaterializations(limit: 1) { runId }
  } } }
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}
"""


def stop_and_wait(process: ServerProcess, timeout: float) -> list[str]:
    """SIGTERM the command's process group, as a terminal's Ctrl-C reaches all of it; the
    pids still alive after ``timeout`` (then killed)."""
    assert process.process is not None
    group = process.process.pid
    os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.process.poll()  # reap the group's leader (the shell), or it stays a zombie
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            process.stop()
            return []
        time.sleep(0.5)
    left = [p for p in os.listdir("/proc") if p.isdigit() and _group_of(p) == group]
    process.stop(grace_seconds=0)
    return left


def _group_of(pid: str) -> int | None:
    try:
        return os.getpgid(int(pid))
    except ProcessLookupError:
        return None


@pytest.mark.parametrize("cli", ["dagster", "dg", "module"])
def test_the_printed_ui_command_shows_the_demo_run(demo, cli, tmp_path):
    """What mlops-demo prints, pasted into a shell (the `dg` variant as the README offers it;
    `module`: what it prints when installed without a project root): the webserver, daemon and
    code location start, the UI lists every asset and check, the demo's run and its
    materialisations are there, the daemons are healthy, and SIGTERM stops all of it."""
    demo_cwd, out = demo
    assert out.returncode == 0, out.stderr[-5000:]
    [printed] = PRINTED_UI_COMMAND.findall(out.stderr)
    assert printed.startswith(f"cd {ROOT} && ")  # mlops-demo ran outside the project root
    location_name = "mlops_assets"  # workspace.yaml's, as the README says
    if cli == "dagster":
        command = printed
    elif cli == "dg":
        command = printed.replace("/dagster dev", "/dg dev")
    else:  # no workspace.yaml: the module, from a folder that is not the project
        [home] = (w.removeprefix("DAGSTER_HOME=") for w in split(printed) if "=" in w)
        module_form = ui_command(Path(home), root=demo_cwd)
        assert module_form.endswith(" dev -m mlops_assets.definitions"), module_form
        command = f"cd {quote(str(demo_cwd))} && {module_form}"
        location_name = "mlops_assets.definitions"
    port = free_port()
    log = tmp_path / f"{cli}-dev.log"
    ui = f"http://127.0.0.1:{port}"
    server = ServerProcess(
        f"{cli} dev",
        ["bash", "-c", f"{command} -h 127.0.0.1 -p {port}"],
        log,
        demo_env(demo_cwd / "mlops"),  # the shell mlops-demo ran in
    )
    server.start()
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"{ui}/server_info", timeout=5).status == 200,
            f"{cli} dev",
            180,
            log,
        )

        def loaded_and_healthy() -> dict[str, Any] | None:
            state = graphql(ui, UI_STATE)
            [location] = state["workspaceOrError"]["locationEntries"]
            daemons = state["instance"]["daemonHealth"]["allDaemonStatuses"]
            healthy = daemons and all(d["healthy"] for d in daemons if d["required"])
            return state if location["loadStatus"] == "LOADED" and healthy else None

        state = wait_for("the code location and the daemons", loaded_and_healthy, 180, [log])
        [location] = state["workspaceOrError"]["locationEntries"]
        assert location["name"] == location_name
        runs = state["runsOrError"]["results"]
        assert len(runs) == 2  # one per shipped model
        assert all(run["status"] == "SUCCESS" for run in runs)
        assert all({"key": "dagster/partition", "value": PARTITION} in r["tags"] for r in runs)
        nodes = state["assetsOrError"]["nodes"]
        listed = {
            "/".join(n["key"]["path"]): {
                c["name"] for c in n["definition"]["assetChecksOrError"]["checks"]
            }
            for n in nodes
        }
        assert listed == {
            f"{model}/{asset}": checks
            for model in MODELS
            for asset, checks in EXPECTED_CHECKS.items()
        }
        run_ids = {run["runId"] for run in runs}
        shown = {
            "/".join(n["key"]["path"])
            for n in nodes
            if n["assetMaterializations"] and n["assetMaterializations"][0]["runId"] in run_ids
        }
        assert shown == {f"{model}/{asset}" for model in MODELS for asset in LIFECYCLE_ASSETS}
    finally:
        left = stop_and_wait(server, timeout=60)
    assert not left, f"{cli} dev left processes {left} after SIGTERM:\n{log.read_text()[-3000:]}"
    text = log.read_text()
    # Loading the definitions in the code server and daemon says nothing to warn about; only
    # `dagster dev` itself is superseded (the README says so and offers `dg dev`).
    warnings = re.findall(r"\b(\w+Warning): ", text)
    assert warnings == (["SupersessionWarning"] if cli != "dg" else []), text[-3000:]
