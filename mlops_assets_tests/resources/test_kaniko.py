"""The kaniko build Job: a valid Kubernetes object that references Secrets, never holds them.

No cluster runs here; the Job is validated offline against the Kubernetes schemas, and run
against the stand-in API server, the test playing the Job controller."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from mlops_assets.resources.kaniko import KanikoBuild, context_tarball
from mlops_assets.resources.kubernetes import connect
from mlops_assets_tests.deploy.k8s_schema import K8S_VERSION, validate
from mlops_assets_tests.k8s_api import Controller, KubernetesStandIn


def build(**changes: object) -> KanikoBuild:
    settings: dict[str, object] = {
        "name": "mlops-build-0123456789ab-1",
        "namespace": "mlops",
        "executor_image": "registry.example.com/kaniko/executor:v1.23.2",
        "service_account": "mlops-image-builder",
        "context_uri": "s3://mlops/store/build-contexts/0123.tar.gz",
        "destination": "registry.example.com/ml/house-price-regressor:v3",
        "s3_endpoint_url": "http://seaweedfs.mlops.svc:8333",
    }
    settings.update(changes)
    return KanikoBuild(**settings)  # type: ignore[arg-type]


def test_the_job_validates_against_the_kubernetes_schema() -> None:
    manifest = build().job_manifest()
    assert validate(manifest) == [], f"not valid Kubernetes {K8S_VERSION}"
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    assert "--destination=registry.example.com/ml/house-price-regressor:v3" in container["args"]
    assert "--context=s3://mlops/store/build-contexts/0123.tar.gz" in container["args"]
    assert "--digest-file=/dev/termination-log" in container["args"]
    assert manifest["spec"]["template"]["spec"]["serviceAccountName"] == "mlops-image-builder"


def test_credentials_are_secret_references_only() -> None:
    manifest = build().job_manifest()
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert "value" not in env[key]
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "mlops-s3", "key": key}
    volume = manifest["spec"]["template"]["spec"]["volumes"][0]
    assert volume["secret"]["secretName"] == "mlops-registry"
    assert "password" not in json.dumps(manifest).lower()


def test_an_insecure_registry_adds_kanikos_flag() -> None:
    args = build(insecure_registry=True).job_manifest()["spec"]["template"]["spec"]["containers"][
        0
    ]["args"]
    assert "--insecure" in args


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"executor_image": ""}, "MLOPS_KANIKO_IMAGE is empty"),
        ({"context_uri": "file:///tmp/ctx.tar.gz"}, "reads the build context from S3"),
    ],
)
def test_a_job_that_cannot_work_is_refused_before_it_is_sent(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build(**changes).job_manifest()


def test_the_context_tarball_holds_the_dockerfile_and_the_model(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM x\n")
    (tmp_path / "model_dir" / "artifacts").mkdir(parents=True)
    (tmp_path / "model_dir" / "artifacts" / "MLmodel").write_text("flavors: {}\n")
    with tarfile.open(fileobj=io.BytesIO(context_tarball(tmp_path)), mode="r:gz") as archive:
        names = archive.getnames()
    assert "Dockerfile" in names
    assert "model_dir/artifacts/MLmodel" in names


class JobController(Controller):
    """Plays the Job controller and the kubelet: each new kaniko Job finishes and its pod
    terminates with ``exit_code`` and ``message``, as kaniko's digest file would write it."""

    interval = 0.05

    def __init__(self, cluster: KubernetesStandIn, exit_code: int, message: str) -> None:
        super().__init__(cluster)
        self.exit_code, self.message = exit_code, message

    def reconcile(self) -> None:
        for job in self.cluster.list("/apis/batch/v1", "jobs"):
            meta = job["metadata"]
            if job.get("status"):
                continue
            terminated = {"exitCode": self.exit_code, "message": self.message}
            self.cluster.put(
                "/api/v1",
                "pods",
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"{meta['name']}-x1",
                        "namespace": meta["namespace"],
                        "labels": {"job-name": meta["name"]},
                    },
                    "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
                },
            )
            outcome = "succeeded" if self.exit_code == 0 else "failed"
            self.cluster.set_status(
                "/apis/batch/v1", meta["namespace"], "jobs", meta["name"], {outcome: 1}
            )


def test_a_kaniko_job_runs_through_the_cluster_api_and_returns_the_pushed_digest(
    tmp_path: Path,
) -> None:
    digest = "sha256:" + "a" * 64
    with KubernetesStandIn() as cluster, JobController(cluster, 0, digest + "\n"):
        api = connect(str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        assert build().run(api, timeout=30, poll_seconds=0.05) == digest
        job = cluster.get("/apis/batch/v1", "mlops", "jobs", "mlops-build-0123456789ab-1")
    assert job is not None
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][2] == (
        "--destination=registry.example.com/ml/house-price-regressor:v3"
    )


def test_a_failed_kaniko_job_names_the_job_and_kanikos_message(tmp_path: Path) -> None:
    with KubernetesStandIn() as cluster, JobController(cluster, 1, "error pushing: 401"):
        api = connect(str(cluster.kubeconfig(tmp_path / "kubeconfig")))
        with pytest.raises(RuntimeError) as failed:
            build().run(api, timeout=30, poll_seconds=0.05)
    message = str(failed.value)
    assert "kaniko Job mlops/mlops-build-0123456789ab-1 failed" in message
    assert "exit 1: error pushing: 401" in message
    assert "kubectl logs -n mlops job/mlops-build-0123456789ab-1" in message
