"""The console logger of every job: Dagster's own, without the stack trace of an expected
rejection.

A source that breaks the dataset contract fails its blocking check, and a step that refuses
its input raises :class:`dagster.Failure` with the reason. Both are the pipeline doing its
job: the console shows the reason, not Dagster's or the project's frames. The event log keeps
the whole error (the UI shows it); any other error is printed with its stack as before.
"""

from __future__ import annotations

import logging

from dagster import DagsterEventType, InitLoggerContext, colored_console_logger, logger
from dagster._core.log_manager import LOG_RECORD_METADATA_ATTR

# The run config that selects the console logger above, at the level of Dagster's default
# one. approve_challenger and rollback_champion carry it as their default (a run's own config
# merges with it); mlops-demo passes it. An asset job's dict config would be expanded to every
# op of the job and break its subsets (a run of some of its assets), so those, run from
# `dg launch`, the UI or a sensor, keep Dagster's console logger.
JOB_CONFIG = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}

EXPECTED = frozenset({"DagsterAssetCheckFailedError", "Failure"})
FAILURES = (DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE)


def expected_reason(event: object) -> str | None:
    """The reason of a failure that is a decision, not a fault (a blocking check that failed,
    or a :class:`dagster.Failure` a step raised with its reason); None for anything else."""
    if getattr(event, "event_type", None) not in FAILURES:
        return None
    data = event.event_specific_data  # type: ignore[attr-defined]
    user = getattr(data, "user_failure_data", None)
    if user is not None and user.description:
        return str(user.description)
    error = getattr(data, "error", None)
    while error is not None:
        if error.cls_name in EXPECTED:
            # "dagster._core.errors.DagsterAssetCheckFailedError: 1 blocking ..." -> "1 blocking ..."
            return str(error.message.split(": ", 1)[-1])
        error = error.cause
    return None


class _WithoutStacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        meta = getattr(record, LOG_RECORD_METADATA_ATTR, None) or {}
        reason = expected_reason(meta.get("dagster_event"))
        if reason is not None:
            head = record.getMessage().split("\n\n", 1)[0]
            record.msg = f"{head}\n\n{reason.strip()}"
            record.args = ()
        return True


@logger(
    colored_console_logger.config_schema,
    description="Dagster's colored console logger; an expected rejection (a failed blocking "
    "check, a step's Failure) is printed without its stack trace.",
)
def console_logger(init_context: InitLoggerContext) -> logging.Logger:
    log = colored_console_logger.logger_fn(init_context)
    for handler in log.handlers:
        handler.addFilter(_WithoutStacks())
    return log
