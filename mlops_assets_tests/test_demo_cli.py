"""The README's run command: the whole graph through the real dagster CLI in a subprocess."""

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from mlops_assets_tests.conftest import LIFECYCLE_ASSETS, PARTITION, run_mlops_demo
from mlops_assets_tests.test_definitions import EXPECTED_CHECKS

# Runs mlops-demo, and so the dagster CLI, in a subprocess.
pytestmark = pytest.mark.slow


def test_mlops_demo_materialises_the_graph_through_the_dagster_cli(tmp_path):
    out = run_mlops_demo(tmp_path / "mlops", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-5000:]
    dagster_home = tmp_path / "mlops" / "dagster_home"
    assert f"DAGSTER_HOME={dagster_home}" in out.stderr
    assert "dagster dev" in out.stderr

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
