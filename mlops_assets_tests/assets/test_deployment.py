"""model_deployment against the stand-in Kubernetes API: what it applies, how it waits, what it
records, and what it does when there is no cluster or the rollout never gets ready. The test
plays the Deployment controller by setting status on the objects."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, Definitions, asset

from mlops_assets.components.lifecycle.serving.deployment import build_deployment_assets
from mlops_assets.definitions import build_resources
from mlops_assets.records import ServedImage
from mlops_assets.resources.model_rollout import ModelRolloutResource, Rollout
from mlops_assets.resources.object_store import ObjectStoreResource, S3Config
from mlops_assets_tests.conftest import key, scope_of, short
from mlops_assets_tests.deploy.k8s_schema import validate
from mlops_assets_tests.k8s_api import KSERVE, Controller, KubernetesStandIn

MODEL = "house-price-regressor"
APPS = "/apis/apps/v1"
DIGEST_1 = "sha256:" + "1" * 64
DIGEST_2 = "sha256:" + "2" * 64


def _image(version: str, digest: str) -> ServedImage:
    """What served_image hands model_deployment after a push (tested in test_serving.py)."""
    repository = "registry.example.test/mlops/house-price-regressor"
    return ServedImage(
        model_name=MODEL,
        model_version=version,
        run_id="run",
        repository=repository,
        tag=f"v{version}",
        base_image="python:3.11-slim",
        fingerprint="f" * 64,
        builder="buildah",
        digest=digest,
        reference=f"{repository}@{digest}",
    )


def _run(
    tmp_path: Path,
    rollout: ModelRolloutResource,
    store: ObjectStoreResource,
    image: ServedImage,
    instance: DagsterInstance | None = None,
) -> Any:
    """model_deployment and its check, downstream of a served_image that returns ``image``."""

    @asset(key=key("served_image"), group_name="house_prices")
    def served_image() -> ServedImage:
        return image

    deployment, check = build_deployment_assets(scope_of({}))
    defs = Definitions(
        assets=[served_image, deployment],
        asset_checks=[check],
        resources={**build_resources(), "model_rollout": rollout, "object_store": store},
    )
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance or DagsterInstance.ephemeral(), raise_on_error=False
    )


class DeploymentController(Controller):
    """Marks each new generation of a Deployment rolled out, as the controller would."""

    def __init__(self, cluster: KubernetesStandIn, namespace: str) -> None:
        super().__init__(cluster)
        self.namespace = namespace

    def reconcile(self) -> None:
        for deployment in self.cluster.list(APPS, "deployments"):
            meta, replicas = deployment["metadata"], deployment["spec"]["replicas"]
            status = {
                "observedGeneration": meta["generation"],
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }
            if deployment.get("status") != status:
                self.cluster.set_status(
                    APPS, meta["namespace"], "deployments", meta["name"], status
                )


@pytest.fixture
def store(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch) -> ObjectStoreResource:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    return ObjectStoreResource(root=str(tmp_path / "store"))


def test_without_a_cluster_model_deployment_is_skipped_with_the_reason(
    tmp_path: Path, store: ObjectStoreResource
) -> None:
    image = _image("1", DIGEST_1)
    instance = DagsterInstance.ephemeral()
    result = _run(tmp_path, ModelRolloutResource(cluster=""), store, image, instance)
    assert result.success
    materialized = {short(e.asset_key) for e in result.get_asset_materialization_events()}
    assert "model_deployment" not in materialized
    messages = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("model_deployment skipped: no cluster configured" in m for m in messages)
    assert not store.exists(f"deployments/{MODEL}/latest.json")


def test_rolls_out_a_deployment_and_service_with_ping_probes_and_records_it(
    tmp_path: Path, store: ObjectStoreResource
) -> None:
    image = _image("1", DIGEST_1)
    with KubernetesStandIn() as cluster, DeploymentController(cluster, "mlops-serving"):
        rollout = ModelRolloutResource(cluster=str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        result = _run(tmp_path, rollout, store, image)
        assert result.success, result.all_events
        deployment = cluster.get(APPS, "mlops-serving", "deployments", MODEL)
        service = cluster.get("/api/v1", "mlops-serving", "services", MODEL)
        applies = [r for r in cluster.requests if r["method"] == "PATCH"]

        # A new champion: same objects, next generation, new image.
        image = _image("2", DIGEST_2)
        second = _run(tmp_path, rollout, store, image)
        assert second.success
        updated = cluster.get(APPS, "mlops-serving", "deployments", MODEL)

    assert deployment is not None
    assert service is not None
    for manifest in (deployment, service):
        manifest = {k: v for k, v in manifest.items() if k != "status"}
        assert validate(manifest) == []
    assert {r["content_type"] for r in applies} == {"application/apply-patch+yaml"}
    assert all(r["query"]["fieldManager"] == ["mlops-assets"] for r in applies)

    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"registry.example.test/mlops/house-price-regressor@{DIGEST_1}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/ping", "port": "http"}
    assert container["ports"][0]["containerPort"] == 8000
    assert container["securityContext"]["runAsNonRoot"] is True
    # The image starts one worker per CPU it may use: the pod's limit decides how many.
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "1Gi"}
    # A local store cannot be shared with the pods: the traffic log is off, no Secret needed.
    assert container["env"] == [
        {"name": "MLOPS_SERVING_PROTOCOL", "value": "mlflow"},
        {"name": "MLOPS_TRAFFIC_LOG", "value": "off"},
    ]
    assert "envFrom" not in container
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # Prometheus finds the pods and scrapes the server's /metrics on its port.
    pod_annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert {k: v for k, v in pod_annotations.items() if k.startswith("prometheus.io/")} == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8000",
        "prometheus.io/path": "/metrics",
    }
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]

    assert updated is not None
    assert updated["metadata"]["generation"] == 2
    assert updated["spec"]["template"]["spec"]["containers"][0]["image"].endswith(DIGEST_2)
    record = json.loads(store.get_bytes(f"deployments/{MODEL}/latest.json"))
    assert record["kind"] == "deployment"
    assert record["model_version"] == "2"
    assert record["image"].endswith(DIGEST_2)
    assert record["url"] == f"http://{MODEL}.mlops-serving.svc.cluster.local"
    assert [m["kind"] for m in record["manifests"]] == ["Deployment", "Service"]
    (check,) = second.get_asset_check_evaluations()
    assert check.check_name == "runs_the_served_image"
    assert check.passed


def test_a_rollout_that_never_gets_ready_fails_and_keeps_the_last_good_record(
    tmp_path: Path, store: ObjectStoreResource
) -> None:
    image = _image("1", DIGEST_1)
    with KubernetesStandIn() as cluster:
        kubeconfig = str(cluster.kubeconfig(tmp_path / "kubeconfig"))
        with DeploymentController(cluster, "mlops-serving"):
            assert _run(tmp_path, ModelRolloutResource(cluster=kubeconfig), store, image).success
        before = store.get_bytes(f"deployments/{MODEL}/latest.json")

        # No controller now: the new pods never become ready (say, the image cannot be pulled).
        image = _image("2", DIGEST_2)
        cluster.put(
            "/api/v1",
            "pods",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{MODEL}-7c9d",
                    "namespace": "mlops-serving",
                    "labels": {"app.kubernetes.io/name": MODEL},
                },
                "status": {
                    "containerStatuses": [
                        {
                            "state": {
                                "waiting": {"reason": "ImagePullBackOff", "message": "not found"}
                            }
                        }
                    ]
                },
            },
        )
        result = _run(
            tmp_path, ModelRolloutResource(cluster=kubeconfig, timeout_seconds=2), store, image
        )

    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert "not ready after 2s" in message
    assert "ImagePullBackOff" in message
    assert "previous pods keep serving" in message
    assert store.get_bytes(f"deployments/{MODEL}/latest.json") == before


def test_with_kserve_it_applies_an_inference_service_speaking_v2(
    tmp_path: Path, store: ObjectStoreResource
) -> None:
    """MLOPS_SERVING_PROTOCOL=v2: KServe's PROTOCOL says so, and the probes ask V2's health;
    MLOPS_SERVING_BATCH goes to the model server as it is set."""
    image = _image("3", DIGEST_1)
    url = f"http://{MODEL}-mlops-serving.example.test"

    def ready() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if cluster.get(KSERVE, "mlops-serving", "inferenceservices", MODEL):
                status = {"url": url, "conditions": [{"type": "Ready", "status": "True"}]}
                cluster.set_status(KSERVE, "mlops-serving", "inferenceservices", MODEL, status)
                return
            time.sleep(0.1)

    with KubernetesStandIn(kserve=True) as cluster:
        threading.Thread(target=ready, daemon=True).start()
        rollout = ModelRolloutResource(
            cluster=str(cluster.kubeconfig(tmp_path / "kubeconfig")), protocol="v2", batch="16"
        )
        result = _run(tmp_path, rollout, store, image)
        service = cluster.get(KSERVE, "mlops-serving", "inferenceservices", MODEL)
        deployments = cluster.list(APPS, "deployments")

    assert result.success
    assert deployments == []
    assert service is not None
    predictor = service["spec"]["predictor"]
    assert predictor["containers"][0]["image"].endswith(DIGEST_1)
    container = predictor["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert {"name": "PROTOCOL", "value": "v2"} in container["env"]
    assert {"name": "MLOPS_SERVING_PROTOCOL", "value": "v2"} in container["env"]
    assert {"name": "MLOPS_SERVING_BATCH", "value": "16"} in container["env"]
    annotations = service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    # KServe makes its pods scrapable by Prometheus at the server's /metrics.
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert (annotations["prometheus.kserve.io/port"], annotations["prometheus.kserve.io/path"]) == (
        "8000",
        "/metrics",
    )
    record = json.loads(store.get_bytes(f"deployments/{MODEL}/latest.json"))
    assert record["kind"] == "kserve"
    assert record["url"] == url


def test_with_an_s3_store_the_served_model_logs_its_traffic_there_with_the_secrets_keys() -> None:
    s3_store = ObjectStoreResource(
        root="s3://mlops/store", s3=S3Config(endpoint_url="http://s3.mlops.svc.cluster.local:8333")
    )
    env, secret = ModelRolloutResource(cluster="x").traffic_env(s3_store)
    rollout = Rollout(MODEL, "1", "image", "mlops-serving", env=env, env_secret=secret)
    applied = rollout.deployment_manifests()[0]
    silent = ModelRolloutResource(cluster="x", traffic_log="off").traffic_env(s3_store)

    container = applied["spec"]["template"]["spec"]["containers"][0]
    assert validate(applied) == []
    assert container["env"] == [
        {"name": "MLOPS_SERVING_PROTOCOL", "value": "mlflow"},
        {"name": "MLOPS_TRAFFIC_LOG", "value": "on"},
        {"name": "MLOPS_TRAFFIC_STORE", "value": "s3://mlops/store"},
        {"name": "MLOPS_S3_ENDPOINT_URL", "value": "http://s3.mlops.svc.cluster.local:8333"},
        {"name": "MLOPS_S3_REGION", "value": "us-east-1"},
    ]
    # Credentials by reference only: the manifest names the Secret, never a key's value.
    assert container["envFrom"] == [{"secretRef": {"name": "mlops-s3"}}]
    assert "AWS_SECRET_ACCESS_KEY" not in json.dumps(applied)
    assert silent == ((("MLOPS_TRAFFIC_LOG", "off"),), "")
    with pytest.raises(ValueError, match=r"serving\.traffic_log must be on or off, not 'yes'"):
        ModelRolloutResource(cluster="x", traffic_log="yes").traffic_env(s3_store)
    with pytest.raises(ValueError, match="MLOPS_SERVING_PROTOCOL must be one of mlflow, v2"):
        ModelRolloutResource(cluster="x", protocol="grpc").serving_protocol()
    # auto is the image's default: nothing to say. A number is passed, 1 included.
    assert ModelRolloutResource(cluster="x").batch_env() == ()
    assert ModelRolloutResource(cluster="x", batch="1").batch_env() == (
        ("MLOPS_SERVING_BATCH", "1"),
    )
    with pytest.raises(
        ValueError, match="MLOPS_SERVING_BATCH must be auto or a whole number from 1 to 64"
    ):
        ModelRolloutResource(cluster="x", batch="65").batch_env()
