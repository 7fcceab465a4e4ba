"""The one way this project reaches a Kubernetes cluster: the official client's ApiClient,
configured in-cluster (the pod's service account) or from a kubeconfig file, and the few calls
the rollout and the kaniko build make through it."""

from __future__ import annotations

import json
from typing import Any

FIELD_MANAGER = "mlops-assets"
KSERVE_GROUP = "serving.kserve.io/v1beta1"
# apiVersion/kind -> (API path prefix, plural) for the objects this module writes.
_PATHS = {
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments"),
    ("v1", "Service"): ("/api/v1", "services"),
    (KSERVE_GROUP, "InferenceService"): (f"/apis/{KSERVE_GROUP}", "inferenceservices"),
    ("batch/v1", "Job"): ("/apis/batch/v1", "jobs"),
}


class ClusterUnavailable(RuntimeError):
    """The Kubernetes API could not be reached (``status`` None) or refused the request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RolloutFailed(RuntimeError):
    """The cluster accepted the objects, but the model never became ready."""


def connect(cluster: str) -> KubernetesApi:
    """``cluster`` is ``in-cluster`` (the pod's service account) or a kubeconfig file path."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        if cluster == "in-cluster":
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(config_file=cluster, client_configuration=configuration)
    except (config.ConfigException, OSError) as exc:
        raise ClusterUnavailable(
            f"cannot load the cluster configuration '{cluster}': {exc}"
        ) from exc
    return KubernetesApi(client.ApiClient(configuration))


class KubernetesApi:
    """The few calls a rollout makes, through the official client's ApiClient."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client

    def _call(
        self, method: str, path: str, body: Any = None, query: Any = (), headers: Any = None
    ) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            response = self.api_client.call_api(
                path,
                method,
                query_params=list(query),
                header_params={"Accept": "application/json", **(headers or {})},
                body=body,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=30,
            )
            return json.loads(response.data or b"{}")
        except ApiException as exc:
            raise ClusterUnavailable(
                f"{method} {path}: HTTP {exc.status} {exc.reason}: {(exc.body or '')[:500]}",
                status=exc.status,
            ) from exc
        except OSError as exc:  # urllib3 wraps connection errors in OSError subclasses
            raise ClusterUnavailable(f"{method} {path}: {exc}") from exc

    def serves(self, group_version: str) -> bool:
        """Whether the API server knows ``group_version`` (e.g. serving.kserve.io/v1beta1)."""
        try:
            self._call("GET", f"/apis/{group_version}")
        except ClusterUnavailable as exc:
            if exc.status == 404:
                return False
            raise
        return True

    @staticmethod
    def path(manifest: dict[str, Any]) -> str:
        prefix, plural = _PATHS[(manifest["apiVersion"], manifest["kind"])]
        meta = manifest["metadata"]
        return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"

    def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: create or update ``manifest``; returns the object as stored."""
        return self._call(
            "PATCH",
            self.path(manifest),
            body=manifest,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            headers={"Content-Type": "application/apply-patch+yaml"},
        )

    def read(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return self._call("GET", self.path(manifest))

    def pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        found = self._call(
            "GET", f"/api/v1/namespaces/{namespace}/pods", query=[("labelSelector", selector)]
        )
        return list(found.get("items") or [])

    def pod_problems(self, namespace: str, labels: dict[str, str]) -> list[str]:
        """Why pods matching ``labels`` are not ready (image pulls, crash loops), if known."""
        try:
            pods = self.pods(namespace, labels)
        except ClusterUnavailable:
            return []
        problems = []
        for pod in pods:
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                waiting = (container.get("state") or {}).get("waiting")
                if waiting:
                    problems.append(
                        f"{pod['metadata']['name']}: {waiting.get('reason')} {waiting.get('message', '')}".strip()
                    )
        return problems
