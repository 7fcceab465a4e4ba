"""The README's run command: the whole graph through the real dagster CLI in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

from mlops_assets.settings import SETTINGS
from mlops_assets_tests.conftest import PARTITION, TEST_INCOMING, TEST_SOURCE
from mlops_assets_tests.test_definitions import EXPECTED_CHECKS

ROOT = Path(__file__).resolve().parents[1]


def test_mlops_demo_materialises_the_graph_through_the_dagster_cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {s.name for s in SETTINGS}}
    env.update(
        MLOPS_HOME=str(tmp_path / "mlops"),
        MLOPS_SOURCE_URI=TEST_SOURCE,
        MLOPS_INCOMING_URI=TEST_INCOMING,
        GIT_PYTHON_REFRESH="quiet",
    )
    env.pop("DAGSTER_HOME", None)
    demo = Path(sys.executable).parent / "mlops-demo"
    out = subprocess.run(
        [str(demo), "--partition", PARTITION],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
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
    assert materialized == set(EXPECTED_CHECKS)
    assert sum(len(names) for names in EXPECTED_CHECKS.values()) == len(checks)
    assert all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
