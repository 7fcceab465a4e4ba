"""mlops-spec infer: a draft spec that accepts its own file, the next period's and the next
source's data of the same kind, and flags what it should not guess."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.data
import pytest
import statsmodels.api as sm
from palmerpenguins import load_penguins
from scipy.stats import binom
from sklearn.datasets import load_diabetes

from mlops_assets.ml.dataset import clean, split
from mlops_assets.ml.estimator import TrainingConfig
from mlops_assets.ml.sample_data import to_csv_bytes
from mlops_assets.ml.spec import DatasetSpec, NumericColumn
from mlops_assets.ml.spec_infer import NULL_QUANTILE, infer_spec, main
from mlops_assets.ml.tabular import DUPLICATES, TableFile, inspect_table, read_validated
from mlops_assets.ml.train import fit


def violations(frame: pd.DataFrame, spec: DatasetSpec) -> list[str]:
    """What the data contract says of ``frame`` written as a CSV file."""
    inspection = inspect_table(TableFile("data.csv", to_csv_bytes(frame)), spec)
    return [v.message for v in inspection.violations]


def drafted(tmp_path: Path, frame: pd.DataFrame, file: str, *args: str) -> DatasetSpec:
    """The spec the command drafts from ``frame`` written as ``file``, read back."""
    data, out = tmp_path / file, tmp_path / f"{Path(file).stem}.spec.json"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_bytes(to_csv_bytes(frame))
    assert main(["infer", str(data), *args, "-o", str(out)]) == 0
    return DatasetSpec.from_dict(json.loads(out.read_text()), str(out))


def numeric_column(spec: DatasetSpec, name: str) -> NumericColumn:
    (column,) = [c for c in spec.numeric if c.name == name]
    return column


@pytest.fixture(scope="module")
def penguins() -> pd.DataFrame:
    """palmerpenguins: 344 real penguins of 2007-2009, blanks in sex and the measurements."""
    return load_penguins()


@pytest.fixture(scope="module")
def co2_weekly() -> pd.DataFrame:
    """Mauna Loa CO2 (statsmodels), weekly 1958-2001. No shipped table has a month column, so
    ``year`` and ``month`` are taken from the real dates, which stay as the ``date`` column."""
    data = sm.datasets.co2.load_pandas().data
    return pd.DataFrame({
        "date": data.index.strftime("%Y-%m-%d"),
        "year": data.index.year,
        "month": data.index.month,
        "co2": data["co2"].to_numpy(),
    })  # fmt: skip


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
    assert spec.name == "diabetes_target"
    assert sorted(columns) == ["age", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "sex"]
    assert columns["age"].integer
    assert not columns["bmi"].integer
    frame = load_diabetes(as_frame=True, scaled=False).frame
    for name, column in columns.items():
        assert column.min <= frame[name].min()
        assert frame[name].max() <= column.max
    err = capsys.readouterr().err
    assert "look at 'sex': only 2 distinct values" in err
    assert "no key proposed" in err
    assert spec.key == ()

    table = read_validated([TableFile("diabetes.csv", diabetes_csv.read_bytes())], spec).frame
    assert len(table) == 442
    result = fit(split(clean(table, spec)[0], spec), spec, TrainingConfig("ridge"))
    assert result.metrics["test_r2"] > 0.3  # linear models reach about 0.45 on this data
    assert result.metrics["test_rmse"] < result.metrics["baseline_test_rmse"]


def test_text_columns_become_categories_unless_they_identify_rows_or_are_free_text():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "customer_id": [f"C{i:05d}" for i in range(400)],
        "colour": rng.choice(["Red", "red ", "BLUE", "green"], 400),
        "remark": [f"said {i % 100}" for i in range(400)],
        "weight": np.where(rng.random(400) < 0.2, np.nan, rng.normal(-3, 1, 400)),
        "price": rng.uniform(10, 20, 400),
    })  # fmt: skip
    draft = infer_spec(frame, "price", "shop")
    assert draft.spec.key == ("customer_id",)
    assert "customer_id" not in draft.spec.feature_columns
    assert "100 distinct values" in draft.flagged["remark"]
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
    # Written as the data writes them (the first spelling, on a tie), matched as the contract
    # compares them.
    assert spec.classes == ("ham", "Spam")
    assert spec.target.spelling == {"ham": "ham", "spam": "Spam"}
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


def test_the_penguins_draft_leaves_year_open_upward_and_accepts_later_years(
    tmp_path, penguins, capsys
):
    spec = drafted(tmp_path, penguins, "penguins.csv", "--target", "species")

    year = numeric_column(spec, "year")
    assert year.max is None
    assert year.integer
    assert year.min is not None
    assert year.min <= 2007
    assert "look at 'year': years" in capsys.readouterr().err
    assert violations(penguins, spec) == []  # its own file, blanks and all
    complete = penguins.dropna().head(30)
    for later in (2010, 2031):
        assert violations(complete.assign(year=later), spec) == []


def test_a_month_column_is_bounded_by_the_calendar_not_by_the_months_seen(
    tmp_path, co2_weekly, capsys
):
    first_half = co2_weekly[co2_weekly["month"] <= 6]
    second_half = co2_weekly[co2_weekly["month"] > 6]
    spec = drafted(tmp_path, first_half, "co2.csv", "--target", "co2")

    month = numeric_column(spec, "month")
    assert (month.min, month.max, month.integer) == (1, 12, True)
    assert first_half["month"].max() == 6  # a draft from the range seen would stop at 6
    # The dates are left out, not turned into 1,100 allowed values the next week lacks.
    assert spec.feature_columns == ["year", "month"]
    err = capsys.readouterr().err
    assert "left out 'date': a date (1958-03-29 .. 2001-06-30)" in err
    assert "look at 'month': a month" in err
    assert violations(second_half, spec) == []


@pytest.mark.parametrize(
    ("load", "target", "expected"),
    [
        # (min, max) drafted; None: open upward, above a min that holds the data
        (sm.datasets.macrodata, "realgdp", {"quarter": (1, 4), "year": None}),
        (sm.datasets.copper, "WORLDCONSUMPTION", {"TIME": None}),  # a counter, 1..25
        (sm.datasets.nile, "volume", {"year": None}),  # 1871..1970: by its name and values
        (plotly.data.carshare, "car_hours", {"peak_hour": (0, 23)}),
    ],
)
def test_time_columns_of_real_tables_are_not_bounded_by_the_period_seen(load, target, expected):
    frame = load() if callable(load) else load.load_pandas().data
    spec = infer_spec(frame, target, "t").spec
    for name, bounds in expected.items():
        column = numeric_column(spec, name)
        if bounds is None:
            assert column.max is None, name
            assert column.min is not None
            assert column.min <= frame[name].min()
        else:
            assert (column.min, column.max) == bounds, name


def test_time_is_read_from_names_and_values_together():
    rows = 12
    frame = pd.DataFrame({
        "month": [200 + 17 * i for i in range(rows)][::-1],  # named a month, is not one
        "sale_month": [1, 2, 3, 4, 5, 6] * 2,
        "pickup_day_of_week": [0, 1, 2, 3, 4, 5] * 2,  # 0: Monday = 0, Sunday = 6
        "weekday": [1, 2, 3, 4, 5, 6] * 2,  # 0..6 or 1..7: the data does not say
        "visits": [1950 + i for i in range(rows)],  # whole numbers within 1900..2100: years
        "when": pd.to_datetime("2024-01-31") + pd.to_timedelta(range(rows), unit="D"),
        "y": np.linspace(0, 1, rows),
    })  # fmt: skip
    draft = infer_spec(frame, "y", "t")
    bounds = {c.name: (c.min, c.max) for c in draft.spec.numeric}
    assert bounds["month"][1] is not None
    assert bounds["month"][1] > 387
    assert bounds["sale_month"] == (1, 12)
    assert bounds["pickup_day_of_week"] == (0, 6)
    assert bounds["weekday"] == (0, 7)
    assert "keep the one your data uses" in draft.notes["weekday"]
    assert bounds["visits"][1] is None
    assert "a date (2024-01-31" in draft.flagged["when"]  # a timestamp column, as Parquet has


def test_an_identifier_column_is_proposed_as_the_key_and_not_as_a_feature(tmp_path, capsys):
    election = plotly.data.election()  # Montreal's 2013 mayoral vote, one row per district
    spec = drafted(tmp_path, election, "election.csv", "--target", "winner")

    assert spec.key == ("district_id",)
    assert "district_id" not in spec.feature_columns
    assert "district_id" in spec.key_only_columns
    assert "key proposed: 'district_id' (every value present and distinct, whole numbers, a " \
        "name that reads as an id)" in capsys.readouterr().err  # fmt: skip
    assert violations(election, spec) == []
    # With the key, a file holding every district twice is a double export, and is refused.
    inspection = inspect_table(
        TableFile("twice.csv", to_csv_bytes(pd.concat([election, election]))), spec
    )
    assert [v.column for v in inspection.results[DUPLICATES] or []] == ["district_id"]


def test_without_a_name_the_draft_is_named_by_file_and_target_and_says_so(
    tmp_path, penguins, capsys
):
    fair = sm.datasets.fair.load_pandas().data  # another study, saved under the same file name
    first = drafted(tmp_path, penguins, "penguins/train.csv", "--target", "species")
    first_err = capsys.readouterr().err
    second = drafted(tmp_path, fair, "affairs/train.csv", "--target", "affairs")
    second_err = capsys.readouterr().err
    named = drafted(tmp_path, fair, "named/train.csv", "--target", "affairs", "--name", "fair")

    assert (first.name, second.name, named.name) == ("train_species", "train_affairs", "fair")
    for name, err in (("train_species", first_err), ("train_affairs", second_err)):
        assert f"dataset name: '{name}', from the file's name and the target" in err
        assert "two unrelated datasets must not share one: give --name" in err
    assert "dataset name: 'fair' (--name)" in capsys.readouterr().err


def test_null_limits_admit_a_small_sample_at_the_observed_rate_but_not_a_blank_column(penguins):
    rows = 40
    spec = infer_spec(penguins, "species", "penguins", expected_rows=rows).spec
    rate = float(penguins["sex"].isna().mean())  # 11 of 344
    limit = spec.null_limit("sex")

    # Deterministic: the chance that 40 rows at this rate show more blanks than the limit.
    most_blanks_allowed = math.floor(round(limit * rows, 9))
    assert binom.sf(most_blanks_allowed, rows, rate) <= 1 - NULL_QUANTILE
    # 40 real rows with the blanks a sample at this rate reaches once in a thousand: accepted,
    # though more than the observed share * 1.2 (4%) that drafts used to allow.
    blanks = int(binom.ppf(NULL_QUANTILE, rows, rate))
    sample = penguins.dropna().head(rows).copy()
    sample.iloc[:blanks, sample.columns.get_loc("sex")] = None
    assert blanks / rows > math.ceil(rate * 1.2 * 100) / 100
    assert violations(sample, spec) == []
    refused = violations(sample.assign(sex=None), spec)
    assert len(refused) == 1
    assert "column 'sex'" in refused[0]
    assert "100.0% of values are missing" in refused[0]
    # Without --expected-rows, the file's own 344 rows: less noise, a tighter limit.
    own_rows = infer_spec(penguins, "species", "penguins").spec
    assert rate < own_rows.null_limit("sex") < limit
    assert own_rows.null_limit("year") == own_rows.max_null_share  # no blanks: dataset-wide
