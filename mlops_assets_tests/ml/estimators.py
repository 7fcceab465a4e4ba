"""Estimators a user might bring, for the tests: importable by path like any installed class."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin


class ShrunkLeastSquares(RegressorMixin, BaseEstimator):
    """Least squares with its coefficients shrunk towards zero by ``shrink``: a real, if
    simple, regressor whose class skops does not know, so it must be trusted explicitly."""

    def __init__(self, shrink: float = 0.0) -> None:
        self.shrink = shrink

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        design = np.column_stack([np.ones(len(X)), X])
        solution, *_ = np.linalg.lstsq(design, np.asarray(y, dtype=float), rcond=None)
        self.intercept_ = float(solution[0])
        self.coef_ = solution[1:] * (1.0 - self.shrink)
        return self

    def predict(self, X):
        return self.intercept_ + np.asarray(X, dtype=float) @ self.coef_


class NotAnEstimator:
    """Has a fit but nothing else scikit-learn needs."""

    def fit(self, X, y):
        return self


def train_shrunk_least_squares(splits, spec):
    """A user's training function: the project's preprocessing, their estimator, their fit."""
    from sklearn.pipeline import Pipeline

    from mlops_assets.ml.estimator import TrainingConfig, build_pipeline, model_input

    preprocess = build_pipeline(spec, TrainingConfig("ridge")).named_steps["preprocess"]
    pipeline = Pipeline([("preprocess", preprocess), ("regressor", ShrunkLeastSquares(0.05))])
    train = splits["train"]
    return pipeline.fit(model_input(train, spec), train[spec.target.name])


def splits_it_was_given(splits, spec):
    """Fails on purpose, naming what it received, so a test can see the test split held back."""
    raise RuntimeError(f"given splits: {sorted(splits)}")


def returns_a_string(splits, spec):
    return "not a model"


class NotebookRegressor(ShrunkLeastSquares):
    """A class as a notebook or a script defines it: in module __main__, which no model can
    carry to where it is served."""


NotebookRegressor.__module__ = "__main__"


def train_a_notebook_class(splits, spec):
    """A user's training function whose model holds a class defined in a notebook."""
    from sklearn.pipeline import Pipeline

    from mlops_assets.ml.estimator import TrainingConfig, build_pipeline, model_input

    preprocess = build_pipeline(spec, TrainingConfig("ridge")).named_steps["preprocess"]
    pipeline = Pipeline([("preprocess", preprocess), ("regressor", NotebookRegressor())])
    train = splits["train"]
    return pipeline.fit(model_input(train, spec), train[spec.target.name])
