"""The whole graph with its object store on a real S3 server (SeaweedFS)."""

import pytest

from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets_tests.conftest import PARTITION, materialized

# A real S3 server (SeaweedFS): the whole suite, not the fast lane.
pytestmark = pytest.mark.slow


def s3_keys(seaweed, root):
    prefix = root.removeprefix(f"s3://{seaweed.bucket}/")
    paginator = seaweed.client().get_paginator("list_objects_v2")
    return {
        item["Key"].removeprefix(prefix + "/")
        for page in paginator.paginate(Bucket=seaweed.bucket, Prefix=prefix)
        for item in page.get("Contents", [])
    }


def test_lifecycle_writes_every_artifact_to_s3(lifecycle, seaweed, s3_store, capfd):
    result = lifecycle.run()
    assert result.success
    keys = s3_keys(seaweed, s3_store)
    manifests = [
        k
        for k in keys
        if k.startswith("datasets/house_prices/versions/") and k.endswith("manifest.json")
    ]
    assert len(manifests) == 1
    assert "datasets/house_prices/refs/latest.json" in keys
    meta = materialized(result)
    assert meta["predictions"]["table"].value.startswith(
        f"{s3_store}/predictions/house-price-regressor/{PARTITION}/"
    )
    assert any(
        k.startswith(f"reports/drift/house-price-regressor/{PARTITION}/v1-")
        and k.endswith("/report.html")
        for k in keys
    )
    # Asset values are kept per run, beside the data.
    assert any(k.startswith("io/house_prices/registered_model/") for k in keys)
    assert any(k.startswith("raw/") and k.endswith("manifest.json") for k in keys)
    assert not (lifecycle.home / "store").exists()
    meta = materialized(result)["drift_report"]
    assert meta["report_html"].value.startswith(s3_store)

    # The S3 secret never reaches the event log, metadata or captured output.
    records = lifecycle.instance.all_logs(result.run_id)
    serialized = "\n".join(record.to_json() for record in records)
    assert seaweed.secret_key not in serialized
    captured = capfd.readouterr()
    assert seaweed.secret_key not in captured.out + captured.err


def test_raw_data_reads_an_s3_prefix(lifecycle, seaweed, s3_store, monkeypatch):
    client = seaweed.client()
    for part in (1, 2):
        client.put_object(
            Bucket=seaweed.bucket,
            Key=f"landing/{s3_store[-12:]}/part-{part}.csv",
            Body=to_csv_bytes(generate_house_prices(150, seed=part)),
        )
    monkeypatch.setenv("MLOPS_SOURCE_URI", f"s3://{seaweed.bucket}/landing/{s3_store[-12:]}/")
    result = lifecycle.run(assets=["raw_data", "versioned_dataset"])
    assert result.success
    assert materialized(result)["versioned_dataset"]["rows"].value == 300


def test_missing_s3_source_fails_naming_source_and_server(
    lifecycle, seaweed, s3_store, monkeypatch
):
    monkeypatch.setenv("MLOPS_SOURCE_URI", f"s3://{seaweed.bucket}/nowhere/houses.csv")
    result = lifecycle.run(assets=["raw_data"])
    assert not result.success
    from mlops_assets_tests.conftest import step_failure

    message = step_failure(result, "raw_data")
    assert "nowhere/houses.csv" in message
    assert seaweed.endpoint_url in message


def test_s3_outage_mid_run_recovers_and_leaves_no_half_written_version(
    lifecycle, tmp_path, monkeypatch
):
    import threading
    import time

    from mlops_assets.ml.dataset_store import DatasetStore
    from mlops_assets.resources.object_store import ObjectStoreResource, S3Config
    from mlops_assets.stack.seaweedfs import SeaweedS3

    server = SeaweedS3(data_dir=tmp_path / "s3", log_dir=tmp_path / "logs")
    server.start()
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    root = f"s3://{server.bucket}/outage"
    monkeypatch.setenv("MLOPS_OBJECT_STORE_ROOT", root)
    monkeypatch.setenv("MLOPS_SOURCE_URI", "sample://house-prices?rows=20000&seed=3")
    store = ObjectStoreResource(root=root, s3=S3Config(endpoint_url=server.endpoint_url))
    results = []
    run = threading.Thread(
        target=lambda: results.append(lifecycle.run(assets=["raw_data", "versioned_dataset"]))
    )
    try:
        run.start()
        deadline = time.monotonic() + 120
        while not any(k.endswith("manifest.json") for k in store.list_keys("raw/")):
            assert time.monotonic() < deadline, "raw snapshot never appeared"
            time.sleep(0.05)
        server.stop()  # the run goes on into the raw checks and versioned_dataset
        time.sleep(3)
        server.start()
        run.join(timeout=300)
        assert not run.is_alive(), "the run did not finish"
        [result] = results
        retried = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert retried, "the outage never reached the run"
        assert result.success, "the run did not recover once the store was back"

        datasets = DatasetStore(store, "house_prices")
        latest = datasets.ref("latest")
        assert latest is not None
        assert datasets.verify(latest) == []
        for key in store.list_keys("datasets/house_prices/versions/"):
            manifest = datasets.manifest(key.split("/")[3])
            if manifest is not None:  # a visible version is complete and intact
                assert datasets.verify(manifest) == []
    finally:
        server.stop(grace_seconds=0)
