"""Every environment variable the project reads, with its embedded default.

A setting that configures a resource is declared once, on the resource's field, with
:func:`mlops_assets.lib.env_settings.env_field` (name, default, description): ``definitions.build_resources`` reads it from
there and pydantic coerces the text. The settings below configure no resource (paths whose
default depends on ``MLOPS_HOME``, automation, executor and pod sizes). :func:`all_settings`
lists both; ``python -m mlops_assets.settings`` prints the README's table from it, and a test
holds the README to it. Defaults need no server.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

from mlops_assets.lib.env_settings import Setting, env_fields

HOME = Setting(
    "MLOPS_HOME",
    ".mlops",
    "Folder for all local state (object store, MLflow database and artifacts, IO manager).",
)
# Settings that configure no resource field directly.
OTHER_SETTINGS: tuple[Setting, ...] = (
    HOME,
    Setting(
        "MLOPS_OBJECT_STORE_ROOT",
        "",
        "Object store: a folder, or s3://bucket/prefix; empty means $MLOPS_HOME/store.",
    ),
    Setting(
        "MLFLOW_TRACKING_URI",
        "",
        "MLflow tracking server or database; empty means sqlite:///$MLOPS_HOME/mlflow.db.",
    ),
    Setting(
        "MLOPS_DEMO_FAIL_ON_WARN",
        "false",
        "true: mlops-demo exits 2 when a check fails with WARN severity too (as --fail-on-warn).",
    ),
    Setting(
        "MLOPS_PARTITIONS_START",
        "2026-11-01",
        "First daily partition of predictions.",
    ),
    Setting(
        "MLOPS_AUTOMATION",
        "stopped",
        "running: schedules and the sensors that launch runs start with the daemon; stopped: turn them on in the UI. The alert sensors always start running.",
    ),
    Setting(
        "MLOPS_SENSOR_INTERVAL_SECONDS",
        "30",
        "Seconds between two evaluations of each sensor.",
    ),
    Setting(
        "MLOPS_SCORING_CRON",
        "0 1 * * *",
        "When daily_scoring scores the day that just ended (predictions, drift_report).",
    ),
    Setting(
        "MLOPS_RETRAIN_CRON",
        "0 3 * * 0",
        "When periodic_retrain runs refresh_model (snapshot, version, train, register).",
    ),
    Setting(
        "MLOPS_SCHEDULE_TIMEZONE",
        "UTC",
        "Time zone of both crons.",
    ),
    Setting(
        "MLOPS_INCOMING_LOOKBACK_DAYS",
        "7",
        "How many of the latest daily partitions the incoming_batches sensor watches.",
    ),
    Setting(
        "MLOPS_EXECUTOR",
        "in_process",
        "in_process: every step of a run in the run's own process (one pod per run on a cluster); multiprocess: each step in a process of its own, independent steps in parallel; k8s_job: each step in its own Kubernetes Job (k8s_job_executor, on a cluster only).",
    ),
    Setting(
        "MLOPS_K8S_CPU",
        "500m",
        "CPU request of run and step pods on Kubernetes.",
    ),
    Setting(
        "MLOPS_K8S_MEMORY",
        "1Gi",
        "Memory request of run and step pods on Kubernetes.",
    ),
    Setting(
        "MLOPS_K8S_MEMORY_LIMIT",
        "2Gi",
        "Memory limit of run and step pods on Kubernetes.",
    ),
    Setting(
        "MLOPS_K8S_TRAINING_CPU",
        "2",
        "CPU request of pods that train (Kubernetes).",
    ),
    Setting(
        "MLOPS_K8S_TRAINING_MEMORY",
        "4Gi",
        "Memory request of pods that train.",
    ),
    Setting(
        "MLOPS_K8S_TRAINING_MEMORY_LIMIT",
        "6Gi",
        "Memory limit of pods that train.",
    ),
)


def resource_classes() -> tuple[type, ...]:
    """The resources whose fields are settings (imported here, not on import of this module)."""
    from mlops_assets.resources.dataset_source import DatasetSourceResource
    from mlops_assets.resources.image_builder import ImageBuilderResource
    from mlops_assets.resources.mlflow_registry import MlflowResource
    from mlops_assets.resources.model_rollout import ModelRolloutResource
    from mlops_assets.resources.notifier import NotifierResource
    from mlops_assets.resources.object_store import S3Config
    from mlops_assets.resources.policy import LifecyclePolicy
    from mlops_assets.resources.training import TrainingResource

    return (
        S3Config,
        DatasetSourceResource,
        MlflowResource,
        TrainingResource,
        LifecyclePolicy,
        ImageBuilderResource,
        ModelRolloutResource,
        NotifierResource,
    )


@cache
def all_settings() -> tuple[Setting, ...]:
    """Derived once per process: the fields do not change (values are read by Setting.value)."""
    resource_settings = [s for cls in resource_classes() for s in env_fields(cls).values()]
    return (*OTHER_SETTINGS, *resource_settings)


def setting(name: str) -> str:
    for entry in all_settings():
        if entry.name == name:
            return entry.value()
    raise KeyError(f"unknown setting {name}")


def home() -> Path:
    return Path(HOME.value()).expanduser().resolve()


def markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| variable | default | what it sets |", "|---|---|---|"]
    for entry in all_settings():
        default = f"`{entry.default}`" if entry.default else "(empty)"
        rows.append(f"| `{entry.name}` | {default} | {entry.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
