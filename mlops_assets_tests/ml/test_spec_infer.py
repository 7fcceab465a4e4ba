"""mlops-spec infer: a draft spec that accepts its own file, flags what it should not guess."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes

from mlops_assets.ml.dataset import clean, split
from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.spec_infer import infer_spec, main
from mlops_assets.ml.tabular import TableFile, read_validated
from mlops_assets.ml.train import TrainingConfig, fit


@pytest.fixture(scope="module")
def diabetes_csv(tmp_path_factory) -> Path:
    """scikit-learn's diabetes data (real patients, unscaled), as a user's CSV file."""
    path = tmp_path_factory.mktemp("diabetes") / "diabetes.csv"
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(path, index=False)
    return path


def test_the_draft_for_real_data_accepts_its_file_and_trains_a_model(diabetes_csv, capsys):
    out = diabetes_csv.with_name("spec.json")
    assert main(["infer", str(diabetes_csv), "--target", "target", "-o", str(out)]) == 0
    spec = DatasetSpec.from_dict(json.loads(out.read_text()), str(out))
    columns = {c.name: c for c in spec.numeric}
    assert spec.name == "diabetes"
    assert sorted(columns) == ["age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "sex"]
    assert columns["age"].integer
    assert not columns["bmi"].integer
    frame = load_diabetes(as_frame=True, scaled=False).frame
    for name, column in columns.items():
        assert column.min <= frame[name].min()
        assert frame[name].max() <= column.max
    assert "look at 'sex': only 2 distinct values" in capsys.readouterr().err

    table = read_validated([TableFile("diabetes.csv", diabetes_csv.read_bytes())], spec).frame
    assert len(table) == 442
    result = fit(split(clean(table, spec)[0], spec), spec, TrainingConfig("ridge"))
    assert result.metrics["test_r2"] > 0.3  # linear models reach about 0.45 on this data
    assert result.metrics["test_rmse"] < result.metrics["baseline_test_rmse"]


def test_text_columns_become_categories_unless_they_look_like_identifiers():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "customer_id": [f"C{i:05d}" for i in range(400)],
        "colour": rng.choice(["Red", "red ", "BLUE", "green"], 400),
        "weight": np.where(rng.random(400) < 0.2, np.nan, rng.normal(-3, 1, 400)),
        "price": rng.uniform(10, 20, 400),
    })  # fmt: skip
    draft = infer_spec(frame, "price", "shop")
    assert "customer_id" in draft.flagged
    assert "400 distinct values" in draft.flagged["customer_id"]
    (colour,) = draft.spec.categorical
    assert colour.allowed == ("blue", "green", "red")
    (weight,) = draft.spec.numeric
    assert weight.min < frame["weight"].min() < 0  # negative values: no floor at zero
    assert weight.max_null_share is not None
    assert frame["weight"].isna().mean() <= weight.max_null_share <= 0.3
    assert 0 <= draft.spec.target.min <= frame["price"].min()


def test_a_target_that_is_missing_or_not_numeric_is_refused():
    frame = pd.DataFrame({"x": [1.0, 2.0], "label": ["spam", "ham"]})
    with pytest.raises(ValueError, match="target column 'y' is not in the data"):
        infer_spec(frame, "y", "d")
    with pytest.raises(ValueError, match="'label' has values that are not numbers"):
        infer_spec(frame, "label", "d", task="regression")


def test_a_text_target_drafts_a_classification_spec_with_its_classes():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "label": ["Spam", "ham", "spam ", None]})
    spec = infer_spec(frame, "label", "mail").spec
    assert spec.task == "classification"
    assert spec.classes == ("ham", "spam")  # normalised as the data contract compares them
    # Whole-number codes are classes when asked for, not amounts.
    codes = pd.DataFrame({"x": [1.0, 2.0, 3.0], "churned": [0, 1, 1]})
    assert infer_spec(codes, "churned", "c", task="classification").spec.classes == ("0", "1")
    assert infer_spec(codes, "churned", "c").spec.task == "regression"
    with pytest.raises(ValueError, match="'label' has 1 class"):
        infer_spec(frame.assign(label="spam"), "label", "mail")
    with pytest.raises(ValueError, match="4 distinct values \\(more than 3\\)"):
        infer_spec(frame.assign(label=list("abcd")), "label", "m", max_categories=3)


def test_the_command_drafts_a_classifier_spec_from_real_data(tmp_path, capsys):
    from sklearn.datasets import load_iris

    data = load_iris(as_frame=True)
    frame = data.frame.assign(species=[data.target_names[i] for i in data.target])
    frame.drop(columns="target").to_csv(tmp_path / "iris.csv", index=False)

    assert main(["infer", str(tmp_path / "iris.csv"), "--target", "species",
                 "--task", "classification", "-o", str(tmp_path / "spec.json")]) == 0  # fmt: skip

    drafted = json.loads((tmp_path / "spec.json").read_text())
    assert drafted["task"] == "classification"
    assert drafted["target"] == {
        "name": "species",
        "allowed": ["setosa", "versicolor", "virginica"],
    }
    assert len(drafted["numeric"]) == 4
    assert "drafted a classification spec from 150 rows" in capsys.readouterr().err
    assert DatasetSpec.from_dict(drafted).classes == ("setosa", "versicolor", "virginica")


def test_the_command_reports_a_bad_file_without_a_traceback(tmp_path, capsys):
    assert main(["infer", str(tmp_path / "data.xlsx"), "--target", "y"]) == 2
    assert "write the data as .csv or .parquet" in capsys.readouterr().err
