"""Schedules: which day is scored, and what retraining runs."""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import RunRequest, SkipReason, build_schedule_context

from mlops_assets.automation.constants import TRIGGER_TAG
from mlops_assets.automation.schedules import daily_scoring, periodic_retrain


def test_daily_scoring_scores_the_day_that_just_ended() -> None:
    context = build_schedule_context(scheduled_execution_time=datetime(2026, 11, 21, 1, tzinfo=UTC))
    request = daily_scoring(context)
    assert isinstance(request, RunRequest)
    assert request.partition_key == "2026-11-20"
    assert request.run_key == "2026-11-20"  # a re-run tick scores nothing twice
    assert request.tags[TRIGGER_TAG] == "daily_scoring"
    assert daily_scoring.job_name == "score_batch"
    assert daily_scoring.cron_schedule == "0 1 * * *"
    assert daily_scoring.execution_timezone == "UTC"


def test_daily_scoring_before_the_first_partition_skips() -> None:
    context = build_schedule_context(scheduled_execution_time=datetime(2026, 10, 1, 1, tzinfo=UTC))
    result = daily_scoring(context)
    assert isinstance(result, SkipReason)
    assert "MLOPS_PARTITIONS_START" in (result.skip_message or "")


def test_periodic_retrain_runs_the_model_chain_weekly() -> None:
    assert periodic_retrain.job_name == "refresh_model"
    assert periodic_retrain.cron_schedule == "0 3 * * 0"
    assert periodic_retrain.tags[TRIGGER_TAG] == "periodic_retrain"
