"""The daily partitions of incoming batches, shared by the scoring assets, their jobs, the
schedule, the sensors and the demo."""

from dagster import DailyPartitionsDefinition

from mlops_assets.settings import setting


def daily_partitions(start: str | None = None) -> DailyPartitionsDefinition:
    """One partition per day from ``start`` (MLOPS_PARTITIONS_START when not given)."""
    return DailyPartitionsDefinition(start_date=start or setting("MLOPS_PARTITIONS_START"))


# Assets take their partitions when they are defined, so this one is built on import.
daily_batches = daily_partitions()
