import numpy as np
import pytest

from mlops_assets.ml.dataset import clean, split
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.tabular import TableFile, read_validated
from mlops_assets.ml.train import TrainingConfig, fit, model_input, regression_metrics


@pytest.fixture(scope="module")
def splits():
    frame = read_validated(
        [TableFile("h.csv", to_csv_bytes(generate_house_prices(3000, seed=4)))], HOUSE_PRICES
    ).frame
    return split(clean(frame, HOUSE_PRICES)[0], HOUSE_PRICES)


@pytest.mark.parametrize("model_type", ["hist_gradient_boosting", "ridge", "random_forest"])
def test_every_model_type_beats_the_median_baseline(splits, model_type):
    params = {"n_estimators": 30} if model_type == "random_forest" else {}
    result = fit(splits, HOUSE_PRICES, TrainingConfig(model_type, params))
    m = result.metrics
    assert m["test_rmse"] < 0.8 * m["baseline_test_rmse"]
    assert m["test_r2"] > 0.5
    assert m["train_target_min"] <= m["train_target_max"]


def test_pipeline_takes_raw_columns_and_ignores_unknown_categories(splits):
    result = fit(splits, HOUSE_PRICES, TrainingConfig("ridge"))
    rows = model_input(splits["test"].head(3), HOUSE_PRICES)
    rows.loc[rows.index[0], "furnishingstatus"] = "palatial"
    rows.loc[rows.index[1], "area"] = np.nan
    assert np.isfinite(result.pipeline.predict(rows)).all()


def test_same_config_gives_same_model(splits):
    a = fit(splits, HOUSE_PRICES, TrainingConfig(random_state=3)).metrics
    b = fit(splits, HOUSE_PRICES, TrainingConfig(random_state=3)).metrics
    assert a == b


def test_unknown_model_type_is_refused():
    with pytest.raises(ValueError, match="model_type 'xgb'"):
        TrainingConfig("xgb")


def test_regression_metrics_on_known_values():
    m = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert m["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert m["mae"] == pytest.approx(2 / 3)
    assert m["r2"] == pytest.approx(1 - 4 / 2)


def test_training_fingerprint_follows_data_config_and_code(monkeypatch, tmp_path):
    from pathlib import Path

    import mlops_assets.ml.train as train
    from mlops_assets.ml.train import TrainingConfig, training_fingerprint

    base = training_fingerprint("digest-a", TrainingConfig())
    assert training_fingerprint("digest-a", TrainingConfig()) == base
    assert training_fingerprint("digest-b", TrainingConfig()) != base
    assert training_fingerprint("digest-a", TrainingConfig(params={"max_iter": 10})) != base
    assert training_fingerprint("digest-a", TrainingConfig(random_state=1)) != base
    edited = tmp_path / "train.py"
    edited.write_bytes(Path(train.__file__).read_bytes() + b"\n# a changed line\n")
    monkeypatch.setattr(train, "__file__", str(edited))
    assert training_fingerprint("digest-a", TrainingConfig()) != base
