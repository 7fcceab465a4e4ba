"""The whole graph against real servers: SeaweedFS S3, and an MLflow tracking server backed by
PostgreSQL with its artifacts in S3. Each result is read back through the server's own client."""

import pytest
from mlflow import MlflowClient

from mlops_assets_tests.conftest import PARTITION, check_evaluations

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
    client.head_object(
        Bucket=seaweed.bucket, Key=f"{prefix}/predictions/{model}/{PARTITION}.parquet"
    )

    # Neither the S3 secret nor the Postgres password appears in the event log or output.
    serialized = "\n".join(r.to_json() for r in lifecycle.instance.all_logs(result.run_id))
    captured = capfd.readouterr()
    for secret in (seaweed.secret_key, mlflow_stack["postgres"].password):
        assert secret not in serialized
        assert secret not in captured.out + captured.err
