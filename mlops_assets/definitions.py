"""The code location: every asset, check, job and resource, configured from env vars."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import (
    Definitions,
    EnvVar,
    ExecutorDefinition,
    FilesystemIOManager,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)

from mlops_assets.assets import data, deployment, model, scoring, serving
from mlops_assets.assets.pod_resources import standard_pod, training_pod
from mlops_assets.automation.alerts import build_alert_sensors
from mlops_assets.automation.constants import AutomationSettings
from mlops_assets.automation.jobs import build_jobs
from mlops_assets.automation.schedules import build_schedules
from mlops_assets.automation.sensors import build_sensors
from mlops_assets.resources.dataset_source import DatasetSourceResource
from mlops_assets.resources.image_builder import ImageBuilderResource
from mlops_assets.resources.mlflow_registry import MlflowResource
from mlops_assets.resources.model_rollout import ModelRolloutResource
from mlops_assets.resources.notifier import NotifierResource
from mlops_assets.resources.object_store import ObjectStoreResource, S3Config
from mlops_assets.resources.policy import LifecyclePolicy
from mlops_assets.settings import flag, home, setting


def secret(name: str) -> EnvVar | str:
    """An env var Dagster resolves at run time and shows by name only, never by value."""
    return EnvVar(name) if os.environ.get(name) else ""


def io_manager(root: Path, s3: S3Config) -> object:
    """Where asset values (small handles) live between runs: beside the object store.

    With an s3:// store they go to S3 too, because on Kubernetes every run (and with
    k8s_job_executor every step) is a pod with a filesystem of its own.
    """
    store = setting("MLOPS_OBJECT_STORE_ROOT")
    if not store.startswith("s3://"):
        return FilesystemIOManager(base_dir=str(root / "io"))
    from dagster_aws.s3 import S3PickleIOManager

    bucket, _, prefix = store.removeprefix("s3://").partition("/")
    return S3PickleIOManager(
        s3_resource=s3.dagster_aws_resource(),
        s3_bucket=bucket,
        s3_prefix=f"{prefix.strip('/')}/dagster-io".lstrip("/"),
    )


def k8s_executor_config() -> dict[str, object]:
    """Step pods of the standard size; the training step (trained_model) gets the training
    size. Read when the definitions are built, so the MLOPS_K8S_* settings apply."""
    return {
        "step_k8s_config": standard_pod(),
        "per_step_k8s_config": {"trained_model": training_pod()},
    }


def executor() -> ExecutorDefinition | None:
    """MLOPS_EXECUTOR=k8s_job: every step in its own Kubernetes Job (k8s_executor_config);
    otherwise Dagster's default."""
    choice = setting("MLOPS_EXECUTOR")
    if choice == "multiprocess":
        return None
    if choice != "k8s_job":
        raise ValueError(f"MLOPS_EXECUTOR must be multiprocess or k8s_job, not '{choice}'")
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(k8s_executor_config())


def build_resources() -> dict[str, object]:
    root = home()
    # One S3 configuration for the object store, s3:// sources and the IO manager.
    s3 = S3Config(
        endpoint_url=setting("MLOPS_S3_ENDPOINT_URL"), region_name=setting("MLOPS_S3_REGION")
    )
    tracking_uri = setting("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    return {
        "io_manager": io_manager(root, s3),
        "object_store": ObjectStoreResource(
            root=setting("MLOPS_OBJECT_STORE_ROOT") or str(root / "store"),
            s3=s3,
        ),
        "dataset_source": DatasetSourceResource(
            spec_path=setting("MLOPS_DATASET_SPEC"),
            source_uri=setting("MLOPS_SOURCE_URI"),
            incoming_uri=setting("MLOPS_INCOMING_URI"),
            s3=s3,
        ),
        "mlflow": MlflowResource(
            tracking_uri=tracking_uri,
            registry_uri=setting("MLFLOW_REGISTRY_URI"),
            artifact_root=str(root / "mlartifacts") if tracking_uri.startswith("sqlite") else "",
            experiment_name=setting("MLOPS_EXPERIMENT"),
            model_name=setting("MLOPS_MODEL_NAME"),
        ),
        "image_builder": ImageBuilderResource(
            builder=setting("MLOPS_IMAGE_BUILDER"),
            registry=setting("MLOPS_IMAGE_REGISTRY"),
            registry_insecure=flag("MLOPS_IMAGE_REGISTRY_INSECURE"),
            base_image=setting("MLOPS_IMAGE_BASE"),
            build_ca_bundle=setting("MLOPS_IMAGE_BUILD_CA_BUNDLE"),
            container_run_args=setting("MLOPS_CONTAINER_RUN_ARGS"),
            kaniko_image=setting("MLOPS_KANIKO_IMAGE"),
            kaniko_namespace=setting("MLOPS_KANIKO_NAMESPACE"),
            kaniko_service_account=setting("MLOPS_KANIKO_SERVICE_ACCOUNT"),
            kaniko_cluster=setting("MLOPS_KANIKO_CLUSTER"),
        ),
        "policy": LifecyclePolicy(
            promotion_policy=setting("MLOPS_PROMOTION_POLICY"),
            promotion_metric=setting("MLOPS_PROMOTION_METRIC"),
            min_improvement=float(setting("MLOPS_MIN_IMPROVEMENT")),
            min_r2=float(setting("MLOPS_MIN_R2")),
            baseline_margin=float(setting("MLOPS_BASELINE_MARGIN")),
            drift_share_threshold=float(setting("MLOPS_DRIFT_SHARE_THRESHOLD")),
            quality_tolerance=float(setting("MLOPS_QUALITY_TOLERANCE")),
            drift_sample_rows=int(setting("MLOPS_DRIFT_SAMPLE_ROWS")),
            drift_policy=setting("MLOPS_DRIFT_POLICY"),
            retrain_cooldown_minutes=float(setting("MLOPS_RETRAIN_COOLDOWN_MINUTES")),
        ),
        "model_rollout": ModelRolloutResource(
            cluster=setting("MLOPS_DEPLOY_CLUSTER"),
            namespace=setting("MLOPS_DEPLOY_NAMESPACE"),
            kind=setting("MLOPS_DEPLOY_KIND"),
            replicas=int(setting("MLOPS_DEPLOY_REPLICAS")),
            timeout_seconds=float(setting("MLOPS_DEPLOY_TIMEOUT_SECONDS")),
            pull_secret=setting("MLOPS_DEPLOY_PULL_SECRET"),
        ),
        "notifier": NotifierResource(
            channels=setting("MLOPS_ALERT_CHANNELS"),
            webhook_url=secret("MLOPS_ALERT_WEBHOOK_URL"),
            smtp_host=setting("MLOPS_SMTP_HOST"),
            smtp_port=int(setting("MLOPS_SMTP_PORT")),
            smtp_starttls=flag("MLOPS_SMTP_STARTTLS"),
            smtp_username=setting("MLOPS_SMTP_USERNAME"),
            smtp_password=secret("MLOPS_SMTP_PASSWORD"),
            email_from=setting("MLOPS_ALERT_EMAIL_FROM"),
            email_to=setting("MLOPS_ALERT_EMAIL_TO"),
            ui_base_url=setting("MLOPS_DAGSTER_UI_URL"),
        ),
    }


ASSET_MODULES = (data, model, scoring, serving, deployment)


def build_definitions(
    resources: dict[str, object] | None = None, automation: AutomationSettings | None = None
) -> Definitions:
    """The Definitions with resources and automation settings from the environment (read now,
    not on import), or the ones given (tests)."""
    automation = AutomationSettings.from_env() if automation is None else automation
    jobs = build_jobs()
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=load_asset_checks_from_modules(ASSET_MODULES),
        jobs=jobs.all(),
        schedules=build_schedules(automation, jobs),
        sensors=[*build_sensors(automation, jobs), *build_alert_sensors(automation)],
        resources=build_resources() if resources is None else resources,
        executor=executor(),
    )


defs = build_definitions()
