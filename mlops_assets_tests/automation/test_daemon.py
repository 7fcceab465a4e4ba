"""The loop a team leaves running, with the real `dagster-daemon` in a subprocess.

Files are dropped where a team's data lands; the daemon's sensors launch the runs, the runs
materialise the assets, a drifted batch fails its drift check, exactly one alert per failed
evaluation reaches a real HTTP receiver, and the drift policy starts exactly one retraining
run, also after the daemon is restarted.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets_tests.dagster_services import (
    ARTIFACTS,
    BIN,
    ROOT,
    daemon,
    project_env,
    wait_for,
)
from mlops_assets_tests.receivers import WebhookReceiver

pytestmark = pytest.mark.slow

INTERVAL = 3


def runs(instance: DagsterInstance, trigger: str) -> list[Any]:
    return list(instance.get_runs(RunsFilter(tags={"mlops/trigger": trigger})))


def finished(instance: DagsterInstance, trigger: str) -> Any:
    """The one run this trigger started, once it has finished."""
    found = runs(instance, trigger)
    if found and found[0].status in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE):
        return found[0]
    return None


def drop(path: Path, frame: Any) -> float:
    """Write under a hidden name, then rename: watchers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(to_csv_bytes(frame))
    partial.rename(path)
    return time.time()


def sensor_ticks_after(instance: DagsterInstance, name: str, after: float) -> int:
    from mlops_assets_tests.conftest import job_name

    states = [s for s in instance.all_instigator_state() if s.name == job_name(name)]
    if not states:
        return 0
    ticks = instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, limit=50)
    return sum(1 for tick in ticks if tick.timestamp > after)


def failed_evaluations(instance: DagsterInstance) -> list[tuple[str, str, str, str]]:
    from mlops_assets.components.lifecycle.automation.check_history import (
        CheckCursor,
        failed_checks,
    )
    from mlops_assets.definitions import build_definitions

    defs = build_definitions()

    keys = list(defs.resolve_asset_graph().asset_check_keys)
    failures, _ = failed_checks(instance, keys, CheckCursor(floor=0))
    return [(f.severity, f.asset, f.check, f.partition) for f in failures]


def test_sensors_launch_the_loop_and_alert_once_across_a_daemon_restart(tmp_path: Path) -> None:
    from mlops_assets_tests.conftest import job_name, key, scope_of, step

    labelled, incoming = tmp_path / "labelled", tmp_path / "incoming"
    dagster_home, logs = tmp_path / "dagster_home", tmp_path / "logs"
    with WebhookReceiver() as receiver:
        env = project_env(
            tmp_path / "mlops",
            dagster_home,
            MLOPS_SOURCE_URI=str(labelled),
            MLOPS_INCOMING_URI=str(incoming / "{date}.csv"),
            MLOPS_AUTOMATION="running",
            MLOPS_SENSOR_INTERVAL_SECONDS=str(INTERVAL),
            # No cron fires while the test runs.
            MLOPS_SCORING_CRON="0 0 1 1 *",
            MLOPS_RETRAIN_CRON="0 0 1 1 *",
            MLOPS_DRIFT_POLICY="retrain",
            MLOPS_ALERT_CHANNELS="log,webhook",
            MLOPS_ALERT_WEBHOOK_URL=receiver.url,
            MLOPS_DAGSTER_UI_URL="http://dagster.test:3000",
        )
        # Create the instance's databases before any other process opens them.
        instance = DagsterInstance.from_config(str(dagster_home))
        first_daemon = daemon(env, logs / "daemon-1.log")
        first_daemon.start()
        all_logs = [logs / "daemon-1.log", logs / "daemon-2.log"]
        try:
            # The daemon has loaded the code location once the alert sensor has ticked.
            wait_for(
                "the first asset_check_alerts tick",
                lambda: sensor_ticks_after(instance, "asset_check_alerts", 0),
                180,
                all_logs,
            )

            # 1. New labelled data -> refresh_model -> a champion.
            dropped = drop(labelled / "houses-2026-11.csv", generate_house_prices(1500, seed=42))
            training = wait_for(
                "a run for the labelled data",
                lambda: runs(instance, "new_labelled_data"),
                120,
                all_logs,
                interval=0.2,
            )[0]
            record = instance.get_run_record_by_id(training.run_id)
            assert record is not None
            latency = record.create_timestamp.timestamp() - dropped
            trained = wait_for(
                "the labelled-data run to finish",
                lambda: finished(instance, "new_labelled_data"),
                420,
                all_logs,
            )
            assert trained.status == DagsterRunStatus.SUCCESS, trained.run_id
            assert trained.job_name == job_name("refresh_model")
            for asset in ("raw_data", "versioned_dataset", "trained_model", "registered_model"):
                assert instance.get_latest_materialization_event(key(asset)) is not None

            # 1b. A run started from a shell, as the README starts approve_challenger, that
            # fails: it has no code-location origin, and it still alerts, with the cause.
            launched = subprocess.run(
                [str(BIN / "dg"), "launch", "--job", job_name("approve_challenger"), "--config-json",
                 json.dumps({"ops": {step("promote_to_champion"): {"config": {"version": "99"}}}})],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert launched.returncode != 0, launched.stderr[-3000:]
            wait_for(
                "the alert for the failed approve_challenger run",
                lambda: [
                    p
                    for p in receiver.delivered()
                    if "Run of house_prices_approve_challenger" in p["text"]
                ],
                120,
                all_logs,
            )

            # 2. A drifted, unlabelled batch lands for the latest day -> score_batch.
            day = scope_of({}).partitions.get_partition_keys()[-1]
            drifted = generate_house_prices(400, seed=7, drift=True).drop(columns=["price"])
            drop(incoming / f"{day}.csv", drifted)
            scored = wait_for(
                "the batch run to finish",
                lambda: finished(instance, "incoming_batches"),
                420,
                all_logs,
            )
            assert scored.status == DagsterRunStatus.SUCCESS, scored.run_id
            assert scored.job_name == job_name("score_batch")
            assert scored.tags["dagster/partition"] == day
            for asset in ("predictions", "drift_report"):
                event = instance.get_latest_materialization_event(key(asset))
                assert event is not None
                assert event.dagster_event.partition == day

            failed = failed_evaluations(instance)
            assert (
                "WARN",
                "house_prices/drift_report",
                "drift_share_below_threshold",
                day,
            ) in failed

            # 3. One alert per failed evaluation, and one retraining run.
            wait_for(
                "alerts for every failed evaluation",
                lambda: (
                    len([p for p in receiver.delivered() if "Check " in p["text"]]) >= len(failed)
                ),
                120,
                all_logs,
            )
            retrain = wait_for(
                "the drift policy's retraining run to finish",
                lambda: finished(instance, "drift_policy"),
                420,
                all_logs,
            )
            assert retrain.job_name == job_name("refresh_model")
            assert retrain.status == DagsterRunStatus.SUCCESS, retrain.run_id
            assert "drift_report.drift_share_below_threshold" in retrain.tags["mlops/cause"]
        finally:
            first_daemon.stop()

        # 4. Restart the daemon: its cursors live in the instance, so nothing repeats.
        restarted_at = time.time()
        second_daemon = daemon(env, logs / "daemon-2.log")
        second_daemon.start()
        try:
            for sensor in ("asset_check_alerts", "drift_policy", "incoming_batches"):
                wait_for(
                    f"two {sensor} ticks after the restart",
                    lambda s=sensor: sensor_ticks_after(instance, s, restarted_at) >= 2,
                    180,
                    all_logs,
                )
            failed = failed_evaluations(instance)
            payloads = receiver.delivered()
            started = {
                t: len(runs(instance, t))
                for t in ("new_labelled_data", "incoming_batches", "drift_policy")
            }
        finally:
            second_daemon.stop()
            instance.dispose()

    check_alerts = [p for p in payloads if "Check " in p["text"]]
    alerted = sorted(p["text"].split(":")[0] for p in check_alerts)
    expected = sorted(
        f"[{severity}] Check {check} failed on {asset}" + (f" [{partition}]" if partition else "")
        for severity, asset, check, partition in failed
    )
    assert alerted == expected, "one alert per failed evaluation, none twice"
    [run_alert] = [p for p in payloads if "Run of " in p["text"]]  # one, across the restart
    assert run_alert["text"].startswith("[ERROR] Run of house_prices_approve_challenger failed: ")
    assert "has no version '99' to approve" in run_alert["text"], run_alert["text"]
    assert "Error occurred while executing" not in run_alert["text"]
    assert "a shell (dg launch, mlops-demo)" in json.dumps(run_alert)
    drift_alert = next(p for p in check_alerts if "drift_share_below_threshold" in p["text"])
    assert "drifted columns" in drift_alert["text"]
    assert drift_alert["blocks"][-1]["elements"][0]["text"].startswith(
        "<http://dagster.test:3000/runs/"
    )
    assert started == {"new_labelled_data": 1, "incoming_batches": 1, "drift_policy": 1}

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "sensor_latency.json").write_text(
        json.dumps({"dropped_file_to_run_created_seconds": latency, "interval": INTERVAL})
    )
    print(
        f"\nnew_labelled_data: dropped file -> run created in {latency:.1f} s "
        f"(sensor interval {INTERVAL} s)"
    )
