"""The model as it is configured: the training config, the estimator it names (a built-in
type or any scikit-learn-compatible class) and the Pipeline that holds it.

Preprocessing lives inside the Pipeline, so the registered artefact takes the raw feature
columns and is exactly what gets served. Both :mod:`mlops_assets.ml.search` (which tries
configurations) and :mod:`mlops_assets.ml.train` (which fits one) build on this module, which
imports neither.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.ml.spec import DatasetSpec

# Built-in types: the first two for either task; ridge regresses, logistic_regression classifies.
MODEL_TYPES = ("hist_gradient_boosting", "random_forest", "ridge", "logistic_regression")
TASK_ONLY = {"ridge": "regression", "logistic_regression": "classification"}
# package.module.Class: any scikit-learn-compatible estimator the environment can import.
IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")
# package.module:function: the user's own training code.
FUNCTION_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")

# The space searched for each built-in type; a custom estimator brings its own (search_space).
BUILT_IN_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "hist_gradient_boosting": {
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True},
        "max_iter": {"type": "int", "low": 50, "high": 400},
        "max_leaf_nodes": {"type": "int", "low": 8, "high": 64},
        "min_samples_leaf": {"type": "int", "low": 5, "high": 50},
    },
    "random_forest": {
        "n_estimators": {"type": "int", "low": 50, "high": 300},
        "max_depth": {"type": "int", "low": 3, "high": 20},
        "min_samples_leaf": {"type": "int", "low": 1, "high": 20},
    },
    "ridge": {"alpha": {"type": "float", "low": 0.001, "high": 100.0, "log": True}},
    "logistic_regression": {"C": {"type": "float", "low": 0.001, "high": 100.0, "log": True}},
}


@dataclass(frozen=True)
class SearchConfig:
    """Hyperparameter search ahead of training (mlops_assets.ml.search): off unless a number of
    trials or a time budget is given; ``space`` replaces the built-in type's space."""

    trials: int = 0
    timeout_seconds: float = 0.0
    space: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.trials > 0 or self.timeout_seconds > 0


class EstimatorError(ValueError):
    """The configured estimator cannot be used: the message names it and why."""


class SearchFailed(EstimatorError):
    """No trial produced a model, or the search is configured wrongly; the message says which."""


@dataclass(frozen=True)
class TrainingConfig:
    model_type: str = "hist_gradient_boosting"
    params: dict[str, Any] = field(default_factory=dict)
    random_state: int = 0
    # Types the saved model may contain beyond SKOPS_TRUSTED_TYPES (reviewed by the user).
    trusted_types: tuple[str, ...] = ()
    # package.module:function that fits the model itself (see fit); model_type is then unused.
    training_function: str = ""
    search: SearchConfig = field(default_factory=SearchConfig)

    @property
    def label(self) -> str:
        """What fits the model: the training function, or the estimator."""
        return self.training_function or self.model_type

    def check(self, task: str = "regression") -> None:
        """Fail now, before any data is read, when the estimator or function cannot be used
        (for the spec's ``task``)."""
        if self.training_function:
            training_function(self.training_function)
        else:
            make_estimator(self, task)
        if self.search.enabled:
            space_for(self, self.search)

    def __post_init__(self) -> None:
        if self.training_function and not FUNCTION_PATH.match(self.training_function):
            raise EstimatorError(
                f"training function '{self.training_function}' is not of the form "
                "package.module:function"
            )
        if self.model_type not in MODEL_TYPES and not IMPORT_PATH.match(self.model_type):
            raise EstimatorError(
                f"model_type '{self.model_type}' is not one of {MODEL_TYPES} nor the import "
                "path of an estimator class (package.module.Class)"
            )
        if self.training_function and self.search.enabled:
            raise EstimatorError(
                "hyperparameter search tunes an estimator (model_type); a training function "
                "does its own tuning, so give one or the other"
            )
        if not isinstance(self.params, dict):
            raise EstimatorError(f"estimator params must be a JSON object, not {self.params!r}")


def space_for(config: TrainingConfig, search: SearchConfig) -> dict[str, dict[str, Any]]:
    """The space to search: the one given, else the built-in type's."""
    space = search.space or BUILT_IN_SPACES.get(config.model_type, {})
    if not isinstance(space, dict) or not all(isinstance(e, dict) for e in space.values()):
        raise SearchFailed(f"search space must map each parameter to its range, not {space!r}")
    if not space:
        raise SearchFailed(
            f"model_type '{config.model_type}' has no built-in search space: give one as JSON "
            '(MLOPS_SEARCH_SPACE), e.g. {"C": {"type": "float", "low": 0.1, "high": 10, '
            '"log": true}}'
        )
    for name, entry in space.items():
        kind = entry.get("type")
        if kind in ("int", "float"):
            if not {"low", "high"} <= entry.keys() or entry["low"] >= entry["high"]:
                raise SearchFailed(f"search space '{name}': give low < high, not {entry}")
        elif kind == "categorical":
            if not entry.get("choices"):
                raise SearchFailed(f"search space '{name}': categorical needs a 'choices' list")
        else:
            raise SearchFailed(
                f"search space '{name}': type must be int, float or categorical, not {kind!r}"
            )
    return space


def model_input(frame: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The model's input contract: numeric features as float64, categoricals as plain strings.

    Plain dtypes keep the MLflow signature portable (no pandas categoricals on the wire).
    """
    columns: dict[str, pd.Series] = {}
    for name in spec.numeric_features:
        columns[name] = frame[name].astype("float64")
    for name in spec.categorical_features:
        values = frame[name].astype(object)
        columns[name] = values.where(values.notna(), None)
    return pd.DataFrame(columns, index=frame.index)


def estimator_class(path: str) -> type:
    """The class at ``path`` (package.module.Class), or EstimatorError saying what is wrong."""
    module_name, _, name = path.rpartition(".")
    found = _import(f"model_type '{path}'", module_name, name, "class")
    if not isinstance(found, type):
        raise EstimatorError(f"model_type '{path}': '{name}' in '{module_name}' is not a class")
    return found


def training_function(path: str) -> Callable[..., Any]:
    """The function at ``path`` (package.module:function), or EstimatorError."""
    module_name, _, name = path.partition(":")
    found = _import(f"training function '{path}'", module_name, name, "function")
    if not callable(found):
        raise EstimatorError(f"training function '{path}': '{name}' is not callable")
    return found


def _import(what: str, module_name: str, name: str, kind: str) -> Any:
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EstimatorError(
            f"{what}: cannot import module '{module_name}' ({exc}); install the package that "
            "provides it where training runs"
        ) from exc
    if not hasattr(module, name):
        raise EstimatorError(f"{what}: module '{module_name}' has no {kind} '{name}'")
    return getattr(module, name)


def make_estimator(config: TrainingConfig, task: str = "regression") -> Any:
    """The configured estimator for ``task``, unfitted: a built-in type with its defaults, or
    the class at ``config.model_type`` with ``config.params``, checked to be a scikit-learn
    regressor (or classifier)."""
    needed = TASK_ONLY.get(config.model_type, task)
    if needed != task:
        raise EstimatorError(
            f"model_type '{config.model_type}' is for {needed}; the dataset spec's task is "
            f"{task} (built-in types for it: "
            f"{', '.join(t for t in MODEL_TYPES if TASK_ONLY.get(t, task) == task)})"
        )
    try:
        return _estimator(config, task)
    except TypeError as exc:  # a parameter the estimator does not take
        raise EstimatorError(
            f"model_type '{config.model_type}' does not accept params {config.params}: {exc}"
        ) from exc


def _estimator(config: TrainingConfig, task: str) -> Any:
    from sklearn import ensemble
    from sklearn.linear_model import LogisticRegression, Ridge

    params = dict(config.params)
    classify = task == "classification"
    if config.model_type == "hist_gradient_boosting":
        params.setdefault("max_iter", 200)
        params.setdefault("learning_rate", 0.1)
        hgb = (
            ensemble.HistGradientBoostingClassifier
            if classify
            else ensemble.HistGradientBoostingRegressor
        )
        return hgb(random_state=config.random_state, **params)
    if config.model_type == "random_forest":
        params.setdefault("n_estimators", 100)
        params.setdefault("n_jobs", -1)
        forest = ensemble.RandomForestClassifier if classify else ensemble.RandomForestRegressor
        return forest(random_state=config.random_state, **params)
    if config.model_type == "ridge":
        return Ridge(**params)
    if config.model_type == "logistic_regression":
        params.setdefault("max_iter", 1000)
        return LogisticRegression(random_state=config.random_state, **params)
    return _custom_estimator(config.model_type, params, config.random_state, task)


def check_task(estimator: Any, name: str, task: str = "regression") -> None:
    from sklearn.base import is_classifier, is_regressor

    if task == "classification":
        if not is_classifier(estimator):
            raise EstimatorError(
                f"{name} is not a classifier (sklearn.base.is_classifier is false); the dataset "
                "spec's task is classification: use a classifier (derive it from "
                "sklearn.base.ClassifierMixin)"
            )
        if not hasattr(estimator, "predict_proba"):
            raise EstimatorError(
                f"{name} has no predict_proba: the project serves one probability per class "
                "(for SVC, set probability=true)"
            )
        return
    if is_classifier(estimator):
        raise EstimatorError(
            f"{name} is a classifier; the dataset spec's task is regression, so the estimator "
            "must be a regressor"
        )
    if not is_regressor(estimator):
        raise EstimatorError(
            f"{name} is not a regressor (sklearn.base.is_regressor is false): derive it from "
            "sklearn.base.RegressorMixin"
        )


def _custom_estimator(path: str, params: dict[str, Any], random_state: int, task: str) -> Any:
    cls = estimator_class(path)
    needed = ("fit", "predict", "get_params", "set_params")
    missing = [name for name in needed if not callable(getattr(cls, name, None))]
    if missing:
        raise EstimatorError(
            f"model_type '{path}' is not a scikit-learn estimator: it has no "
            f"{', '.join(missing)} (derive it from sklearn.base.BaseEstimator)"
        )
    estimator = cls(**params)
    check_task(estimator, f"model_type '{path}'", task)
    if "random_state" in estimator.get_params() and "random_state" not in params:
        estimator.set_params(random_state=random_state)
    return estimator


def build_pipeline(spec: DatasetSpec, config: TrainingConfig) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent", missing_values=None)),
            ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    preprocess = ColumnTransformer(
        [
            ("numeric", numeric, spec.numeric_features),
            ("categorical", categorical, spec.categorical_features),
        ]
    )
    return Pipeline(
        [("preprocess", preprocess), (estimator_step(spec), make_estimator(config, spec.task))]
    )


def estimator_step(spec: DatasetSpec) -> str:
    """The Pipeline step that holds the estimator: ``regressor`` or ``classifier``."""
    return "classifier" if spec.task == "classification" else "regressor"


def target_values(frame: pd.DataFrame, spec: DatasetSpec) -> np.ndarray:
    """What the estimator learns: the number, or the class as text (the spec's normalised
    label, as the served model answers)."""
    if spec.task == "classification":
        return frame[spec.target.name].astype(str).to_numpy(dtype=object)
    return frame[spec.target.name].to_numpy(dtype=float)
