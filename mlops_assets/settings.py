"""Every environment variable the project reads, with its embedded default.

This is the one list: resources are built from it in definitions.py, and a
test checks that the README documents each entry. Defaults need no server.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    description: str

    def value(self) -> str:
        return os.environ.get(self.name, "") or self.default


HOME = Setting(
    "MLOPS_HOME",
    ".mlops",
    "Folder for all local state (object store, MLflow database and artifacts, IO manager).",
)
SETTINGS: tuple[Setting, ...] = (
    HOME,
    Setting(
        "MLOPS_OBJECT_STORE_ROOT",
        "",
        "Object store: a folder, or s3://bucket/prefix; empty means $MLOPS_HOME/store.",
    ),
    Setting(
        "MLOPS_S3_ENDPOINT_URL",
        "",
        "S3-compatible server for s3:// store and sources (SeaweedFS, MinIO); empty means AWS. "
        "Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.",
    ),
    Setting("MLOPS_S3_REGION", "us-east-1", "Region for the S3 client."),
    Setting("MLOPS_DATASET_SPEC", "", "JSON dataset spec file; empty means the house-price spec."),
    Setting(
        "MLOPS_SOURCE_URI",
        "sample://house-prices?rows=5000&seed=42",
        "Labelled training data: a file, a directory of .csv/.parquet files, an http(s) URL, "
        "or sample://house-prices?rows=N&seed=S[&drift=1].",
    ),
    Setting(
        "MLOPS_INCOMING_URI",
        "sample://house-prices?rows=2000&seed={day}",
        "Incoming batch of a daily partition; {date} becomes YYYY-MM-DD, {day} YYYYMMDD.",
    ),
    Setting("MLOPS_PARTITIONS_START", "2026-11-01", "First daily partition of predictions."),
    Setting(
        "MLFLOW_TRACKING_URI",
        "",
        "MLflow tracking server or database; empty means sqlite:///$MLOPS_HOME/mlflow.db.",
    ),
    Setting("MLFLOW_REGISTRY_URI", "", "MLflow model registry; empty means the tracking URI."),
    Setting("MLOPS_EXPERIMENT", "house-prices", "MLflow experiment of training runs."),
    Setting("MLOPS_MODEL_NAME", "house-price-regressor", "Registered model name."),
    Setting(
        "MLOPS_PROMOTION_POLICY",
        "auto",
        "auto: promote a better challenger; manual: wait for the approve_challenger job.",
    ),
    Setting(
        "MLOPS_PROMOTION_METRIC",
        "rmse",
        "Test-split metric that decides promotion: rmse, mae or r2.",
    ),
    Setting(
        "MLOPS_MIN_IMPROVEMENT", "0.0", "Fraction by which a challenger must beat the champion."
    ),
    Setting("MLOPS_MIN_R2", "0.5", "Lowest test R2 a trained model may have (blocking check)."),
    Setting(
        "MLOPS_BASELINE_MARGIN",
        "0.1",
        "Fraction by which a model must beat the median baseline's test RMSE.",
    ),
    Setting(
        "MLOPS_DRIFT_SHARE_THRESHOLD",
        "0.3",
        "Share of drifted feature columns that fails the drift check (WARN).",
    ),
    Setting(
        "MLOPS_QUALITY_TOLERANCE",
        "0.25",
        "Fraction by which batch RMSE may exceed the champion's test RMSE before the quality check fails (ERROR).",
    ),
    Setting(
        "MLOPS_IMAGE_BUILDER",
        "auto",
        "Image builder of served_image: auto (docker, then buildah, then podman), docker, "
        "buildah, podman or kaniko.",
    ),
    Setting(
        "MLOPS_IMAGE_REGISTRY",
        "",
        "Registry and namespace served images are pushed to, e.g. registry.example.com/ml; "
        "empty means an OCI archive in the object store. Credentials come from "
        "MLOPS_REGISTRY_USERNAME / MLOPS_REGISTRY_PASSWORD.",
    ),
    Setting(
        "MLOPS_IMAGE_REGISTRY_INSECURE",
        "false",
        "true: talk to the registry over plain HTTP (a registry on loopback).",
    ),
    Setting(
        "MLOPS_IMAGE_BASE",
        "",
        "Base image of served images; empty means MLflow's choice (python:<version>-slim).",
    ),
    Setting(
        "MLOPS_IMAGE_BUILD_CA_BUNDLE",
        "",
        "CA bundle that pip trusts while building images (networks that intercept TLS); "
        "copied into the image at /etc/mlops/build-ca.pem (public certificates only).",
    ),
    Setting(
        "MLOPS_CONTAINER_RUN_ARGS",
        "--ulimit nofile=4096:4096 --ulimit nproc=4096:4096",
        "Extra arguments of `podman run` / `docker run` for the smoke test.",
    ),
    Setting(
        "MLOPS_KANIKO_IMAGE",
        "",
        "kaniko executor image (pinned) for MLOPS_IMAGE_BUILDER=kaniko.",
    ),
    Setting("MLOPS_KANIKO_NAMESPACE", "mlops", "Namespace of kaniko build Jobs."),
    Setting(
        "MLOPS_KANIKO_SERVICE_ACCOUNT",
        "mlops-image-builder",
        "Service account of kaniko build Jobs.",
    ),
    Setting(
        "MLOPS_KANIKO_CLUSTER",
        "in-cluster",
        "Cluster kaniko build Jobs run on: in-cluster (the pod's service account) or a "
        "kubeconfig file path.",
    ),
    Setting(
        "MLOPS_DRIFT_SAMPLE_ROWS",
        "50000",
        "Rows sampled from batch and reference for the drift report.",
    ),
    Setting(
        "MLOPS_AUTOMATION",
        "stopped",
        "running: schedules and the sensors that launch runs start with the daemon; stopped: "
        "turn them on in the UI. The alert sensors always start running.",
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
    Setting("MLOPS_SCHEDULE_TIMEZONE", "UTC", "Time zone of both crons."),
    Setting(
        "MLOPS_INCOMING_LOOKBACK_DAYS",
        "7",
        "How many of the latest daily partitions the incoming_batches sensor watches.",
    ),
    Setting(
        "MLOPS_DRIFT_POLICY",
        "retrain",
        "What a failed drift_report check starts: continue (alerts only), retrain "
        "(refresh_model), or rollback (a failed quality check rolls the champion back; "
        "drift alone retrains).",
    ),
    Setting(
        "MLOPS_RETRAIN_COOLDOWN_MINUTES",
        "360",
        "After a run started by the drift policy, further drift failures start nothing for "
        "this long.",
    ),
    Setting(
        "MLOPS_ALERT_CHANNELS",
        "log",
        "Where alerts go, comma-separated: log, webhook, email.",
    ),
    Setting(
        "MLOPS_ALERT_WEBHOOK_URL",
        "",
        "Slack-compatible incoming webhook (a secret: read through EnvVar, never shown).",
    ),
    Setting("MLOPS_ALERT_EMAIL_TO", "", "Alert recipients, comma-separated."),
    Setting("MLOPS_ALERT_EMAIL_FROM", "mlops-assets@localhost", "Sender of alert emails."),
    Setting("MLOPS_SMTP_HOST", "", "SMTP server for email alerts."),
    Setting("MLOPS_SMTP_PORT", "587", "SMTP port."),
    Setting("MLOPS_SMTP_STARTTLS", "true", "true: upgrade the SMTP connection with STARTTLS."),
    Setting("MLOPS_SMTP_USERNAME", "", "SMTP login; empty means no login."),
    Setting(
        "MLOPS_SMTP_PASSWORD",
        "",
        "SMTP password (a secret: read through EnvVar, never shown).",
    ),
    Setting(
        "MLOPS_EXECUTOR",
        "multiprocess",
        "multiprocess: every step of a run in the run's own process or pod; k8s_job: each step "
        "in its own Kubernetes Job (k8s_job_executor, on a cluster only).",
    ),
    Setting("MLOPS_K8S_CPU", "500m", "CPU request of run and step pods on Kubernetes."),
    Setting("MLOPS_K8S_MEMORY", "1Gi", "Memory request of run and step pods on Kubernetes."),
    Setting("MLOPS_K8S_MEMORY_LIMIT", "2Gi", "Memory limit of run and step pods on Kubernetes."),
    Setting("MLOPS_K8S_TRAINING_CPU", "2", "CPU request of pods that train (Kubernetes)."),
    Setting("MLOPS_K8S_TRAINING_MEMORY", "4Gi", "Memory request of pods that train."),
    Setting("MLOPS_K8S_TRAINING_MEMORY_LIMIT", "6Gi", "Memory limit of pods that train."),
    Setting(
        "MLOPS_DEPLOY_CLUSTER",
        "",
        "Cluster model_deployment rolls the served image out to: in-cluster (the pod's service "
        "account), a kubeconfig file path, or empty to skip model_deployment.",
    ),
    Setting("MLOPS_DEPLOY_NAMESPACE", "mlops-serving", "Namespace of the served model."),
    Setting(
        "MLOPS_DEPLOY_KIND",
        "auto",
        "kserve (InferenceService), deployment (Deployment + Service), or auto: kserve when the "
        "cluster serves the serving.kserve.io API, else deployment.",
    ),
    Setting("MLOPS_DEPLOY_REPLICAS", "1", "Replicas of the served model."),
    Setting(
        "MLOPS_DEPLOY_TIMEOUT_SECONDS",
        "600",
        "How long model_deployment waits for the rollout to become ready.",
    ),
    Setting(
        "MLOPS_DEPLOY_PULL_SECRET",
        "",
        "Image pull secret (in the serving namespace) for the served image; empty means none.",
    ),
    Setting(
        "MLOPS_DAGSTER_UI_URL",
        "http://127.0.0.1:3000",
        "Base URL of the Dagster UI, for the run links in alerts.",
    ),
)


def setting(name: str) -> str:
    for entry in SETTINGS:
        if entry.name == name:
            return entry.value()
    raise KeyError(f"unknown setting {name}")


def flag(name: str) -> bool:
    return setting(name).strip().lower() in ("1", "true", "yes", "on")


def home() -> Path:
    return Path(HOME.value()).expanduser().resolve()
