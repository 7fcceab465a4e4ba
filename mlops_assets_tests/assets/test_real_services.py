"""The whole graph against real servers: SeaweedFS S3, and an MLflow tracking server backed by
PostgreSQL with its artifacts in S3. Each result is read back through the server's own client."""

from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops_assets.ml.champion_history import history_from_tags
from mlops_assets_tests.conftest import PARTITION, check_evaluations
from mlops_assets_tests.conftest import step as conftest_step

# Runs the graph against real Postgres, SeaweedFS and MLflow servers, stopping them mid-run.
pytestmark = pytest.mark.slow

MODEL = "house-price-regressor"


@pytest.fixture
def on_servers(lifecycle, seaweed, s3_store, mlflow_stack, monkeypatch, request):
    uri = mlflow_stack["mlflow"].tracking_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # One model name per test: the tracking server outlives the test.
    monkeypatch.setenv("MLOPS_MODEL_NAME", f"{MODEL}-{request.node.name[-20:]}".replace("_", "-"))
    monkeypatch.setenv("MLOPS_EXPERIMENT", request.node.name)
    return MlflowClient(uri, uri)


def test_lifecycle_against_the_servers(
    lifecycle, seaweed, s3_store, mlflow_stack, on_servers, capfd
):
    import os

    model = os.environ["MLOPS_MODEL_NAME"]
    result = lifecycle.run()
    assert result.success, [
        e.check_name for e in check_evaluations(result).values() if not e.passed
    ]

    champion = on_servers.get_model_version_by_alias(model, "champion")
    assert champion.version == "1"
    run = on_servers.get_run(champion.run_id)
    assert run.data.tags["mlops.dataset_tag"] == "data-v1.0.0"

    # Artifacts went through the server into S3, not onto local disk.
    artifact_keys = [
        item["Key"]
        for page in seaweed.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket=seaweed.bucket, Prefix="mlartifacts/")
        for item in page.get("Contents", [])
    ]
    assert any(key.endswith("MLmodel") for key in artifact_keys)
    assert not (lifecycle.home / "mlartifacts").exists()
    assert not (lifecycle.home / "mlflow.db").exists()
    prefix = s3_store.removeprefix(f"s3://{seaweed.bucket}/")
    client = seaweed.client()
    scored = client.list_objects_v2(
        Bucket=seaweed.bucket, Prefix=f"{prefix}/predictions/{model}/{PARTITION}/"
    )
    assert scored["KeyCount"] == 1

    # The classifier's whole lifecycle beside it, on the same servers and bucket: its own
    # registered model, dataset and predictions; the house-price model's champion stays.
    wine = lifecycle.run("wine_cultivars_mlops_lifecycle")
    assert wine.success, [e.check_name for e in check_evaluations(wine).values() if not e.passed]
    wine_champion = on_servers.get_model_version_by_alias("wine-cultivar-classifier", "champion")
    assert wine_champion.version == "1"
    assert on_servers.get_model_version_by_alias(model, "champion").version == "1"
    for stored in (
        f"{prefix}/predictions/wine-cultivar-classifier/{PARTITION}/",
        f"{prefix}/datasets/wine_cultivars/refs/latest.json",
    ):
        assert client.list_objects_v2(Bucket=seaweed.bucket, Prefix=stored)["KeyCount"] >= 1

    # Neither the S3 secret nor the Postgres password appears in the event log or output.
    serialized = "\n".join(r.to_json() for r in lifecycle.instance.all_logs(result.run_id))
    captured = capfd.readouterr()
    for secret in (seaweed.secret_key, mlflow_stack["postgres"].password):
        assert secret not in serialized
        assert secret not in captured.out + captured.err
    # Nor in any process's command line (what `ps` shows every user): the MLflow server's
    # store URI travels in its environment.
    command_lines = []
    for entry in Path("/proc").iterdir():
        try:
            command_lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    assert any(" server --artifacts-destination" in c for c in command_lines)
    assert not [c for c in command_lines if mlflow_stack["postgres"].password in c]


def test_a_reused_run_shows_its_search_read_back_through_the_server(
    lifecycle, on_servers, monkeypatch
):
    from mlops_assets.resources.mlflow_registry import SEARCH_PICTURE, MlflowResource
    from mlops_assets_tests.conftest import materialized

    monkeypatch.setenv("MLOPS_MODEL_TYPE", "ridge")
    monkeypatch.setenv("MLOPS_SEARCH_TRIALS", "2")
    trained = lifecycle.run(assets=["raw_data", "versioned_dataset", "trained_model"])
    assert trained.success
    first = materialized(trained)["trained_model"]
    reused = materialized(lifecycle.run(assets=["trained_model"]))["trained_model"]

    assert (first["trained"].value, reused["trained"].value) == (True, False)
    search = {key for key in first if key.startswith("search_")}
    assert {k: reused[k] for k in search} == {k: first[k] for k in search}
    assert reused["search_history_plot"].value.startswith("mlflow-artifacts:/")
    mlflow = MlflowResource(tracking_uri=on_servers.tracking_uri)
    picture = mlflow.read_logged_file(reused["mlflow_run_id"].value, SEARCH_PICTURE)
    assert picture[:8] == b"\x89PNG\r\n\x1a\n"


def _step_events(instance, run_id, step):
    return {
        e.dagster_event.event_type_value
        for e in instance.all_logs(run_id)
        if e.dagster_event and e.step_key == conftest_step(step)
    }


def test_concurrent_registrations_promote_exactly_once(
    lifecycle, seaweed, s3_store, mlflow_stack, on_servers, tmp_path, monkeypatch
):
    """Two real dagster processes register the same trained model at the same moment.

    Serialised, the first registers it and makes it champion; the second finds it registered
    and decided, and changes nothing. Racing, both would find it unregistered and no champion:
    two versions, two promotions. The model's lease (a conditional PUT in the S3 bucket)
    serialises them; Dagster's concurrency pool, used before, let both in once in CI (its slot
    claim is a read, then a write).

    The Dagster instance is the stack's (prepare_dagster_home): PostgreSQL, its tables made up
    front, since two processes creating them together collide.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    from dagster import DagsterInstance

    from mlops_assets.stack.cli import prepare_dagster_home
    from mlops_assets_tests.conftest import Lifecycle, project_free_env

    model = os.environ["MLOPS_MODEL_NAME"]
    dagster_home = tmp_path / "stack_dagster_home"
    dagster_postgres = mlflow_stack["postgres"].url("dagster", driver="postgresql+psycopg2")
    prepare_dagster_home(dagster_home, dagster_postgres)
    monkeypatch.setenv("MLOPS_DAGSTER_POSTGRES_URL", dagster_postgres)
    # Trained on the same instance the two processes register on: its materialisation of
    # trained_model says which stored value is current.
    with DagsterInstance.from_config(str(dagster_home)) as instance:
        stack = Lifecycle(home=lifecycle.home, instance=instance)
        assert stack.run(assets=["raw_data", "versioned_dataset", "trained_model"]).success
    settings = {k: v for k, v in os.environ.items() if k.startswith(("MLOPS_", "MLFLOW_", "AWS_"))}
    env = {
        **project_free_env(),
        **settings,
        "DAGSTER_HOME": str(dagster_home),
        "MLOPS_DAGSTER_POSTGRES_URL": dagster_postgres,
        "GIT_PYTHON_REFRESH": "quiet",
    }
    command = [
        str(Path(sys.executable).parent / "dagster"),
        "asset",
        "materialize",
        "-m",
        "mlops_assets.definitions",
        "--select",
        "house_prices/registered_model",
    ]
    processes = [
        subprocess.Popen(
            command,
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    versions = on_servers.search_model_versions(f"name='{model}'")
    logs = "\n".join(f"--- process {i}:\n{output[-6000:]}" for i, output in enumerate(outputs))
    assert sorted(int(v.version) for v in versions) == [1], logs
    history = history_from_tags(on_servers.get_registered_model(model).tags)
    assert [(e.kind, e.from_version, e.to_version) for e in history] == [
        ("promotion", None, "1")
    ], logs
    assert on_servers.get_model_version_by_alias(model, "champion").version == "1"
    assert on_servers.get_model_version_by_alias(model, "challenger").version == "1"

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        runs = [r for r in instance.get_runs() if "registered_model" in str(r.asset_selection)]
        steps = [_step_events(instance, r.run_id, "registered_model") for r in runs]
    assert len(steps) == 2
    assert all({"STEP_START", "STEP_SUCCESS"} <= events for events in steps), steps


def test_mlflow_down_during_registration_fails_clearly_and_keeps_the_champion(
    lifecycle, seaweed, s3_store, mlflow_stack, monkeypatch, request
):
    from mlops_assets.stack.mlflow_server import MlflowServer
    from mlops_assets_tests.conftest import step_failure

    # A private server on the shared Postgres, so stopping it harms no other test.
    server = MlflowServer.on_stack(
        mlflow_stack["postgres"], seaweed, mlflow_stack["logs"] / "fault"
    )
    server.start()
    uri = server.tracking_uri
    model = f"fault-{request.node.name[-12:]}".replace("_", "-")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLOPS_MODEL_NAME", model)
    monkeypatch.setenv("MLOPS_EXPERIMENT", request.node.name)
    # Keep MLflow's own HTTP retries short; Dagster's retry policy still applies on top.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    try:
        assert lifecycle.run(
            assets=["raw_data", "versioned_dataset", "trained_model", "registered_model"]
        ).success
        # A new challenger to register (unchanged data and config would reuse v1's run).
        force = {"ops": {"trained_model": {"config": {"force_retrain": True}}}}
        assert lifecycle.run(assets=["trained_model"], run_config=force).success
        server.stop()

        result = lifecycle.run(assets=["registered_model"])

        assert not result.success
        message = step_failure(result, "registered_model")
        assert uri.removeprefix("http://") in message
        retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retried) == 3
    finally:
        server.start()  # same port: the registry comes back as it was
    client = MlflowClient(uri, uri)
    assert client.get_model_version_by_alias(model, "champion").version == "1"
    assert [v.version for v in client.search_model_versions(f"name='{model}'")] == ["1"]
    server.stop()
