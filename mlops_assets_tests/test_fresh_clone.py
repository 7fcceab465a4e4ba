"""The README's commands that start Dagster, from a fresh clone: no `mlops-demo` has run, so
the project's state is only what the clone brings, the instance's `dagster.yaml` under the
README's DAGSTER_HOME (.mlops/dagster_home). Dagster reads it before it loads any project
code, and `dagster dev` refuses a DAGSTER_HOME folder that does not exist."""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from mlops_assets.demo import DAGSTER_YAML
from mlops_assets.stack.process import ServerProcess, free_port, wait_until
from mlops_assets_tests.conftest import project_free_env
from mlops_assets_tests.dagster_services import ROOT, graphql, wait_for
from mlops_assets_tests.test_demo_cli import stop_and_wait

INSTANCE_CONFIG = ".mlops/dagster_home/dagster.yaml"
README_HOME = "DAGSTER_HOME=$PWD/.mlops/dagster_home"
# Dagster's words when DAGSTER_HOME has no dagster.yaml: it then runs on its defaults.
NO_CONFIG = "No dagster instance configuration file"


def clone_files() -> list[str]:
    """What a clone of this checkout holds: the files git tracks, and new ones it would
    track once added (the working tree's content of each, as a commit would take it)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: which files a clone has is unknown")
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted({name for name in listed.split("\0") if name and (ROOT / name).is_file()})


def test_a_clone_brings_the_instance_config_and_no_other_state() -> None:
    files = clone_files()
    assert INSTANCE_CONFIG in files
    assert [f for f in files if f.startswith(".mlops/")] == [INSTANCE_CONFIG]
    # The same instance as mlops-demo writes into a DAGSTER_HOME that has no config.
    assert (ROOT / INSTANCE_CONFIG).read_text() == DAGSTER_YAML


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A fresh clone of this checkout, with the venv the README makes as `.venv`."""
    root = tmp_path / "clone"
    for name in clone_files():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, root / name)
    (root / ".venv").symlink_to(Path(sys.executable).parents[1])
    assert [p for p in (root / ".mlops").rglob("*") if p.is_file()] in (
        [],
        [root / INSTANCE_CONFIG],
    )  # no state yet
    return root


def user_env(clone: Path) -> dict[str, str]:
    """A user's shell: no project setting, no DAGSTER_HOME; the clone's code is imported."""
    return {**project_free_env(), "PYTHONPATH": str(clone), "GIT_PYTHON_REFRESH": "quiet"}


@pytest.mark.slow
def test_dg_launch_as_the_readme_writes_it_runs_on_the_projects_instance(clone: Path) -> None:
    """approve_challenger with nothing trained: the run is on the instance the UI shows, with
    the project's run launcher and run monitoring, and fails for its own reason."""
    command = f"{README_HOME} .venv/bin/dg launch --job house_prices_approve_challenger"
    assert command in (ROOT / "README.md").read_text()
    out = subprocess.run(
        ["bash", "-c", command],
        cwd=clone,
        env=user_env(clone),
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = out.stdout + out.stderr
    assert out.returncode == 1, said[-5000:]
    assert "model 'house-price-regressor' has no challenger to approve" in said, said[-5000:]
    assert NO_CONFIG not in said
    assert "Stack Trace" not in said  # a refusal, said with its reason alone
    with DagsterInstance.from_config(str(clone / ".mlops" / "dagster_home")) as instance:
        [run] = instance.get_runs()
        assert (run.job_name, run.status) == (
            "house_prices_approve_challenger",
            DagsterRunStatus.FAILURE,
        )
        pointer = run.job_code_origin.repository_origin.code_pointer
        assert pointer.working_directory == str(clone)  # the clone's code ran
        assert type(instance.run_launcher).__name__ == "LocalRunLauncher"
        assert instance.run_monitoring_enabled


INSTANCE_STATE = """
{
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } }
  instance {
    runLauncher { name }
    daemonHealth { allDaemonStatuses { daemonType required } }
  }
}
"""


@pytest.mark.slow
@pytest.mark.parametrize("cli", ["dagster", "dg"])
def test_dagster_dev_as_the_readme_writes_it_starts_on_the_projects_instance(
    clone: Path, cli: str, tmp_path: Path
) -> None:
    """`dagster dev` as the README writes it, and `dg dev` "with the same DAGSTER_HOME": the
    webserver answers, the code location loads, and the instance is the project's (its run
    launcher, and the daemon's run monitoring that marks dead runs failed)."""
    readme = (ROOT / "README.md").read_text()
    assert f"{README_HOME} .venv/bin/dagster dev\n" in readme
    assert "`.venv/bin/dg dev` (with the same `DAGSTER_HOME`)" in readme
    port = free_port()
    log = tmp_path / f"{cli}-dev.log"
    ui = f"http://127.0.0.1:{port}"
    server = ServerProcess(
        f"{cli} dev",
        ["bash", "-c", f"cd {clone} && {README_HOME} .venv/bin/{cli} dev -h 127.0.0.1 -p {port}"],
        log,
        user_env(clone),
    )
    server.start()
    try:

        def answering_or_gone() -> bool:
            if not server.running():
                return True
            return bool(urllib.request.urlopen(f"{ui}/server_info", timeout=5).status == 200)

        wait_until(answering_or_gone, f"{cli} dev", 180, log)
        assert server.running(), f"{cli} dev exited:\n{log.read_text()[-3000:]}"

        def loaded() -> dict[str, Any] | None:
            state = graphql(ui, INSTANCE_STATE)
            [location] = state["workspaceOrError"]["locationEntries"]
            return state if location["loadStatus"] == "LOADED" else None

        state = wait_for("the code location", loaded, 180, [log])
    finally:
        left = stop_and_wait(server, timeout=60)
    assert not left, f"{cli} dev left processes {left} after SIGTERM:\n{log.read_text()[-3000:]}"
    assert state["instance"]["runLauncher"]["name"] == "LocalRunLauncher"
    daemons = state["instance"]["daemonHealth"]["allDaemonStatuses"]
    assert {"daemonType": "MONITORING", "required": True} in daemons
    assert NO_CONFIG not in log.read_text()
    assert (
        clone / ".mlops" / "dagster_home" / "history" / "runs.db"
    ).is_file()  # not a temporary one
