"""Schedules: which day is scored, and what retraining runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    SkipReason,
    build_schedule_context,
)

from mlops_assets.components.lifecycle.automation.constants import TRIGGER_TAG
from mlops_assets.components.lifecycle.automation.jobs import build_jobs
from mlops_assets.components.lifecycle.automation.schedules import build_schedules
from mlops_assets_tests.conftest import job_name, key, scope_of

HOUSE = scope_of({})
daily_scoring, periodic_retrain, daily_traffic = build_schedules(HOUSE, build_jobs(HOUSE))


def test_daily_scoring_scores_the_day_that_just_ended() -> None:
    context = build_schedule_context(scheduled_execution_time=datetime(2026, 11, 21, 1, tzinfo=UTC))
    request = daily_scoring(context)
    assert isinstance(request, RunRequest)
    assert request.partition_key == "2026-11-20"
    assert request.run_key == "2026-11-20"  # a re-run tick scores nothing twice
    assert request.tags[TRIGGER_TAG] == "daily_scoring"
    assert daily_scoring.job_name == job_name("score_batch")
    assert daily_scoring.cron_schedule == "0 1 * * *"
    assert daily_scoring.execution_timezone == "UTC"


def test_daily_scoring_before_the_first_partition_skips() -> None:
    context = build_schedule_context(scheduled_execution_time=datetime(2026, 10, 1, 1, tzinfo=UTC))
    result = daily_scoring(context)
    assert isinstance(result, SkipReason)
    assert "since the first partition, 2026-11-01, yet" in (result.skip_message or "")


def test_periodic_retrain_runs_the_model_chain_weekly() -> None:
    assert periodic_retrain.job_name == job_name("refresh_model")
    assert periodic_retrain.cron_schedule == "0 3 * * 0"
    assert periodic_retrain.tags[TRIGGER_TAG] == "periodic_retrain"


def test_automation_settings_are_read_when_definitions_are_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing is frozen at import: a code location built after a change sees the change."""
    from mlops_assets.definitions import build_definitions

    monkeypatch.setenv("MLOPS_SCORING_CRON", "30 2 * * *")
    monkeypatch.setenv("MLOPS_RETRAIN_CRON", "0 4 1 * *")
    monkeypatch.setenv("MLOPS_SCHEDULE_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("MLOPS_AUTOMATION", "running")
    monkeypatch.setenv("MLOPS_SENSOR_INTERVAL_SECONDS", "7")
    monkeypatch.setenv("MLOPS_IMAGE_REGISTRY", "")
    monkeypatch.setenv("MLOPS_PARTITIONS_START", "2026-11-10")
    defs = build_definitions()
    for name in ("predictions", "drift_report"):
        partitions = defs.resolve_assets_def(key(name)).partitions_def
        assert partitions is not None
        assert partitions.get_first_partition_key() == "2026-11-10"
    scoring = defs.resolve_schedule_def(job_name("daily_scoring"))
    retrain = defs.resolve_schedule_def(job_name("periodic_retrain"))
    assert (scoring.cron_schedule, retrain.cron_schedule) == ("30 2 * * *", "0 4 1 * *")
    assert scoring.execution_timezone == retrain.execution_timezone == "Europe/Berlin"
    assert scoring.default_status == DefaultScheduleStatus.RUNNING
    labelled = defs.resolve_sensor_def(job_name("new_labelled_data"))
    assert labelled.minimum_interval_seconds == 7
    assert labelled.default_status == DefaultSensorStatus.RUNNING
    # Without a registry the image sensor stays stopped even when automation runs.
    assert (
        defs.resolve_sensor_def(job_name("champion_image")).default_status
        == DefaultSensorStatus.STOPPED
    )

    monkeypatch.setenv("MLOPS_AUTOMATION", "stopped")
    stopped = build_definitions()
    assert stopped.resolve_schedule_def(job_name("daily_scoring")).default_status == (
        DefaultScheduleStatus.STOPPED
    )
    assert (
        stopped.resolve_sensor_def(job_name("drift_policy")).default_status
        == DefaultSensorStatus.STOPPED
    )
    assert stopped.resolve_sensor_def(job_name("asset_check_alerts")).default_status == (
        DefaultSensorStatus.RUNNING
    )


def test_pod_sizes_are_read_when_definitions_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run pods take their size from the job's tags, step pods (k8s_job_executor) from the
    executor config: both follow the MLOPS_K8S_* settings of the moment, training larger."""
    import json

    from mlops_assets.definitions import build_definitions, k8s_executor_config

    monkeypatch.setenv("MLOPS_K8S_TRAINING_CPU", "3")
    monkeypatch.setenv("MLOPS_K8S_TRAINING_MEMORY_LIMIT", "7Gi")
    monkeypatch.setenv("MLOPS_K8S_MEMORY", "512Mi")
    defs = build_definitions()
    refresh = json.loads(defs.resolve_job_def(job_name("refresh_model")).tags["dagster-k8s/config"])
    scoring = json.loads(defs.resolve_job_def(job_name("score_batch")).tags["dagster-k8s/config"])
    assert refresh["container_config"]["resources"]["requests"]["cpu"] == "3"
    assert refresh["container_config"]["resources"]["limits"]["memory"] == "7Gi"
    assert scoring["container_config"]["resources"]["requests"]["memory"] == "512Mi"
    steps = k8s_executor_config()
    assert steps == {"step_k8s_config": scoring}
    # The training step pod (k8s_job_executor reads a step's own tags).
    training = defs.resolve_assets_def(AssetKey(["house_prices", "trained_model"])).op.tags
    assert json.loads(training["dagster-k8s/config"]) == refresh


def test_daily_traffic_collects_the_day_that_just_ended() -> None:
    context = build_schedule_context(scheduled_execution_time=datetime(2026, 11, 21, 1, tzinfo=UTC))
    request = daily_traffic(context)
    assert isinstance(request, RunRequest)
    assert (request.partition_key, request.run_key) == ("2026-11-20", "2026-11-20")
    assert request.tags[TRIGGER_TAG] == "daily_traffic"
    assert daily_traffic.job_name == job_name("collect_traffic")
