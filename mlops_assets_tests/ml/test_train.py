import re
from pathlib import Path

import numpy as np
import pytest

from mlops_assets.ml.dataset import clean, split
from mlops_assets.ml.estimator import (
    MODEL_TYPES,
    EstimatorError,
    TrainingConfig,
    make_estimator,
    model_input,
)
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.tabular import TableFile, read_validated
from mlops_assets.ml.train import (
    ServedCode,
    fit,
    regression_metrics,
    saved_types,
    served_code,
    untrusted_types,
)
from mlops_assets_tests.conftest import TEAM_MODEL


@pytest.fixture(scope="module")
def splits():
    frame = read_validated(
        [TableFile("h.csv", to_csv_bytes(generate_house_prices(3000, seed=4)))], HOUSE_PRICES
    ).frame
    return split(clean(frame, HOUSE_PRICES)[0], HOUSE_PRICES)


@pytest.mark.parametrize("model_type", [t for t in MODEL_TYPES if t != "logistic_regression"])
def test_every_model_type_beats_the_median_baseline(splits, model_type):
    params = {"n_estimators": 30} if model_type == "random_forest" else {}
    result = fit(splits, HOUSE_PRICES, TrainingConfig(model_type, params))
    m = result.metrics
    assert m["test_rmse"] < 0.8 * m["baseline_test_rmse"]
    assert m["test_r2"] > 0.5
    assert m["train_target_min"] <= m["train_target_max"]
    # Saved with reviewed types only (random_forest's trees were once refused at logging).
    assert untrusted_types(saved_types(result.pipeline)) == []


def test_pipeline_takes_raw_columns_and_ignores_unknown_categories(splits):
    result = fit(splits, HOUSE_PRICES, TrainingConfig("ridge"))
    rows = model_input(splits["test"].head(3), HOUSE_PRICES)
    rows.loc[rows.index[0], "furnishingstatus"] = "palatial"
    rows.loc[rows.index[1], "area"] = np.nan
    assert np.isfinite(result.pipeline.predict(rows)).all()


def test_same_config_gives_same_model(splits):
    config = TrainingConfig(params={"max_iter": 40}, random_state=3)
    a = fit(splits, HOUSE_PRICES, config).metrics
    b = fit(splits, HOUSE_PRICES, config).metrics
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
    from mlops_assets.ml.estimator import TrainingConfig
    from mlops_assets.ml.train import training_fingerprint

    base = training_fingerprint("digest-a", TrainingConfig())
    assert training_fingerprint("digest-a", TrainingConfig()) == base
    assert training_fingerprint("digest-b", TrainingConfig()) != base
    assert training_fingerprint("digest-a", TrainingConfig(params={"max_iter": 10})) != base
    assert training_fingerprint("digest-a", TrainingConfig(random_state=1)) != base
    edited = tmp_path / "train.py"
    edited.write_bytes(Path(train.__file__).read_bytes() + b"\n# a changed line\n")
    monkeypatch.setattr(train, "__file__", str(edited))
    assert training_fingerprint("digest-a", TrainingConfig()) != base


CUSTOM = "mlops_assets_tests.ml.estimators.ShrunkLeastSquares"


def test_any_regressor_by_import_path_with_its_params(splits):
    result = fit(splits, HOUSE_PRICES, TrainingConfig("sklearn.linear_model.Lasso", {"alpha": 5.0}))
    assert type(result.pipeline.named_steps["regressor"]).__name__ == "Lasso"
    assert result.params["alpha"] == 5.0
    assert result.params["model_type"] == "sklearn.linear_model.Lasso"
    assert result.metrics["test_rmse"] < 0.8 * result.metrics["baseline_test_rmse"]


def test_a_user_estimator_class_trains_and_gets_the_random_state(splits):
    trees = make_estimator(TrainingConfig("sklearn.ensemble.ExtraTreesRegressor", random_state=7))
    assert trees.random_state == 7
    result = fit(splits, HOUSE_PRICES, TrainingConfig(CUSTOM, {"shrink": 0.1}))
    assert result.pipeline.named_steps["regressor"].shrink == 0.1
    assert result.metrics["test_r2"] > 0.5


@pytest.mark.parametrize(
    ("model_type", "params", "message"),
    [
        ("xgb", {}, "model_type 'xgb' is not one of"),
        ("no_such_package.Model", {}, "cannot import module 'no_such_package'"),
        ("sklearn.svm.NoSuchModel", {}, "module 'sklearn.svm' has no class 'NoSuchModel'"),
        ("mlops_assets_tests.ml.estimators.NotAnEstimator", {}, "is not a scikit-learn estimator"),
        ("sklearn.linear_model.LogisticRegression", {}, "is a classifier; the dataset spec's task"),
        ("sklearn.cluster.KMeans", {}, "is not a regressor"),
        ("sklearn.linear_model.Lasso", {"alphaa": 1.0}, "does not accept params {'alphaa': 1.0}"),
        ("ridge", {"bogus": 1}, "model_type 'ridge' does not accept params"),
    ],
)
def test_an_unusable_estimator_is_refused_by_name(model_type, params, message):
    with pytest.raises(EstimatorError, match=re.escape(message)):
        make_estimator(TrainingConfig(model_type, params))


def test_a_param_value_the_estimator_refuses_is_an_estimator_error_naming_it(splits):
    with pytest.raises(EstimatorError, match=re.escape("'max_iter' parameter of HistGradient")):
        fit(splits, HOUSE_PRICES, TrainingConfig(params={"max_iter": -1}))


def test_types_skops_does_not_trust_are_named_until_listed(splits):
    pipeline = fit(splits, HOUSE_PRICES, TrainingConfig(CUSTOM)).pipeline
    assert untrusted_types(saved_types(pipeline)) == [CUSTOM]
    assert untrusted_types(saved_types(pipeline), (CUSTOM,)) == []


def test_a_custom_estimators_code_is_part_of_the_fingerprint(monkeypatch, tmp_path):
    from mlops_assets.ml.train import training_fingerprint

    package = tmp_path / "user_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = "from sklearn.linear_model import Ridge\n\nclass Mine(Ridge):\n    pass\n"
    (package / "mine.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = TrainingConfig("user_models.mine.Mine")
    before = training_fingerprint("digest-a", config)
    assert training_fingerprint("digest-a", config) == before
    (package / "mine.py").write_text(source + "    # changed\n")
    assert training_fingerprint("digest-a", config) != before


def test_a_class_in_a_namespace_package_trains_and_its_folder_travels_in_the_model(
    splits, namespace_package
):
    """my_team/ without an __init__.py: a namespace package, which has no origin file."""
    result = fit(splits, HOUSE_PRICES, TrainingConfig(TEAM_MODEL, {"shrink": 0.05}))
    assert result.metrics["test_rmse"] < 0.8 * result.metrics["baseline_test_rmse"]
    types = saved_types(result.pipeline)
    assert untrusted_types(types) == [TEAM_MODEL]
    assert served_code(types) == ServedCode(code_paths=(str(namespace_package),))


def test_only_the_namespace_portion_holding_the_models_types_travels(
    namespace_package, tmp_path, monkeypatch
):
    other = tmp_path / "other_code" / "my_team"
    other.mkdir(parents=True)
    (other / "reports.py").write_text("class Report:\n    pass\n")
    monkeypatch.syspath_prepend(str(other.parent))  # ahead of the portion holding the class
    assert served_code([TEAM_MODEL]) == ServedCode(code_paths=(str(namespace_package),))
    with pytest.raises(EstimatorError, match=re.escape("from 2 folders of 'my_team'")):
        served_code([TEAM_MODEL, "my_team.reports.Report"])


def test_a_class_from_an_installed_namespace_package_pins_the_distribution_that_has_it():
    """google is a namespace shared by protobuf and google-auth (both MLflow's dependencies)."""
    from importlib.metadata import packages_distributions, version

    assert len(packages_distributions()["google"]) > 1
    assert served_code(["google.protobuf.message.Message"]) == ServedCode(
        requirements=(f"protobuf=={version('protobuf')}",)
    )


@pytest.mark.parametrize(
    ("types", "message"),
    [
        (["__main__.NotebookRegressor"], "defined in __main__ (a notebook or a script)"),
        (["no_such_team.models.Model"], "from 'no_such_team', which cannot be found"),
    ],
)
def test_a_type_no_model_can_carry_is_refused_by_name(types, message):
    with pytest.raises(EstimatorError, match=re.escape(message)):
        served_code(types)


def test_a_users_training_function_fits_the_model(splits):
    config = TrainingConfig(
        training_function="mlops_assets_tests.ml.estimators:train_shrunk_least_squares"
    )
    result = fit(splits, HOUSE_PRICES, config)
    assert type(result.pipeline.steps[-1][1]).__name__ == "ShrunkLeastSquares"
    assert result.params["shrink"] == 0.05
    assert result.params["training_function"] == config.training_function
    assert result.metrics["test_r2"] > 0.5
    assert result.metrics["test_rmse"] < 0.8 * result.metrics["baseline_test_rmse"]


def test_a_training_function_never_sees_the_test_split(splits):
    config = TrainingConfig(
        training_function="mlops_assets_tests.ml.estimators:splits_it_was_given"
    )
    with pytest.raises(RuntimeError, match=re.escape("given splits: ['train', 'val']")):
        fit(splits, HOUSE_PRICES, config)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("not a path", "is not of the form package.module:function"),
        ("no_such_pkg.train:fit", "cannot import module 'no_such_pkg.train'"),
        ("mlops_assets_tests.ml.estimators:missing", "has no function 'missing'"),
        ("mlops_assets_tests.ml.estimators:returns_a_string", "returned str, not a fitted"),
    ],
)
def test_an_unusable_training_function_is_refused_by_name(splits, path, message):
    def train() -> None:
        config = TrainingConfig(training_function=path)
        config.check()
        fit(splits, HOUSE_PRICES, config)

    with pytest.raises(EstimatorError, match=re.escape(message)):
        train()


def test_a_classifier_carries_a_few_files_of_the_project_and_loads_from_them(tmp_path):
    """A registered classifier is a ClassAnswer: what it carries of this project is the
    modules ClassAnswer needs (answering, tasks, spec, laid out as the package), not the whole
    package. A fresh interpreter with only that folder loads the saved model and answers, and
    finds nothing else of the project there."""
    import subprocess
    import sys

    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    from mlops_assets.ml.answering import ClassAnswer

    [runtime] = served_code(["mlops_assets.ml.answering.ClassAnswer"]).code_paths
    files = sorted(str(p.relative_to(runtime)) for p in Path(runtime).rglob("*.py"))
    assert files == [
        "__init__.py",
        "ml/__init__.py",
        "ml/answering.py",
        "ml/spec.py",
        "ml/tasks.py",
    ]
    assert Path(runtime, "__init__.py").read_text() == ""

    x, y = load_iris(return_X_y=True, as_frame=True)
    names = ["setosa", "versicolor", "virginica"]
    model = ClassAnswer(
        LogisticRegression(max_iter=500).fit(x, y.map(dict(enumerate(names)))), tuple(names)
    )
    saved = tmp_path / "model.skops"
    skops.io.dump(model, saved)
    expected = model.predict(x.head(3)).to_json()
    code = f"""
import sys
sys.path.insert(0, {str(Path(runtime).parent)!r})
import pandas as pd, skops.io, mlops_assets
assert mlops_assets.__file__.startswith({runtime!r}), mlops_assets.__file__
model = skops.io.load({str(saved)!r}, trusted=skops.io.get_untrusted_types(file={str(saved)!r}))
x = pd.read_json({x.head(3).to_json()!r})
print(model.predict(x).to_json())
try:
    import mlops_assets.components
except ModuleNotFoundError:
    print("no components")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer, missing = done.stdout.strip().splitlines()
    assert (answer, missing) == (expected, "no components")
