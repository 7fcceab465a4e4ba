import pandas as pd
import pytest

from mlops_assets.ml.dataset import clean, split
from mlops_assets.ml.drift import PREDICTION, drift_report, sample
from mlops_assets.ml.estimator import TrainingConfig, model_input
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.tabular import TableFile, read_validated
from mlops_assets.ml.train import fit


def frame(rows, seed, drift=False, labels=True):
    raw = generate_house_prices(rows, seed, drift=drift)
    if not labels:
        raw = raw.drop(columns=["price"])
    return read_validated(
        [TableFile("b.csv", to_csv_bytes(raw))], HOUSE_PRICES, require_target=labels
    ).frame


@pytest.fixture(scope="module")
def model_and_reference():
    train = split(clean(frame(3000, 1), HOUSE_PRICES)[0], HOUSE_PRICES)["train"]
    model = fit(
        {"train": train, "val": train, "test": train}, HOUSE_PRICES, TrainingConfig("ridge")
    ).pipeline
    train = train.copy()
    train[PREDICTION] = model.predict(model_input(train, HOUSE_PRICES))
    return model, train


def scored(model, batch):
    batch = batch.copy()
    batch[PREDICTION] = model.predict(model_input(batch, HOUSE_PRICES))
    return batch


def test_same_distribution_shows_little_drift_and_similar_quality(model_and_reference):
    model, reference = model_and_reference
    summary, report_json, html = drift_report(
        scored(model, frame(1500, 2)), reference, HOUSE_PRICES, max_rows=10_000
    )
    assert summary.drift_share < 0.3
    assert summary.quality is not None
    assert summary.quality["rmse"] > 0
    assert '"metrics"' in report_json
    assert "<html" in html.lower()


def test_drifted_batch_shows_drift_and_worse_quality(model_and_reference):
    model, reference = model_and_reference
    same, _, _ = drift_report(scored(model, frame(1500, 2)), reference, HOUSE_PRICES, 10_000)
    drifted, _, _ = drift_report(
        scored(model, frame(1500, 3, drift=True)), reference, HOUSE_PRICES, 10_000
    )
    assert drifted.drift_share >= 0.3
    assert drifted.columns["area"].drifted
    assert not same.columns["area"].drifted
    assert drifted.quality["rmse"] > 1.5 * same.quality["rmse"]


def test_unlabelled_batch_reports_drift_without_quality(model_and_reference):
    model, reference = model_and_reference
    summary, _, _ = drift_report(
        scored(model, frame(800, 5, labels=False)), reference, HOUSE_PRICES, 10_000
    )
    assert summary.quality is None
    assert summary.columns_checked == len(HOUSE_PRICES.feature_columns)


def test_with_labels_for_some_rows_drift_is_of_every_row_and_quality_of_the_labelled(
    model_and_reference,
):
    """Live traffic: labels come for some requests. The labelled ones must not stand in for
    the drift of all: here they are the calm part of a mostly drifted stream."""
    from mlops_assets.ml.tasks import regression_metrics

    model, reference = model_and_reference
    calm = scored(model, frame(300, 2))
    drifted = scored(model, frame(900, 3, drift=True)).assign(price=float("nan"))
    stream = pd.concat([calm, drifted], ignore_index=True)
    summary, _, _ = drift_report(stream, reference, HOUSE_PRICES, 10_000)
    calm_only, _, _ = drift_report(calm, reference, HOUSE_PRICES, 10_000)

    assert summary.drift_share >= 0.3  # the whole stream drifted
    assert summary.columns["area"].drifted
    assert not calm_only.columns["area"].drifted
    # Quality is the labelled rows', computed as the champion's test metrics are.
    expected = regression_metrics(calm["price"], calm[PREDICTION])
    assert summary.quality == pytest.approx(expected)
    assert summary.quality["rmse"] == pytest.approx(calm_only.quality["rmse"])


def test_large_frames_are_sampled(model_and_reference):
    model, reference = model_and_reference
    summary, _, _ = drift_report(
        scored(model, frame(3000, 6)), reference, HOUSE_PRICES, max_rows=500
    )
    assert summary.sampled
    assert summary.current_rows == 3000
    assert len(sample(reference, 500)) == 500


@pytest.mark.parametrize(
    ("method", "score", "drifted"),
    [
        ("K-S p_value", 0.01, True),
        ("K-S p_value", 0.5, False),
        ("Wasserstein distance (normed)", 0.2, True),
        ("Jensen-Shannon distance", 0.02, False),
    ],
)
def test_column_drift_reads_p_values_and_distances_the_right_way(method, score, drifted):
    from mlops_assets.ml.drift import ColumnDrift

    threshold = 0.05 if "p_value" in method else 0.1
    assert ColumnDrift(method, score, threshold).drifted is drifted
