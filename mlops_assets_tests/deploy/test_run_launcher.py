"""Launcher contract: K8sRunLauncher configured as deploy/helm/values.yaml configures it
launches a run against a stand-in Kubernetes API; the Job it creates, executed here with the
env the kubelet would give it, runs the assets to success on the same Dagster instance.

Everything but the cluster is real: the dagster-daemon dequeues the run and calls the launcher,
the code server is `dagster api grpc` with the env the chart gives the user deployment, the
instance is on PostgreSQL, assets write to SeaweedFS and the MLflow server.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import yaml

from mlops_assets.stack.process import ServerProcess, free_port
from mlops_assets_tests import helm_chart
from mlops_assets_tests.dagster_services import BIN, ROOT, project_env, wait_for
from mlops_assets_tests.deploy.k8s_schema import K8S_VERSION, validate
from mlops_assets_tests.k8s_api import KubernetesStandIn

pytestmark = pytest.mark.slow
SETTINGS_MANIFEST = ROOT / "deploy" / "manifests" / "20-settings.yaml"


def _secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": helm_chart.NAMESPACE},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": helm_chart.NAMESPACE},
        "data": data,
    }


def _create_database(postgres: Any, name: str) -> None:
    connection = psycopg2.connect(postgres.url("postgres"))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()


def _instance_yaml(values: dict[str, Any], kubeconfig: Path, postgres: Any, db: str) -> str:
    """dagster.yaml as the chart writes it (launcher, queued coordinator, Postgres storage),
    with the two things that differ outside a cluster: the kubeconfig and the database host."""
    launcher = helm_chart.run_launcher_config(values)
    launcher.update(load_incluster_config=False, kubeconfig_file=str(kubeconfig))
    return yaml.safe_dump(
        {
            "run_launcher": {
                "module": "dagster_k8s",
                "class": "K8sRunLauncher",
                "config": launcher,
            },
            "run_coordinator": {
                "module": "dagster.core.run_coordinator",
                "class": "QueuedRunCoordinator",
                "config": {"dequeue_interval_seconds": 1},
            },
            "storage": {
                "postgres": {
                    "postgres_db": {
                        "username": postgres.user,
                        "password": {"env": "DAGSTER_PG_PASSWORD"},
                        "hostname": "127.0.0.1",
                        "port": postgres.port,
                        "db_name": db,
                        "scheme": values["postgresql"]["postgresqlScheme"],
                    }
                }
            },
            "concurrency": {"runs": {"max_concurrent_runs": 4}, "pools": {"default_limit": 1}},
            "telemetry": {"enabled": False},
        }
    )


def test_run_launched_by_k8s_run_launcher_executes_to_success(
    tmp_path: Path, mlflow_stack: dict[str, Any], seaweed: Any
) -> None:
    values = helm_chart.load_values()
    deployment = helm_chart.user_deployment(values)
    image = helm_chart.image(deployment)
    postgres = mlflow_stack["postgres"]
    _create_database(postgres, "dagster_k8s_contract")

    # The cluster's settings ConfigMap, with the service addresses of this machine.
    settings = yaml.safe_load(SETTINGS_MANIFEST.read_text())["data"]
    settings.update(
        MLOPS_OBJECT_STORE_ROOT=f"s3://{seaweed.bucket}/k8s-contract",
        MLOPS_S3_ENDPOINT_URL=seaweed.endpoint_url,
        MLOPS_SOURCE_URI="sample://house-prices?rows=800&seed=3",
        MLOPS_INCOMING_URI="sample://house-prices?rows=300&seed={day}",
        MLFLOW_TRACKING_URI=mlflow_stack["mlflow"].tracking_uri,
        MLOPS_EXPERIMENT="k8s-contract",
        MLOPS_MODEL_NAME="k8s-contract-regressor",
        # The daemon here must launch only the run this test submits.
        MLOPS_AUTOMATION="stopped",
    )
    s3_secret = {
        "AWS_ACCESS_KEY_ID": seaweed.access_key,
        "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
    }
    dagster_home = tmp_path / "dagster_home"
    home = tmp_path / "mlops"
    with KubernetesStandIn() as cluster:
        kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig")
        for manifest in (
            _secret(
                values["global"]["postgresqlSecretName"], {"postgresql-password": postgres.password}
            ),
            _secret("mlops-s3", s3_secret),
            _secret("mlops-alerts", {}),
        ):
            cluster.put("/api/v1", "secrets", manifest)
        for manifest in (
            _config_map("mlops-settings", settings),
            _config_map(f"{helm_chart.fullname()}-pipeline-env", helm_chart.pipeline_env(values)),
            _config_map(f"{helm_chart.fullname()}-{deployment['name']}-user-env", {}),
        ):
            cluster.put("/api/v1", "configmaps", manifest)

        env = project_env(home, dagster_home, **settings, **s3_secret)
        (dagster_home / "dagster.yaml").write_text(
            _instance_yaml(values, kubeconfig, postgres, "dagster_k8s_contract")
        )
        env |= {
            "DAGSTER_PG_PASSWORD": postgres.password,
            **{k: v for k, v in helm_chart.pipeline_env(values).items() if k != "DAGSTER_HOME"},
        }
        # The code server as the chart's user deployment runs it.
        port = free_port()
        code_server = ServerProcess(
            "code-server",
            [str(BIN / "dagster"), "api", "grpc", "-h", "127.0.0.1", "-p", str(port),
             *deployment["dagsterApiGrpcArgs"]],
            tmp_path / "code-server.log",
            env
            | {
                "DAGSTER_CURRENT_IMAGE": image,
                "DAGSTER_CLI_API_GRPC_CONTAINER_CONTEXT": json.dumps(
                    helm_chart.container_context(values, deployment)
                ),
            },
        )  # fmt: skip
        workspace = tmp_path / "workspace.yaml"
        workspace.write_text(
            yaml.safe_dump(
                {
                    "load_from": [
                        {
                            "grpc_server": {
                                "host": "127.0.0.1",
                                "port": port,
                                "location_name": "mlops_assets",
                            }
                        }
                    ]
                }
            )
        )
        daemon = ServerProcess(
            "dagster-daemon",
            [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)],
            tmp_path / "daemon.log",
            env,
        )
        code_server.start()
        try:
            wait_for(
                "the code server's gRPC health check (the chart's readiness probe)",
                lambda: (
                    subprocess.run(
                        [str(BIN / "dagster"), "api", "grpc-health-check", "-p", str(port)],
                        capture_output=True,
                    ).returncode
                    == 0
                ),
                120,
                [code_server.log],
            )
            # Both shipped models, from the one user-code deployment.
            for model_job in ("house_prices_refresh_model", "wine_cultivars_refresh_model"):
                launched = subprocess.run(
                    [str(BIN / "dagster"), "job", "launch", "-w", str(workspace),
                     "-l", "mlops_assets", "-j", model_job],
                    env={**os.environ, **env}, capture_output=True, text=True, timeout=300,
                )  # fmt: skip
                assert launched.returncode == 0, launched.stdout + launched.stderr
            daemon.start()
            try:
                jobs = wait_for(
                    "K8sRunLauncher to create both runs' Jobs",
                    lambda: (
                        found if len(found := cluster.list("/apis/batch/v1", "jobs")) == 2 else None
                    ),
                    180,
                    [daemon.log, code_server.log],
                )
            finally:
                daemon.stop()
        finally:
            code_server.stop()

        by_job = {j["metadata"]["labels"]["dagster/job"]: j for j in jobs}
        assert set(by_job) == {"house_prices_refresh_model", "wine_cultivars_refresh_model"}
        # The wine model's defs.yaml sizes its training runs smaller than the deployment's.
        from mlops_assets.lib.pod_resources import pod_size

        wine_container = by_job["wine_cultivars_refresh_model"]["spec"]["template"]["spec"][
            "containers"
        ][0]
        assert (
            wine_container["resources"]
            == pod_size("1", "1Gi", "2Gi")["container_config"]["resources"]
        )
        assert wine_container["image"] == image  # the same user-code image hosts every model
        job = by_job["house_prices_refresh_model"]
        _assert_job_as_deployed(
            job, values, image, secret_values=[postgres.password, seaweed.secret_key]
        )
        # Each Job's run worker as its pod would start it: its command, its container's env.
        commands = {}
        for name, launched_job in by_job.items():
            container = launched_job["spec"]["template"]["spec"]["containers"][0]
            commands[name] = (
                [*(container.get("command") or []), *container["args"]],
                cluster.container_env(launched_job["metadata"]["namespace"], container),
            )

    # The run worker finds the instance through the instance ref in its arguments (Postgres,
    # password by env var name only); the image's own env (PATH, MLOPS_HOME) is this machine's.
    machine = {
        "DAGSTER_HOME": str(dagster_home),
        "MLOPS_HOME": str(home),
        "PATH": env["PATH"],
        "GIT_PYTHON_REFRESH": "quiet",
    }
    workers = {}
    for name, (command, run_env) in commands.items():
        assert command[:3] == ["dagster", "api", "execute_run"]
        assert "postgres_db" in command[-1]
        # Both models' runs at once, as two pods would run them.
        workers[name] = subprocess.Popen(
            command,
            env=run_env | machine,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for name, worker in workers.items():
        output, _ = worker.communicate(timeout=600)
        assert worker.returncode == 0, f"{name}: {output[-3000:]}"

    from dagster import AssetKey, DagsterInstance, DagsterRunStatus
    from dagster._core.storage.tags import DOCKER_IMAGE_TAG

    os.environ["DAGSTER_PG_PASSWORD"] = postgres.password
    try:
        instance = DagsterInstance.from_config(str(dagster_home))
        for name, launched_job in by_job.items():
            model = name.removesuffix("_refresh_model")
            run_id = launched_job["metadata"]["labels"]["dagster/run-id"]
            run = instance.get_run_by_id(run_id)
            assert run is not None
            assert run.status == DagsterRunStatus.SUCCESS, name
            assert run.tags[DOCKER_IMAGE_TAG] == image
            for asset in ("raw_data", "versioned_dataset", "trained_model", "registered_model"):
                event = instance.get_latest_materialization_event(AssetKey([model, asset]))
                assert event is not None, (model, asset)
                assert event.run_id == run_id, (model, asset)
        instance.dispose()
    finally:
        del os.environ["DAGSTER_PG_PASSWORD"]


def _assert_job_as_deployed(
    job: dict[str, Any], values: dict[str, Any], image: str, secret_values: list[str]
) -> None:
    from mlops_assets.lib.pod_resources import training_pod

    errors = validate(job)
    assert not errors, f"the run Job is not valid Kubernetes {K8S_VERSION}: {errors}"
    meta = job["metadata"]
    assert meta["namespace"] == values["runLauncher"]["config"]["k8sRunLauncher"]["jobNamespace"]
    labels = meta["labels"]
    assert labels["dagster/job"] == "house_prices_refresh_model"
    assert labels["dagster/code-location"] == "mlops_assets"
    assert labels["app.kubernetes.io/part-of"] == "mlops-assets"
    assert labels["app.kubernetes.io/component"] == "run_worker"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400

    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == values["global"]["serviceAccountName"]
    assert pod["imagePullSecrets"] == values["imagePullSecrets"]
    assert pod["securityContext"]["runAsUser"] == 10001
    (container,) = pod["containers"]
    assert container["image"] == image
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # refresh_model trains: its run pod has the training size, not the standard one.
    assert container["resources"] == training_pod()["container_config"]["resources"]

    env_from = container["envFrom"]
    secrets = {e["secretRef"]["name"] for e in env_from if "secretRef" in e}
    config_maps = {e["configMapRef"]["name"] for e in env_from if "configMapRef" in e}
    assert secrets == {"mlops-s3", "mlops-alerts"}
    assert {"mlops-settings", f"{helm_chart.fullname()}-pipeline-env"} <= config_maps
    password = next(e for e in container["env"] if e["name"] == "DAGSTER_PG_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {
        "name": values["global"]["postgresqlSecretName"],
        "key": "postgresql-password",
    }
    text = json.dumps(job)
    for secret in secret_values:
        assert secret not in text, "a credential is written into the Job spec"
