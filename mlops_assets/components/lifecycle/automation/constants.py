"""Names shared by the schedules and sensors, and the settings they are built from.

Nothing here reads a setting: each model's ModelLifecycle component gives its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DefaultScheduleStatus, DefaultSensorStatus

# Every run started by automation says why, so the UI (and the cooldown) can tell them apart.
TRIGGER_TAG = "mlops/trigger"
CAUSE_TAG = "mlops/cause"


# The model a run was started for (the drift policy's cooldown counts that model's runs).
MODEL_TAG = "mlops/model"


@dataclass(frozen=True)
class AutomationSettings:
    """When a model's schedules run and whether its sensors start running (the component's
    ``automation`` attributes); image_registry is the deployment's (MLOPS_IMAGE_REGISTRY)."""

    running: bool = False
    image_registry: str = ""
    interval_seconds: int = 30
    scoring_cron: str = "0 1 * * *"
    retrain_cron: str = "0 3 * * 0"
    timezone: str = "UTC"
    lookback_days: int = 7

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
