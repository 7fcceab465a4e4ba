"""Names and defaults shared by the schedules and sensors."""

from dagster import DefaultScheduleStatus, DefaultSensorStatus

from mlops_assets.settings import setting

# Every run started by automation says why, so the UI (and the cooldown) can tell them apart.
TRIGGER_TAG = "mlops/trigger"
CAUSE_TAG = "mlops/cause"

AUTOMATION_RUNNING = setting("MLOPS_AUTOMATION").strip().lower() == "running"
SCHEDULE_STATUS = (
    DefaultScheduleStatus.RUNNING if AUTOMATION_RUNNING else DefaultScheduleStatus.STOPPED
)
SENSOR_STATUS = DefaultSensorStatus.RUNNING if AUTOMATION_RUNNING else DefaultSensorStatus.STOPPED
# Building images needs a builder and somewhere to push: champion_image follows the champion
# automatically only where a registry is configured.
IMAGE_SENSOR_STATUS = (
    DefaultSensorStatus.RUNNING
    if AUTOMATION_RUNNING and setting("MLOPS_IMAGE_REGISTRY")
    else DefaultSensorStatus.STOPPED
)
SENSOR_INTERVAL_SECONDS = int(setting("MLOPS_SENSOR_INTERVAL_SECONDS"))
