"""Names shared by the schedules and sensors, and the settings they are built from.

Nothing here reads a setting on import: :func:`AutomationSettings.from_env` reads them when
the definitions are built, so a test (or a code location reload) sees the current values.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DefaultScheduleStatus, DefaultSensorStatus

from mlops_assets.settings import setting

# Every run started by automation says why, so the UI (and the cooldown) can tell them apart.
TRIGGER_TAG = "mlops/trigger"
CAUSE_TAG = "mlops/cause"


@dataclass(frozen=True)
class AutomationSettings:
    running: bool = False
    image_registry: str = ""
    interval_seconds: int = 30
    scoring_cron: str = "0 1 * * *"
    retrain_cron: str = "0 3 * * 0"
    timezone: str = "UTC"
    lookback_days: int = 7

    @classmethod
    def from_env(cls) -> AutomationSettings:
        return cls(
            running=setting("MLOPS_AUTOMATION").strip().lower() == "running",
            image_registry=setting("MLOPS_IMAGE_REGISTRY"),
            interval_seconds=int(setting("MLOPS_SENSOR_INTERVAL_SECONDS")),
            scoring_cron=setting("MLOPS_SCORING_CRON"),
            retrain_cron=setting("MLOPS_RETRAIN_CRON"),
            timezone=setting("MLOPS_SCHEDULE_TIMEZONE"),
            lookback_days=int(setting("MLOPS_INCOMING_LOOKBACK_DAYS")),
        )

    @property
    def schedule_status(self) -> DefaultScheduleStatus:
        return DefaultScheduleStatus.RUNNING if self.running else DefaultScheduleStatus.STOPPED

    @property
    def sensor_status(self) -> DefaultSensorStatus:
        return DefaultSensorStatus.RUNNING if self.running else DefaultSensorStatus.STOPPED

    @property
    def image_sensor_status(self) -> DefaultSensorStatus:
        """Building images needs a builder and somewhere to push: the served image follows the
        champion automatically only where a registry is configured."""
        if self.running and self.image_registry:
            return DefaultSensorStatus.RUNNING
        return DefaultSensorStatus.STOPPED
