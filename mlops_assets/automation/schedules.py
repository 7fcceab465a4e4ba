"""Schedules: score each day's batch after the day ends, and retrain periodically."""

from dagster import (
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from mlops_assets.assets.scoring import daily_batches
from mlops_assets.automation.constants import SCHEDULE_STATUS, TRIGGER_TAG
from mlops_assets.automation.jobs import refresh_model, score_batch
from mlops_assets.settings import setting

TIMEZONE = setting("MLOPS_SCHEDULE_TIMEZONE")


@schedule(
    name="daily_scoring",
    job=score_batch,
    cron_schedule=setting("MLOPS_SCORING_CRON"),
    execution_timezone=TIMEZONE,
    default_status=SCHEDULE_STATUS,
    description="Scores the day that just ended (its incoming batch) and reports its drift.",
)
def daily_scoring(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
    days = daily_batches.get_partition_keys(current_time=context.scheduled_execution_time)
    if not days:
        return SkipReason("no complete day since MLOPS_PARTITIONS_START yet")
    day = days[-1]
    return RunRequest(run_key=day, partition_key=day, tags={TRIGGER_TAG: "daily_scoring"})


periodic_retrain = ScheduleDefinition(
    name="periodic_retrain",
    job=refresh_model,
    cron_schedule=setting("MLOPS_RETRAIN_CRON"),
    execution_timezone=TIMEZONE,
    default_status=SCHEDULE_STATUS,
    tags={TRIGGER_TAG: "periodic_retrain"},
    description="Retrains on the current labelled data: the champion gate decides whether the "
    "new model serves.",
)
