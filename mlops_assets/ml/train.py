"""Build, fit and evaluate the regression Pipeline.

Preprocessing lives inside the Pipeline, so the registered artefact takes the
raw feature columns and is exactly what gets served.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.ml.spec import DatasetSpec

MODEL_TYPES = ("hist_gradient_boosting", "random_forest", "ridge")

# skops refuses to load types it was not told to trust; these are the ones the
# Pipelines built here contain beyond sklearn's defaults, each reviewed.
SKOPS_TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.compose._column_transformer._RemainderColsList",
    "numpy.dtype",  # OneHotEncoder's output dtype parameter
]


# What the served model needs to load and predict: pinned to the versions it was trained with,
# so the image serves exactly this model (MLflow's inference would also pick up whatever the
# training process happened to import).
SERVING_PACKAGES = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")


def serving_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in SERVING_PACKAGES]


def training_fingerprint(dataset_digest: str, config: TrainingConfig) -> str:
    """What decides the model a training run produces: the dataset version (its rows, schema
    and processing), the training config, this module's code (the Pipeline and how it is fitted)
    and the versions of the packages that fit and serve it. The same fingerprint trains the
    same model again, so it is not trained twice."""
    from importlib.metadata import version
    from pathlib import Path

    identity = {
        "dataset_digest": dataset_digest,
        "training_code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        "model_type": config.model_type,
        "params": config.params,
        "random_state": config.random_state,
        "packages": {name: version(name) for name in SERVING_PACKAGES},
    }
    encoded = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:32]


@dataclass(frozen=True)
class TrainingConfig:
    model_type: str = "hist_gradient_boosting"
    params: dict[str, Any] = field(default_factory=dict)
    random_state: int = 0

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type '{self.model_type}' is not one of {MODEL_TYPES}")


@dataclass
class TrainingResult:
    pipeline: Any
    metrics: dict[str, float]
    params: dict[str, Any]


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


def build_pipeline(spec: DatasetSpec, config: TrainingConfig) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import Ridge
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
    params = dict(config.params)
    if config.model_type == "hist_gradient_boosting":
        params.setdefault("max_iter", 200)
        params.setdefault("learning_rate", 0.1)
        regressor: Any = HistGradientBoostingRegressor(random_state=config.random_state, **params)
    elif config.model_type == "random_forest":
        params.setdefault("n_estimators", 100)
        params.setdefault("n_jobs", -1)
        regressor = RandomForestRegressor(random_state=config.random_state, **params)
    else:
        regressor = Ridge(**params)
    return Pipeline([("preprocess", preprocess), ("regressor", regressor)])


def regression_metrics(y_true: np.ndarray | pd.Series, y_pred: np.ndarray) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=float)
    y_pred = np.asarray(y_pred, dtype=float)
    error = y_pred - y_true
    ss_res = float(np.sum(error**2))
    ss_tot = float(np.sum((y_true - y_true.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0,
    }


def fit(
    splits: dict[str, pd.DataFrame], spec: DatasetSpec, config: TrainingConfig
) -> TrainingResult:
    """Fit on train; report metrics on val and test, and those of a naive baseline that
    predicts the train median for every row."""
    target = spec.target.name
    train = splits["train"]
    pipeline = build_pipeline(spec, config)
    pipeline.fit(model_input(train, spec), train[target].to_numpy(dtype=float))
    metrics: dict[str, float] = {
        "train_target_min": float(train[target].min()),
        "train_target_max": float(train[target].max()),
    }
    median = float(train[target].median())
    for name in ("val", "test"):
        part = splits[name]
        y = part[target].to_numpy(dtype=float)
        for key, value in regression_metrics(y, pipeline.predict(model_input(part, spec))).items():
            metrics[f"{name}_{key}"] = value
        for key, value in regression_metrics(y, np.full(len(y), median)).items():
            metrics[f"baseline_{name}_{key}"] = value
    params = {"model_type": config.model_type, "random_state": config.random_state}
    params.update(pipeline.named_steps["regressor"].get_params())
    return TrainingResult(pipeline=pipeline, metrics=metrics, params=params)
