"""What the official Dagster chart (1.13) makes of deploy/helm/values.yaml, for the parts the
tests need: the run launcher section of the instance's dagster.yaml, and the container context
the user deployment hands to its runs.

Neither helm's chart nor a cluster can be fetched here, so this mirrors the chart's templates
(``helpers/instance/_run-launcher.tpl`` and the user-deployments subchart's
``dagsterUserDeployments.k8sContainerContext``) key for key. Where the chart is available,
``test_helm_template_renders`` renders it with helm itself and checks the same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
VALUES = ROOT / "deploy" / "helm" / "values.yaml"
RELEASE = "dagster"
NAMESPACE = "mlops"
CHART_VERSION = "1.13.27"

# The chart's values schema (schema/charts/dagster/subschema/run_launcher.py,
# K8sRunLauncherConfig): a key outside it fails `helm install` with a schema error.
K8S_RUN_LAUNCHER_KEYS = {
    "image", "imagePullPolicy", "jobNamespace", "loadInclusterConfig", "kubeconfigFile",
    "envConfigMaps", "envSecrets", "envVars", "volumeMounts", "volumes", "labels",
    "failPodOnRunFailure", "resources", "schedulerName", "securityContext", "runK8sConfig",
}  # fmt: skip
RUN_K8S_CONFIG_KEYS = {
    "containerConfig", "podSpecConfig", "podTemplateSpecMetadata", "jobSpecConfig", "jobMetadata",
}  # fmt: skip


def load_values() -> dict[str, Any]:
    return yaml.safe_load(VALUES.read_text())


def fullname(release: str = RELEASE) -> str:
    return release if "dagster" in release else f"{release}-dagster"


def _names(entries: list[dict[str, Any]] | None) -> list[str]:
    return [entry["name"] for entry in entries or [] if "name" in entry]


def run_launcher_config(values: dict[str, Any], release: str = RELEASE) -> dict[str, Any]:
    """The ``run_launcher.config`` the chart writes into the instance ConfigMap."""
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    config: dict[str, Any] = {
        "load_incluster_config": launcher["loadInclusterConfig"],
        "job_namespace": launcher.get("jobNamespace") or NAMESPACE,
        "image_pull_policy": launcher["imagePullPolicy"],
        "service_account_name": values["global"]["serviceAccountName"],
        "dagster_home": {"env": "DAGSTER_HOME"},
        "instance_config_map": {"env": "DAGSTER_K8S_INSTANCE_CONFIG_MAP"},
        "postgres_password_secret": {"env": "DAGSTER_K8S_PG_PASSWORD_SECRET"},
        "env_config_maps": [
            {"env": "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP"},
            *_names(launcher.get("envConfigMaps")),
        ],
    }
    if values.get("imagePullSecrets"):
        config["image_pull_secrets"] = values["imagePullSecrets"]
    if launcher.get("envSecrets"):
        config["env_secrets"] = _names(launcher["envSecrets"])
    for key, snake in (
        ("envVars", "env_vars"),
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
        ("securityContext", "security_context"),
    ):
        if launcher.get(key):
            config[snake] = launcher[key]
    if launcher.get("failPodOnRunFailure"):
        config["fail_pod_on_run_failure"] = True
    run_k8s = launcher.get("runK8sConfig") or {}
    if run_k8s:
        config["run_k8s_config"] = {
            snake: run_k8s[key]
            for key, snake in (
                ("containerConfig", "container_config"),
                ("podSpecConfig", "pod_spec_config"),
                ("podTemplateSpecMetadata", "pod_template_spec_metadata"),
                ("jobSpecConfig", "job_spec_config"),
                ("jobMetadata", "job_metadata"),
            )
            if run_k8s.get(key)
        }
    return config


def user_deployment(values: dict[str, Any], name: str = "mlops-assets") -> dict[str, Any]:
    deployments = values["dagster-user-deployments"]["deployments"]
    return next(d for d in deployments if d["name"] == name)


def image(deployment: dict[str, Any]) -> str:
    return f"{deployment['image']['repository']}:{deployment['image']['tag']}"


def container_context(
    values: dict[str, Any], deployment: dict[str, Any], release: str = RELEASE
) -> dict[str, Any]:
    """DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT of the user deployment (includeConfigInLaunchedRuns)."""
    subchart = values["dagster-user-deployments"]
    k8s: dict[str, Any] = {"image_pull_policy": deployment["image"]["pullPolicy"]}
    pull_secrets = subchart.get("imagePullSecrets") or values.get("imagePullSecrets")
    if pull_secrets:
        k8s["image_pull_secrets"] = pull_secrets
    k8s["env_config_maps"] = [
        f"{fullname(release)}-{deployment['name']}-user-env",
        *_names(deployment.get("envConfigMaps")),
    ]
    if deployment.get("envSecrets"):
        k8s["env_secrets"] = _names(deployment["envSecrets"])
    for key, snake in (
        ("volumeMounts", "volume_mounts"),
        ("volumes", "volumes"),
        ("labels", "labels"),
        ("resources", "resources"),
        ("schedulerName", "scheduler_name"),
    ):
        if deployment.get(key):
            k8s[snake] = deployment[key]
    k8s["namespace"] = NAMESPACE
    k8s["service_account_name"] = values["global"]["serviceAccountName"]
    return {"k8s": k8s}


def pipeline_env(values: dict[str, Any], release: str = RELEASE) -> dict[str, str]:
    """The chart's ``<release>-pipeline-env`` ConfigMap, which every run pod reads."""
    return {
        "DAGSTER_HOME": "/opt/dagster/dagster_home",
        "DAGSTER_K8S_PG_PASSWORD_SECRET": values["global"]["postgresqlSecretName"],
        "DAGSTER_K8S_INSTANCE_CONFIG_MAP": f"{fullname(release)}-instance",
        "DAGSTER_K8S_PIPELINE_RUN_NAMESPACE": NAMESPACE,
        "DAGSTER_K8S_PIPELINE_RUN_ENV_CONFIGMAP": f"{fullname(release)}-pipeline-env",
    }
