"""The daily partitions of incoming batches, shared by the scoring assets, the schedule, the
sensors and the demo; built when asked (never on import), so MLOPS_PARTITIONS_START is read
then."""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import DailyPartitionsDefinition, PreviewWarning

from mlops_assets.settings import setting


def daily_partitions(start: str | None = None) -> DailyPartitionsDefinition:
    """One partition per day from ``start`` (MLOPS_PARTITIONS_START when not given)."""
    return DailyPartitionsDefinition(start_date=start or setting("MLOPS_PARTITIONS_START"))


@contextmanager
def partitioned_checks() -> Iterator[None]:
    """Where the daily assets' checks are declared on the same partitions: Dagster's preview
    warning for that, and only it, is silenced. Partitioned checks are what makes each day's
    checks judge that day, so the preview is accepted knowingly."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="Specifying a partitions_def on an AssetCheckSpec is currently in preview",
            category=PreviewWarning,
        )
        yield
