"""Building the served image in a Kubernetes Job with kaniko (no Docker daemon, no root on
the node).

The build context goes to the S3 object store as a tar.gz; the Job's kaniko container reads
it from there with the S3 credentials of a Secret, pushes to the registry with the Docker
config of another Secret, and writes the pushed digest to its termination message, where the
asset reads it. No credential is part of the Job spec: only Secret references.
"""

from __future__ import annotations

import io
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops_assets.resources.kubernetes import KubernetesApi

S3_SECRET = "mlops-s3"  # keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
REGISTRY_SECRET = "mlops-registry"  # type kubernetes.io/dockerconfigjson
JOB_LABEL = "app.kubernetes.io/component"


def context_tarball(context: Path) -> bytes:
    """The build context as a gzipped tar, files in a stable order."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(context.rglob("*")):
            archive.add(path, arcname=path.relative_to(context).as_posix(), recursive=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class KanikoBuild:
    """One build: where the context is, where the image goes, and the Job's settings."""

    name: str
    namespace: str
    executor_image: str
    service_account: str
    context_uri: str
    destination: str
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    insecure_registry: bool = False
    labels: tuple[tuple[str, str], ...] = ()

    def job_manifest(self) -> dict[str, Any]:
        if not self.executor_image:
            raise ValueError(
                "MLOPS_KANIKO_IMAGE is empty: set it to the kaniko executor image your cluster "
                "pulls, pinned by tag or digest"
            )
        if not self.context_uri.startswith("s3://"):
            raise ValueError(
                f"kaniko reads the build context from S3, but the object store is "
                f"{self.context_uri}: set MLOPS_OBJECT_STORE_ROOT to s3://bucket/prefix"
            )
        labels = {
            "app.kubernetes.io/name": "mlops-image-builder",
            "app.kubernetes.io/part-of": "mlops-assets",
            JOB_LABEL: "kaniko-build",
            **dict(self.labels),
        }
        args = [
            f"--context={self.context_uri}",
            "--dockerfile=Dockerfile",
            f"--destination={self.destination}",
            "--digest-file=/dev/termination-log",
            "--snapshot-mode=redo",
        ]
        if self.insecure_registry:
            args.append("--insecure")
        env: list[dict[str, Any]] = [
            {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": S3_SECRET, "key": key}},
            }
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        ]
        env.append({"name": "AWS_REGION", "value": self.s3_region})
        if self.s3_endpoint_url:
            env += [
                {"name": "S3_ENDPOINT", "value": self.s3_endpoint_url},
                {"name": "S3_FORCE_PATH_STYLE", "value": "true"},
            ]
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "backoffLimit": 1,
                "activeDeadlineSeconds": 3600,
                "ttlSecondsAfterFinished": 86400,
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "serviceAccountName": self.service_account,
                        "containers": [
                            {
                                "name": "kaniko",
                                "image": self.executor_image,
                                "args": args,
                                "env": env,
                                "resources": {
                                    "requests": {"cpu": "1", "memory": "2Gi"},
                                    "limits": {"memory": "4Gi"},
                                },
                                "terminationMessagePath": "/dev/termination-log",
                                "terminationMessagePolicy": "File",
                                "volumeMounts": [
                                    {"name": "docker-config", "mountPath": "/kaniko/.docker"}
                                ],
                            }
                        ],
                        "volumes": [
                            {
                                "name": "docker-config",
                                "secret": {
                                    "secretName": REGISTRY_SECRET,
                                    "optional": True,
                                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
                                },
                            }
                        ],
                    },
                },
            },
        }

    def run(self, api: KubernetesApi, timeout: float = 3600, poll_seconds: float = 5) -> str:
        """Create the Job through ``api``, wait for it, and return the digest kaniko pushed."""
        manifest = self.job_manifest()
        api.apply(manifest)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = api.read(manifest).get("status") or {}
            if status.get("succeeded") or status.get("failed"):
                break
            time.sleep(poll_seconds)
        else:
            raise TimeoutError(f"kaniko Job {self.namespace}/{self.name} ran over {timeout:.0f}s")
        messages = []
        for pod in api.pods(self.namespace, {"job-name": self.name}):
            for container in (pod.get("status") or {}).get("containerStatuses") or []:
                terminated = (container.get("state") or {}).get("terminated")
                if terminated is not None:
                    message = (terminated.get("message") or "").strip()
                    messages.append((int(terminated.get("exitCode", -1)), message))
        for exit_code, message in messages:
            if exit_code == 0 and message.startswith("sha256:"):
                return message
        raise RuntimeError(
            f"kaniko Job {self.namespace}/{self.name} failed: "
            + ("; ".join(f"exit {code}: {msg[-500:]}" for code, msg in messages) or "no pod")
            + f" (kubectl logs -n {self.namespace} job/{self.name})"
        )
