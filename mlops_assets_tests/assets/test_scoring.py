"""predictions and drift_report: batch inference of a day's batch and its Evidently report."""

import json

import pandas as pd

from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets_tests.conftest import (
    PARTITION,
    check_evaluations,
    materialized,
    step_failure,
    stored_predictions,
    stored_report,
)

SCORING = ["predictions", "drift_report"]


def test_predictions_score_every_row_with_the_champion(trained):
    result = trained.run(assets=["predictions"], partition="2026-11-19")
    assert result.success
    meta = materialized(result)["predictions"]
    assert meta["model_version"].value == "1"
    [path] = stored_predictions(trained.home, "house-price-regressor", "2026-11-19")
    assert meta["table"].value == path.as_uri()  # beside the IO manager's own "path" entry
    scored = pd.read_parquet(path)
    assert len(scored) == meta["rows"].value == 400
    assert scored["prediction"].notna().all()
    assert (scored["model_version"] == "1").all()
    # Same champion, same rows: the same predictions as the in-process model.
    from mlflow import pyfunc

    from mlops_assets.ml.estimator import model_input
    from mlops_assets.ml.spec import HOUSE_PRICES

    model = pyfunc.load_model("models:/house-price-regressor@champion")
    expected = model.predict(model_input(scored, HOUSE_PRICES))
    assert abs(scored["prediction"].to_numpy() - expected).max() < 1e-6


def test_each_partition_scores_its_own_batch(trained):
    a = trained.run(assets=["predictions"], partition="2026-11-18")
    b = trained.run(assets=["predictions"], partition="2026-11-17")
    mean_a = materialized(a)["predictions"]["prediction_mean"].value
    mean_b = materialized(b)["predictions"]["prediction_mean"].value
    assert mean_a != mean_b
    assert "seed=20261118" in materialized(a)["predictions"]["batch"].value


def test_drift_report_is_saved_as_html_and_json(trained):
    result = trained.run(assets=SCORING)
    assert result.success
    meta = materialized(result)["drift_report"]
    folder = stored_report(trained.home, "drift", "house-price-regressor", PARTITION, "1")
    report = json.loads((folder / "report.json").read_text())
    assert any("DriftedColumnsCount" in m["metric_name"] for m in report["metrics"])
    assert (folder / "report.html").stat().st_size > 10_000
    assert meta["drift_share"].value < 0.3
    assert "| area |" in meta["column_drift"].value
    evaluations = check_evaluations(result)
    assert evaluations[("drift_report", "drift_share_below_threshold")].passed
    assert evaluations[("drift_report", "quality_not_degraded")].passed


def test_drifted_batch_fails_drift_and_quality_checks(trained, monkeypatch):
    monkeypatch.setenv("MLOPS_INCOMING_URI", "sample://house-prices?rows=600&seed={day}&drift=1")
    result = trained.run(assets=SCORING)
    evaluations = check_evaluations(result)
    drift = evaluations[("drift_report", "drift_share_below_threshold")]
    quality = evaluations[("drift_report", "quality_not_degraded")]
    assert not drift.passed
    assert drift.severity.value == "WARN"
    assert not quality.passed
    assert quality.severity.value == "ERROR"
    assert "batch rmse" in quality.description
    assert trained.state()["aliases"]["champion"] == "1"


def test_unlabelled_batch_is_scored_and_reports_drift_only(trained, monkeypatch, tmp_path):
    batch = generate_house_prices(300, seed=9).drop(columns=["price"])
    (tmp_path / f"{PARTITION}.csv").write_bytes(to_csv_bytes(batch))
    monkeypatch.setenv("MLOPS_INCOMING_URI", str(tmp_path / "{date}.csv"))
    result = trained.run(assets=SCORING)
    assert result.success
    quality = check_evaluations(result)[("drift_report", "quality_not_degraded")]
    assert quality.passed
    assert "no labels" in quality.description


def test_missing_batch_fails_predictions_naming_the_day(trained, monkeypatch, tmp_path):
    monkeypatch.setenv("MLOPS_INCOMING_URI", str(tmp_path / "{date}.csv"))
    result = trained.run(assets=["predictions"])
    message = step_failure(result, "predictions")
    assert f"cannot read the incoming batch {tmp_path}/{PARTITION}.csv for {PARTITION}" in message
    assert f"{PARTITION}.csv does not exist" in message


def test_rows_breaking_a_rule_are_set_aside_and_the_rest_scored(trained, monkeypatch, tmp_path):
    batch = generate_house_prices(50, seed=9).astype({"parking": object, "area": object})
    batch.loc[[0, 4], "parking"] = "garage"
    batch.loc[4, "area"] = "-5"  # the same row breaks two rules
    batch.loc[7, "area"] = None  # a blank: the model imputes it
    (tmp_path / f"{PARTITION}.csv").write_bytes(to_csv_bytes(batch))
    monkeypatch.setenv("MLOPS_INCOMING_URI", str(tmp_path / "{date}.csv"))
    [earlier] = stored_predictions(trained.home, "house-price-regressor")
    earlier_bytes = earlier.read_bytes()  # the baseline scored this day already

    result = trained.run(assets=["predictions"])

    assert result.success
    meta = materialized(result)["predictions"]
    assert (meta["rows"].value, meta["quarantined_rows"].value) == (48, 2)
    assert meta["received_rows"].value == 50
    assert "| area | 1 |" in meta["blanks_imputed"].value
    scored = pd.read_parquet(meta["table"].value.removeprefix("file://"))
    assert sorted(scored["source_row"]) == [r for r in range(1, 51) if r not in (1, 5)]
    assert scored["prediction"].notna().all()
    quarantine = pd.read_parquet(meta["quarantine"].value.removeprefix("file://"))
    assert list(quarantine["row"]) == [1, 5]
    assert list(quarantine["line"]) == [2, 6]
    assert quarantine["rules"][0] == "column 'parking': numeric column"
    assert quarantine["rules"][1] == (
        "column 'area': values must be >= 100; column 'parking': numeric column"
    )
    assert json.loads(quarantine["values"][1])["area"] == "-5"  # as written
    evaluations = check_evaluations(result)
    kept = evaluations[("predictions", "quarantine_share_within_limit")]
    assert (kept.passed, kept.severity.value) == (False, "WARN")
    assert "2 rows of 50 (4.0%) set aside, within the limit of 10%" in kept.description
    assert f"file '{PARTITION}.csv', row 5 (line 6): column 'area'" in kept.description
    assert evaluations[("predictions", "one_prediction_per_row")].passed
    assert earlier.read_bytes() == earlier_bytes


def test_a_column_of_the_wrong_type_rejects_the_whole_batch(trained, monkeypatch, tmp_path):
    batch = generate_house_prices(50, seed=9).astype({"parking": object})
    batch.loc[:40, "parking"] = "garage"
    (tmp_path / f"{PARTITION}.csv").write_bytes(to_csv_bytes(batch))
    monkeypatch.setenv("MLOPS_INCOMING_URI", str(tmp_path / "{date}.csv"))
    before = stored_predictions(trained.home, "house-price-regressor")

    result = trained.run(assets=["predictions"])

    message = step_failure(result, "predictions")
    assert "rejected, nothing scored" in message
    assert f"file '{PARTITION}.csv', column 'parking', rows 1, 2" in message
    assert "41 of 50 rows, more than 50%, so the column itself is wrong" in message
    assert stored_predictions(trained.home, "house-price-regressor") == before


def test_many_rows_set_aside_fail_the_quarantine_check(trained, monkeypatch, tmp_path):
    batch = generate_house_prices(50, seed=9).astype({"furnishingstatus": object})
    batch.loc[:9, "furnishingstatus"] = "luxury"  # 10 of 50: 20%
    (tmp_path / f"{PARTITION}.csv").write_bytes(to_csv_bytes(batch))
    monkeypatch.setenv("MLOPS_INCOMING_URI", str(tmp_path / "{date}.csv"))

    result = trained.run(assets=["predictions"])

    kept = check_evaluations(result)[("predictions", "quarantine_share_within_limit")]
    assert (kept.passed, kept.severity.value) == (False, "ERROR")
    assert "10 rows of 50 (20.0%) set aside, over the limit of 10%" in kept.description
    assert "values must be one of" in kept.description


def test_plausible_range_never_reaches_past_the_target_bounds_of_the_spec(tmp_path):
    from mlops_assets.components.lifecycle.scoring.assets import (
        plausible_range,
        predictions_in_plausible_range,
    )
    from mlops_assets.ml.dataset_store import frame_to_parquet
    from mlops_assets.records import ScoredBatch
    from mlops_assets.resources.dataset_source import DatasetSourceResource
    from mlops_assets.resources.object_store import ObjectStoreResource

    # Trained on prices 10..110: the half-span margin alone would allow -40.
    assert plausible_range(10, 110, None, None) == (-40, 160)
    assert plausible_range(10, 110, 0, None) == (0, 160)
    assert plausible_range(10, 110, 0, 120) == (0, 120)

    store = ObjectStoreResource(root=str(tmp_path))
    scored = pd.DataFrame({"prediction": [-5.0, 50.0, 100.0]})
    store.put_bytes("predictions/day.parquet", frame_to_parquet(scored))
    handle = ScoredBatch(
        key="predictions/day.parquet",
        rows=3,
        input_rows=3,
        model_version="1",
        batch_uri="unused",
        train_target_min=10.0,
        train_target_max=110.0,
    )
    source = DatasetSourceResource(source_uri="unused", incoming_uri="unused")
    result = predictions_in_plausible_range(
        predictions=handle, dataset_source=source, object_store=store
    )
    assert not result.passed  # the house-price spec says price >= 0
    assert "1 of 3 predictions outside [0, 160], rows 1" in result.description
    assert "1 break the bounds of target 'price' in the spec" in result.description
    assert result.metadata["outside_spec_bounds"].value == 1
