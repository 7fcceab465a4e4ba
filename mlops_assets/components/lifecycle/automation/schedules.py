"""Schedules: score each day's batch and collect its served traffic after the day ends, and
retrain periodically."""

from __future__ import annotations

from dagster import (
    DailyPartitionsDefinition,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from mlops_assets.components.lifecycle.automation.constants import TRIGGER_TAG
from mlops_assets.components.lifecycle.automation.jobs import AssetJobs
from mlops_assets.components.lifecycle.scope import ModelScope


def the_day_that_ended(
    context: ScheduleEvaluationContext, partitions: DailyPartitionsDefinition, trigger: str
) -> RunRequest | SkipReason:
    """A run of the last complete day, keyed by the day so a re-run tick starts nothing twice."""
    days = partitions.get_partition_keys(current_time=context.scheduled_execution_time)
    if not days:
        first = partitions.start.strftime("%Y-%m-%d")
        return SkipReason(f"no complete day since the first partition, {first}, yet")
    day = days[-1]
    return RunRequest(run_key=day, partition_key=day, tags={TRIGGER_TAG: trigger})


def build_schedules(model: ModelScope, jobs: AssetJobs) -> list[ScheduleDefinition]:
    """``model``'s schedules, named by it (house_prices_daily_scoring)."""
    settings = model.automation
    partitions = model.partitions

    def scoring_tick(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        return the_day_that_ended(context, partitions, "daily_scoring")

    def traffic_tick(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
        return the_day_that_ended(context, partitions, "daily_traffic")

    daily_scoring = schedule(
        name=model.job_name("daily_scoring"),
        job=jobs.score_batch,
        cron_schedule=settings.scoring_cron,
        execution_timezone=settings.timezone,
        default_status=settings.schedule_status,
        description="Scores the day that just ended (its incoming batch) and reports its drift.",
    )(scoring_tick)
    periodic_retrain = ScheduleDefinition(
        name=model.job_name("periodic_retrain"),
        job=jobs.refresh_model,
        cron_schedule=settings.retrain_cron,
        execution_timezone=settings.timezone,
        default_status=settings.schedule_status,
        tags={TRIGGER_TAG: "periodic_retrain"},
        description="Retrains on the current labelled data: the champion gate decides whether "
        "the new model serves.",
    )
    daily_traffic = schedule(
        name=model.job_name("daily_traffic"),
        job=jobs.collect_traffic,
        cron_schedule=settings.scoring_cron,
        execution_timezone=settings.timezone,
        default_status=settings.schedule_status,
        description="Collects the served model's traffic log of the day that just ended.",
    )(traffic_tick)
    return [daily_scoring, periodic_retrain, daily_traffic]
