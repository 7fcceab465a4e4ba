"""The daily partitions of incoming batches, shared by the scoring assets, the schedule, the
sensors and the demo; built when asked (never on import), so MLOPS_PARTITIONS_START is read
then."""

from dagster import DailyPartitionsDefinition

from mlops_assets.settings import setting


def daily_partitions(start: str | None = None) -> DailyPartitionsDefinition:
    """One partition per day from ``start`` (MLOPS_PARTITIONS_START when not given)."""
    return DailyPartitionsDefinition(start_date=start or setting("MLOPS_PARTITIONS_START"))
