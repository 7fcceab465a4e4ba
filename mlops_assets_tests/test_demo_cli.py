"""The README's run command, `mlops-demo`, in a subprocess: the whole graph in one run on the
local Dagster instance it sets up."""

import re

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from mlops_assets_tests.conftest import (
    LIFECYCLE_ASSETS,
    PARTITION,
    imported_before,
    run_mlops_demo,
)
from mlops_assets_tests.test_definitions import EXPECTED_CHECKS

# Runs mlops-demo in a subprocess.
pytestmark = pytest.mark.slow


def test_mlops_demo_materialises_the_graph(tmp_path):
    out = run_mlops_demo(
        tmp_path / "mlops", cwd=tmp_path, extra_env={"PYTHONPROFILEIMPORTTIME": "1"}
    )
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

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        [run] = instance.get_runs()
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
    assert materialized == LIFECYCLE_ASSETS
    assert sum(len(EXPECTED_CHECKS[asset]) for asset in LIFECYCLE_ASSETS) == len(checks)
    assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]


def test_mlops_demo_exits_non_zero_when_the_run_fails(tmp_path):
    missing = tmp_path / "no-such-source.csv"
    out = run_mlops_demo(
        tmp_path / "mlops", cwd=tmp_path, extra_env={"MLOPS_SOURCE_URI": str(missing)}
    )
    assert out.returncode == 1, out.stderr[-5000:]
    assert "FAILED: mlops_lifecycle" in out.stderr
    assert str(missing) in out.stderr
    with DagsterInstance.from_config(str(tmp_path / "mlops" / "dagster_home")) as instance:
        [run] = instance.get_runs()
        assert run.status == DagsterRunStatus.FAILURE
