"""served_traffic over logs the model server's own TrafficLog wrote into the object store (the
real image and server processes writing such logs are tested in model_server/test_server.py and
assets/test_serving.py): the table, its version, its checks, and what a bad log does."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from dagster import DagsterInstance, Definitions, build_sensor_context

from mlops_assets.components.lifecycle.settings import PolicySettings
from mlops_assets.components.lifecycle.traffic.assets import build_traffic_assets
from mlops_assets.definitions import build_resources
from mlops_assets.ml.dataset_store import parquet_to_frame
from mlops_assets.ml.estimator import model_input
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.traffic import labels_day_prefix
from mlops_assets.model_server.record import Exchange
from mlops_assets.model_server.traffic_log import FolderSink, TrafficLog
from mlops_assets.resources.object_store import ObjectStoreResource
from mlops_assets_tests.conftest import (
    Lifecycle,
    check_evaluations,
    job_name,
    key,
    materialized,
    model_sensor,
    scope_of,
    step,
    step_failure,
    stored_report,
)

MODEL = "house-price-regressor"
DAY = "2026-11-20"
NOON = datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp()


@pytest.fixture
def store(tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    monkeypatch.setenv("MLOPS_PARTITIONS_START", "2026-11-01")
    return tmp_path / "store"


def log_traffic(store: Path, requests: int, refused: int = 0, extra_column: bool = False) -> None:
    """Write a day of traffic as the server does: answered requests of one or two rows, and
    ``refused`` 400s."""
    rows = model_input(generate_house_prices(2 * requests, seed=3), HOUSE_PRICES)
    if extra_column:
        rows = rows.assign(colour="red")
    log = TrafficLog(FolderSink(str(store)), MODEL, "4", capacity=10_000, flush_seconds=60)
    for i in range(requests):
        frame = rows.iloc[2 * i : 2 * i + 1 + i % 2]
        answer = json.dumps({"predictions": [5e6 + j for j in range(len(frame))]})
        log.record(Exchange(f"r{i}", NOON + i, 0.01, 200, frame, answer))
    for i in range(refused):
        error = json.dumps({"message": "Model is missing inputs ['area']"})
        log.record(Exchange(f"bad{i}", NOON + i, 0.002, 400, error=error, body=b"{}"))
    log.flush()


def materialize(store: Path, day: str = DAY, instance: DagsterInstance | None = None) -> Any:
    defs = build_traffic_assets(scope_of({}))
    resources = {**build_resources(), "object_store": ObjectStoreResource(root=str(store))}
    job = Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, resources=resources
    ).resolve_implicit_global_asset_job_def()
    # served_traffic alone: traffic_drift_report needs a registered model (tested below).
    return job.execute_in_process(
        instance=instance or DagsterInstance.ephemeral(),
        partition_key=day,
        raise_on_error=False,
        asset_selection=[key("served_traffic")],
    )


def checks_of(result: Any) -> dict[str, Any]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_a_day_of_traffic_becomes_one_versioned_table_with_passing_checks(store: Path) -> None:
    log_traffic(store, requests=30)
    result = materialize(store)
    assert result.success
    (event,) = result.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["requests_answered"].value == 30
    assert metadata["rows"].value == 45  # every other request has two rows
    assert metadata["requests_refused"].value == 0
    assert metadata["model_versions"].value == "4"
    (first,) = (store / "served_traffic" / MODEL / DAY).glob("*.parquet")
    assert first.name in str(metadata["table"].value)
    table = parquet_to_frame(first.read_bytes())
    assert list(table.columns[:5]) == ["request_id", "row", "time", "model_version", "latency_ms"]
    assert set(HOUSE_PRICES.feature_columns) <= set(table.columns)
    assert table["prediction"].min() == 5e6
    assert table["time"].dt.tz is not None
    assert all(check.passed for check in checks_of(result).values()), checks_of(result)

    # The same log is the same version; more traffic is a new one beside it.
    assert materialize(store).success
    assert list((store / "served_traffic" / MODEL / DAY).glob("*.parquet")) == [first]
    time.sleep(1)  # a new file name (the window's time stamp)
    log_traffic(store, requests=5)
    assert materialize(store).success
    assert len(list((store / "served_traffic" / MODEL / DAY).glob("*.parquet"))) == 2
    assert first.exists()


def test_refusals_and_unlogged_requests_above_their_limits_fail_their_checks(
    store: Path,
) -> None:
    log_traffic(store, requests=20, refused=3)
    dropped = {"kind": "dropped", "time": f"{DAY}T12:30:00.000+00:00", "count": 2}
    folder = store / "traffic" / MODEL / f"date={DAY}"
    (folder / "123000-w-000009.jsonl").write_text(json.dumps(dropped) + "\n")

    checks = checks_of(materialize(store))
    refused = checks["refused_share_below_threshold"]
    assert not refused.passed
    assert "3 of 23 requests refused (13.0%, limit 5.0%)" in refused.description
    assert "Model is missing inputs ['area']" in refused.description
    unlogged = checks["unlogged_share_below_threshold"]
    assert not unlogged.passed
    assert "2 of 25 requests answered but not logged (8.0%, limit 1.0%)" in unlogged.description
    assert checks["traffic_matches_signature"].passed


def test_rows_with_columns_the_model_does_not_take_fail_the_signature_check(store: Path) -> None:
    log_traffic(store, requests=4, extra_column=True)
    check = checks_of(materialize(store))["traffic_matches_signature"]
    assert not check.passed
    assert check.description == "column 'colour' is not a model input (6 rows have it)"


def test_a_day_without_traffic_is_empty_and_a_broken_line_fails_and_says_where(store: Path) -> None:
    # A day nothing was served is an empty table (the UI's "Materialize all" includes it).
    instance = DagsterInstance.ephemeral()
    empty = materialize(store, instance=instance)
    assert empty.success
    metadata = empty.get_asset_materialization_events()[0].materialization.metadata
    assert (metadata["requests_answered"].value, metadata["rows"].value) == (0, 0)
    assert all(check.passed for check in checks_of(empty).values())
    logged = [entry.user_message for entry in instance.all_logs(empty.run_id)]
    assert any(f"no traffic logged for {DAY}: nothing under" in m for m in logged)
    empty_tables = list((store / "served_traffic").rglob("*.parquet"))

    log_traffic(store, requests=2)
    broken = store / "traffic" / MODEL / f"date={DAY}" / "000000-w-000001.jsonl"
    broken.write_text('{"kind": "dropped", "count": 0}\n{not json\n')
    result = materialize(store)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "000000-w-000001.jsonl, line 2: not a traffic log record" in str(
        failure.event_specific_data
    )
    # No table of a log it could not read.
    assert list((store / "served_traffic").rglob("*.parquet")) == empty_tables


def test_a_record_without_its_fields_is_named() -> None:
    from mlops_assets.ml.traffic import TrafficUnreadable, read_traffic

    with pytest.raises(TrafficUnreadable, match=r"a\.jsonl, line 1: an answer record without "
                       r"request_id, row"):  # fmt: skip
        read_traffic(
            [("a.jsonl", b'{"kind": "answer", "time": "x", "inputs": {}}\n')], HOUSE_PRICES
        )


# --- late labels, and drift and quality of the served traffic ------------------------------


def serve(state: Lifecycle, frame: pd.DataFrame, label: str, day: str = DAY) -> None:
    """Log ``frame`` one row per request as the served champion (v1) answers it, on ``day``."""
    model = scope_of({}).view("mlflow", build_resources()["mlflow"]).load_model("1")
    inputs = model_input(frame, HOUSE_PRICES)
    predictions = model.predict(inputs)
    log = TrafficLog(
        FolderSink(str(state.home / "store")), MODEL, "1", capacity=10_000, flush_seconds=60
    )
    start = datetime.fromisoformat(f"{day}T08:00:00+00:00").timestamp()
    for i in range(len(inputs)):
        answer = json.dumps({"predictions": [float(predictions[i])]})
        log.record(Exchange(f"{label}-{i}", start + i, 0.01, 200, inputs.iloc[i : i + 1], answer))
    log.flush()


def label(state: Lifecycle, frame: pd.DataFrame, name: str, day: str = DAY) -> Path:
    """The true prices of ``name``'s requests, as a labelling process writes them later."""
    folder = state.home / "store" / labels_day_prefix(MODEL, day)
    folder.mkdir(parents=True, exist_ok=True)
    labels = pd.DataFrame(
        {"request_id": [f"{name}-{i}" for i in range(len(frame))], "price": frame["price"]}
    )
    path = folder / f"{name}.csv"
    path.write_bytes(to_csv_bytes(labels))
    return path


def test_live_traffic_like_training_passes_drift_and_with_labels_quality(
    trained: Lifecycle,
) -> None:
    calm = generate_house_prices(300, seed=5)
    serve(trained, calm, "calm")
    result = trained.run("collect_traffic", partition=DAY)
    assert result.success
    checks = check_evaluations(result)
    assert checks[("traffic_drift_report", "drift_share_below_threshold")].passed
    unlabelled = checks[("traffic_drift_report", "quality_not_degraded")]
    assert (unlabelled.passed, unlabelled.description) == (
        True,
        "traffic has no labels; quality not measured",
    )
    report = materialized(result)["traffic_drift_report"]
    assert (report["traffic_rows"].value, report["model_version"].value) == (300, "1")
    folder = stored_report(trained.home, "traffic_drift", MODEL, DAY, "1")
    assert (folder / "report.html").stat().st_size > 10_000

    # The labels come: the day's table gains the target, and live quality is measured.
    label(trained, calm, "calm")
    labelled = trained.run("collect_traffic", partition=DAY)
    assert labelled.success
    traffic = materialized(labelled)["served_traffic"]
    assert (traffic["labelled_rows"].value, traffic["labels_matching_no_row"].value) == (300, 0)
    quality = check_evaluations(labelled)[("traffic_drift_report", "quality_not_degraded")]
    assert quality.passed, quality.description
    assert quality.description.startswith("traffic rmse ")
    assert len(list((trained.home / f"store/served_traffic/{MODEL}/{DAY}").glob("*"))) == 2


def test_drifted_live_traffic_fails_drift_and_quality_and_the_policy_rolls_back(
    trained: Lifecycle,
) -> None:
    policy_sensor = model_sensor(
        "drift_policy", {"policy": PolicySettings(drift_policy="rollback")}
    )

    def tick(cursor: str | None) -> Any:
        with build_sensor_context(instance=trained.instance, cursor=cursor) as context:
            return policy_sensor(context)

    cursor = tick(None).cursor
    drifted = generate_house_prices(300, seed=6, drift=True)
    serve(trained, drifted, "drifted")
    label(trained, drifted, "drifted")
    result = trained.run("collect_traffic", partition=DAY)
    checks = check_evaluations(result)
    drift = checks[("traffic_drift_report", "drift_share_below_threshold")]
    quality = checks[("traffic_drift_report", "quality_not_degraded")]
    assert (drift.passed, drift.severity.value) == (False, "WARN")
    assert (quality.passed, quality.severity.value) == (False, "ERROR")
    assert "traffic rmse" in quality.description
    assert "champion v1" in quality.description
    assert trained.state()["aliases"]["champion"] == "1"  # a check never moves the alias

    # The drift policy reads the live traffic's failed quality check and rolls back v1.
    [request] = tick(cursor).run_requests
    assert request.job_name == job_name("rollback_champion")
    config = request.run_config["ops"][step("point_champion_back")]["config"]
    assert config["only_if_champion"] == "1"
    assert "traffic_drift_report.quality_not_degraded" in config["reason"]


def test_bad_labels_fail_served_traffic_naming_file_column_rows_and_rule(
    trained: Lifecycle,
) -> None:
    rows = generate_house_prices(20, seed=7)
    serve(trained, rows, "r")
    assert trained.run("collect_traffic", partition=DAY).success
    kept = sorted((trained.home / f"store/served_traffic/{MODEL}/{DAY}").glob("*"))

    path = label(trained, rows.assign(price=rows["price"].astype(object)), "r")
    text = path.read_text().splitlines()
    text[3] = "r-2,cheap"
    path.write_text("\n".join([*text, "r-0,100000"]) + "\n")
    result = trained.run("collect_traffic", partition=DAY)
    message = step_failure(result, "served_traffic")
    assert f"labels for {DAY} under " in message
    where = f"file '{labels_day_prefix(MODEL, DAY)}r.csv'"
    assert f"{where}, column 'price', row 3: 1 non-numeric value (e.g. 'cheap')" in message
    assert "(rule: numeric column)" in message
    assert f"{where}, column 'request_id, row', row 21: 1 row labels a request" in message
    assert "(rule: one label per answered row)" in message
    # Nothing written of a day it could not label; the versions before stay.
    assert sorted((trained.home / f"store/served_traffic/{MODEL}/{DAY}").glob("*")) == kept
