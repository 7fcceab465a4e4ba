"""The jobs, schedules and sensors, built from the automation settings when the code location
loads (never on import), so a test or a reload sees the current values."""

from dagster import Definitions, definitions

from mlops_assets.defs.automation.alerts import build_alert_sensors
from mlops_assets.defs.automation.constants import AutomationSettings
from mlops_assets.defs.automation.jobs import build_jobs
from mlops_assets.defs.automation.schedules import build_schedules
from mlops_assets.defs.automation.sensors import build_sensors
from mlops_assets.partitions import daily_partitions


@definitions
def automation_defs() -> Definitions:
    settings = AutomationSettings.from_env()
    partitions = daily_partitions()
    jobs = build_jobs()
    return Definitions(
        jobs=jobs.all(),
        schedules=build_schedules(settings, jobs, partitions),
        sensors=[*build_sensors(settings, jobs, partitions), *build_alert_sensors(settings)],
    )
