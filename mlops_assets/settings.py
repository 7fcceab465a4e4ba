"""The deployment's settings: environment variables with their embedded defaults.

A setting that configures a resource is declared once, on the resource's field, with
:func:`mlops_assets.lib.env_settings.env_field` (name, default, description);
``definitions.build_resources`` reads it from there and pydantic coerces the text. The
settings below configure no resource (paths whose default depends on ``MLOPS_HOME``, the
executor and pod sizes). Defaults need no server.

A model's settings are its ModelLifecycle attributes, not variables here; the house_prices
model's defs.yaml templates its attributes from the ``MLOPS_*`` variables that configured the
project's one model before (:mod:`mlops_assets.variables` lists both kinds).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from mlops_assets.lib.env_settings import Setting, env_fields

HOME = Setting(
    "MLOPS_HOME",
    ".mlops",
    "Folder for all local state (object store, MLflow database and artifacts, IO manager).",
)
# The deployment's settings that configure no resource field directly.
DEPLOYMENT_SETTINGS: tuple[Setting, ...] = (
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
        "MLOPS_SENSOR_INTERVAL_SECONDS",
        "30",
        "Seconds between two evaluations of each alert sensor (asset_check_alerts, "
        "run_failure_alerts); the house_prices model's sensors too (its automation.interval_seconds).",
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

    return (
        S3Config,
        DatasetSourceResource,
        MlflowResource,
        ImageBuilderResource,
        ModelRolloutResource,
        NotifierResource,
    )


def deployment_settings() -> tuple[Setting, ...]:
    resource_settings = [s for cls in resource_classes() for s in env_fields(cls).values()]
    return (*DEPLOYMENT_SETTINGS, *resource_settings)


@cache
def _by_name() -> dict[str, Setting]:
    return {s.name: s for s in deployment_settings()}


def setting(name: str) -> str:
    """The deployment setting ``name``'s value now (a model's settings are its attributes)."""
    entry = _by_name().get(name)
    if entry is None:
        raise KeyError(f"unknown setting {name}")
    return entry.value()


def home() -> Path:
    return Path(HOME.value()).expanduser().resolve()
