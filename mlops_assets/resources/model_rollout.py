"""Rolling the served image out to Kubernetes: a KServe InferenceService, or a Deployment and
Service where KServe is not installed.

Objects are written with server-side apply (field manager ``mlops-assets``), so applying the
same model twice changes nothing and a person's own fields on the objects survive. A rollout is
done when the cluster says the new pods are ready; until then the previous pods keep serving
(``maxUnavailable: 0``), and a rollout that never gets ready leaves them serving.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from dagster import ConfigurableResource

from mlops_assets.lib.env_settings import env_field, model_field
from mlops_assets.ml.serving import SERVING_PORT, serving_batch, serving_protocol
from mlops_assets.resources.kaniko import S3_SECRET
from mlops_assets.resources.kubernetes import (
    FIELD_MANAGER,
    KSERVE_GROUP,
    KubernetesApi,
    RolloutFailed,
    connect,
)
from mlops_assets.resources.object_store import ObjectStoreResource, S3Config

SERVING_UID = 10001
# The model server's Prometheus metrics (GET /metrics on its port; mlops_assets.model_server):
# the annotations a Prometheus that discovers pods reads, on a Deployment's pods; and KServe's
# own, on an InferenceService, which KServe turns into its pods' annotations.
SCRAPE_ANNOTATIONS = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(SERVING_PORT),
    "prometheus.io/path": "/metrics",
}
KSERVE_SCRAPE_ANNOTATIONS = {
    "serving.kserve.io/enable-prometheus-scraping": "true",
    "prometheus.kserve.io/port": str(SERVING_PORT),
    "prometheus.kserve.io/path": "/metrics",
}


def object_name(model_name: str) -> str:
    """A DNS-1035 label for ``model_name``: lower case, dashes, at most 45 characters
    (KServe adds suffixes of its own to the InferenceService name)."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:45].rstrip("-")
    if not name:
        raise ValueError(f"model name '{model_name}' has no letters to name a Kubernetes object")
    return name


def _probe(path: str, **timing: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "timeoutSeconds": 5, **timing}


@dataclass(frozen=True)
class Rollout:
    """What to run: one model version's image, by digest, in one namespace."""

    model_name: str
    model_version: str
    image: str
    namespace: str
    replicas: int = 1
    pull_secret: str = ""
    cpu_limit: str = "2"  # the image starts one scoring worker per CPU of this limit
    # The model server's traffic log settings, and the Secret its S3 credentials come from.
    env: tuple[tuple[str, str], ...] = ()
    env_secret: str = ""
    protocol: str = "mlflow"  # mlflow (/invocations) or v2 (the Open Inference Protocol)

    @property
    def name(self) -> str:
        return object_name(self.model_name)

    def labels(self) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/component": "model-server",
            "app.kubernetes.io/part-of": "mlops-assets",
            "app.kubernetes.io/managed-by": FIELD_MANAGER,
        }

    def _metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "labels": self.labels(),
            "annotations": {
                "mlops-assets/model-name": self.model_name,
                "mlops-assets/model-version": self.model_version,
            },
        }

    def container(self, name: str, extra_env: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
        """The model server on port 8000: /ping (V2: /v2/health/ready and /live) tells
        readiness and liveness."""
        ready, live = (
            ("/v2/health/ready", "/v2/health/live")
            if self.protocol == "v2"
            else (
                "/ping",
                "/ping",
            )
        )
        env = (("MLOPS_SERVING_PROTOCOL", self.protocol), *self.env, *extra_env)
        return {
            "name": name,
            "image": self.image,
            "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
            # The server answers these once the model is loaded: readiness gates traffic on it,
            # the startup probe gives a slow load five minutes, liveness restarts a hung server.
            "startupProbe": _probe(ready, periodSeconds=5, failureThreshold=60),
            "readinessProbe": _probe(ready, periodSeconds=5, failureThreshold=3),
            "livenessProbe": _probe(live, periodSeconds=20, failureThreshold=3),
            "env": [{"name": k, "value": v} for k, v in env],
            **({"envFrom": [{"secretRef": {"name": self.env_secret}}]} if self.env_secret else {}),
            "resources": {
                "requests": {"cpu": "250m", "memory": "512Mi"},
                "limits": {"cpu": self.cpu_limit, "memory": "1Gi"},
            },
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
                "runAsNonRoot": True,
                "runAsUser": SERVING_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
        }

    def _pod_spec_extras(self) -> dict[str, Any]:
        extras: dict[str, Any] = {"automountServiceAccountToken": False}
        if self.pull_secret:
            extras["imagePullSecrets"] = [{"name": self.pull_secret}]
        return extras

    def deployment_manifests(self) -> list[dict[str, Any]]:
        """A Deployment (rolling, never below the wanted replicas) and its ClusterIP Service."""
        selector = {
            k: self.labels()[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/component")
        }
        deployment = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": self._metadata(),
            "spec": {
                "replicas": self.replicas,
                "revisionHistoryLimit": 5,
                "progressDeadlineSeconds": 600,
                "selector": {"matchLabels": selector},
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
                },
                "template": {
                    "metadata": {
                        "labels": self.labels(),
                        "annotations": {
                            "mlops-assets/model-version": self.model_version,
                            **SCRAPE_ANNOTATIONS,
                        },
                    },
                    "spec": {
                        **self._pod_spec_extras(),
                        "containers": [self.container("model-server")],
                    },
                },
            },
        }
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": self._metadata(),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        }
        return [deployment, service]

    def inference_service_manifest(self) -> dict[str, Any]:
        """A KServe InferenceService with the image as a custom predictor container, in raw
        deployment mode (plain Deployment and Service, no Knative needed)."""
        metadata = self._metadata()
        metadata["annotations"]["serving.kserve.io/deploymentMode"] = "RawDeployment"
        metadata["annotations"].update(KSERVE_SCRAPE_ANNOTATIONS)
        return {
            "apiVersion": KSERVE_GROUP,
            "kind": "InferenceService",
            "metadata": metadata,
            "spec": {
                "predictor": {
                    "minReplicas": self.replicas,
                    **self._pod_spec_extras(),
                    # KServe reads a custom predictor's protocol (the protocolVersion of its
                    # own runtimes) from the container's PROTOCOL variable: v1 when absent.
                    "containers": [
                        self.container(
                            "kserve-container",
                            (("PROTOCOL", "v2"),) if self.protocol == "v2" else (),
                        )
                    ],
                }
            },
        }

    def url(self, kind: str, live: dict[str, Any]) -> str:
        """Where the model answers inside the cluster."""
        if kind == "kserve":
            found = (live.get("status") or {}).get("url")
            return found or f"http://{self.name}-predictor.{self.namespace}.svc.cluster.local"
        return f"http://{self.name}.{self.namespace}.svc.cluster.local"


def deployment_progress(deployment: dict[str, Any], replicas: int) -> tuple[bool, str]:
    """(ready, what the status says) for a Deployment read back from the API."""
    status = deployment.get("status") or {}
    generation = deployment.get("metadata", {}).get("generation", 0)
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Progressing" and condition.get("reason") == (
            "ProgressDeadlineExceeded"
        ):
            raise RolloutFailed(f"rollout stalled: {condition.get('message', '')}")
    summary = (
        f"{status.get('updatedReplicas', 0)} updated, {status.get('availableReplicas', 0)} "
        f"available of {replicas}"
    )
    ready = (
        status.get("observedGeneration", 0) >= generation
        and status.get("updatedReplicas", 0) >= replicas
        and status.get("availableReplicas", 0) >= replicas
        and not status.get("unavailableReplicas")
    )
    return ready, summary


def inference_service_progress(service: dict[str, Any]) -> tuple[bool, str]:
    """(ready, what the status says) for an InferenceService read back from the API."""
    conditions = (service.get("status") or {}).get("conditions") or []
    for condition in conditions:
        if condition.get("type") == "Ready":
            message = condition.get("message") or condition.get("reason") or ""
            return condition.get("status") == "True", f"Ready={condition.get('status')} {message}"
    return False, "no Ready condition yet"


class ModelRolloutResource(ConfigurableResource):
    """Where model_deployment rolls a served image out (the deployment's cluster, MLOPS_DEPLOY_*)
    and how (each model's serving attributes, set by ModelScope.bind)."""

    cluster: str = env_field(
        "MLOPS_DEPLOY_CLUSTER",
        "",
        "Cluster model_deployment rolls the served image out to: in-cluster (the pod's "
        "service account), a kubeconfig file path, or empty to skip model_deployment.",
    )
    namespace: str = env_field(
        "MLOPS_DEPLOY_NAMESPACE",
        "mlops-serving",
        "Namespace of the served model.",
    )
    kind: str = model_field(
        "serving.kind",
        "auto",
        "kserve (InferenceService), deployment (Deployment + Service), or auto: kserve when "
        "the cluster serves the serving.kserve.io API, else deployment.",
    )
    replicas: int = model_field(
        "serving.replicas",
        1,
        "Replicas of the served model.",
    )
    cpu_limit: str = model_field(
        "serving.cpu_limit",
        "2",
        "CPU limit of each served-model pod (Kubernetes quantity); its scoring server starts "
        "one worker per CPU of it.",
    )
    traffic_log: str = model_field(
        "serving.traffic_log",
        "on",
        "on: the served model logs every request it answers to the object store's "
        "traffic/<model>/ (S3 stores; credentials from the Secret mlops-s3); off: it logs none.",
    )
    protocol: str = model_field(
        "serving.protocol",
        "mlflow",
        "What the served image speaks: mlflow (POST /invocations) or v2 (the Open Inference "
        "Protocol: /v2/models/<model>/infer, /v2/health/ready). served_image's smoke test and "
        "model_deployment's rollout (KServe's PROTOCOL, the probes) follow it.",
    )
    batch: str = model_field(
        "serving.batch",
        "auto",
        "Requests a worker of the served model may predict in one call: those that arrive "
        "while it is busy are predicted together. auto: 16 when every step of the model is "
        "known to answer each row alone whatever rows come with it (imputers, scalers, "
        "encoders, tree models such as the default hist_gradient_boosting; its input example "
        "must agree), else 1, each alone, as MLflow's server does. Or a number from 1 to 64: "
        "a linear model's numbers can then differ in the last digit (a few parts in 1e16), as "
        "the rows are multiplied together.",
    )
    timeout_seconds: float = env_field(
        "MLOPS_DEPLOY_TIMEOUT_SECONDS",
        600.0,
        "How long model_deployment waits for the rollout to become ready.",
    )
    pull_secret: str = env_field(
        "MLOPS_DEPLOY_PULL_SECRET",
        "",
        "Image pull secret (in the serving namespace) for the served image; empty means none.",
    )

    def skip_reason(self) -> str | None:
        """Why no rollout can happen here, or None when a cluster is configured."""
        if not self.cluster:
            return (
                "no cluster configured (MLOPS_DEPLOY_CLUSTER is empty): set it to in-cluster "
                "on Kubernetes, or to a kubeconfig path, to roll the served image out"
            )
        if self.kind not in ("auto", "kserve", "deployment"):
            raise ValueError(f"serving.kind must be auto, kserve or deployment, not '{self.kind}'")
        return None

    def traffic_env(self, store: ObjectStoreResource) -> tuple[tuple[tuple[str, str], ...], str]:
        """The served model's traffic log settings and the Secret with its S3 credentials:
        the object store itself when it is S3; nothing to share when it is a local folder
        (the pod would write below its own file system)."""
        if self.traffic_log not in ("on", "off"):
            raise ValueError(f"serving.traffic_log must be on or off, not '{self.traffic_log}'")
        if self.traffic_log == "off" or not store.is_s3:
            return (("MLOPS_TRAFFIC_LOG", "off"),), ""
        s3 = store.s3 or S3Config()
        env = [("MLOPS_TRAFFIC_LOG", "on"), ("MLOPS_TRAFFIC_STORE", store.root)]
        if s3.endpoint_url:
            env.append(("MLOPS_S3_ENDPOINT_URL", s3.endpoint_url))
        env.append(("MLOPS_S3_REGION", s3.region_name))
        return tuple(env), S3_SECRET

    def serving_protocol(self) -> str:
        """The protocol setting, read as the served image reads it."""
        return serving_protocol({"MLOPS_SERVING_PROTOCOL": self.protocol})

    def batch_env(self) -> tuple[tuple[str, str], ...]:
        """The batching setting for the served model, checked as the image checks it; none
        for auto, the image's default."""
        batch = serving_batch({"MLOPS_SERVING_BATCH": str(self.batch)})
        return () if batch is None else (("MLOPS_SERVING_BATCH", str(batch)),)

    def connect(self) -> KubernetesApi:
        return connect(self.cluster)

    def rollout_kind(self, api: KubernetesApi) -> str:
        if self.kind != "auto":
            return self.kind
        return "kserve" if api.serves(KSERVE_GROUP) else "deployment"

    def wait_until_ready(
        self, api: KubernetesApi, rollout: Rollout, kind: str, poll_seconds: float = 2.0
    ) -> str:
        """Poll until the rollout is ready; returns the last status summary."""
        if kind == "kserve":
            target = rollout.inference_service_manifest()
        else:
            target = rollout.deployment_manifests()[0]
        deadline = time.monotonic() + self.timeout_seconds
        while True:
            live = api.read(target)
            if kind == "kserve":
                ready, summary = inference_service_progress(live)
            else:
                ready, summary = deployment_progress(live, rollout.replicas)
            if ready:
                return summary
            if time.monotonic() >= deadline:
                problems = api.pod_problems(
                    rollout.namespace, {"app.kubernetes.io/name": rollout.name}
                )
                raise RolloutFailed(
                    f"{kind} {rollout.namespace}/{rollout.name} not ready after "
                    f"{self.timeout_seconds:.0f}s: {summary}"
                    + (f"; pods: {'; '.join(problems)}" if problems else "")
                )
            time.sleep(poll_seconds)
