"""How trained_model fits: the estimator, its parameters and the types its saved model may
hold. Schedules and sensors train with these settings; a run's config overrides them."""

from __future__ import annotations

import json
from typing import Any

from dagster import ConfigurableResource

from mlops_assets.lib.env_settings import env_field
from mlops_assets.ml.estimator import EstimatorError, SearchConfig, TrainingConfig


class TrainingResource(ConfigurableResource):
    model_type: str = env_field(
        "MLOPS_MODEL_TYPE",
        "hist_gradient_boosting",
        "Estimator: hist_gradient_boosting, random_forest (either task), ridge (regression), "
        "logistic_regression (classification), or the import path of any scikit-learn-compatible "
        "regressor or classifier (e.g. sklearn.svm.SVR, or a class in a package you installed).",
    )
    model_params: str = env_field(
        "MLOPS_MODEL_PARAMS",
        "{}",
        'Estimator parameters as a JSON object, e.g. {"C": 2.0}.',
    )
    training_function: str = env_field(
        "MLOPS_TRAINING_FUNCTION",
        "",
        "Your own training code, package.module:function(splits, spec) returning a fitted "
        "regressor (or classifier) that predicts from the raw feature columns; set, it replaces "
        "MLOPS_MODEL_TYPE.",
    )
    search_trials: int = env_field(
        "MLOPS_SEARCH_TRIALS",
        0,
        "Hyperparameter search ahead of training: this many Optuna trials, each scored on the "
        "val split (0 with no time budget: no search).",
    )
    search_timeout_seconds: float = env_field(
        "MLOPS_SEARCH_TIMEOUT_SECONDS",
        0.0,
        "Time budget of the search in seconds: its trials and their logging to MLflow; no trial "
        "starts once it is spent, the final fit comes after (0: none; with trials, whichever "
        "ends first).",
    )
    search_space: str = env_field(
        "MLOPS_SEARCH_SPACE",
        "",
        'Search space as JSON, e.g. {"alpha": {"type": "float", "low": 0.01, "high": 10, '
        '"log": true}}; empty: the built-in type\'s space.',
    )
    trusted_types: str = env_field(
        "MLOPS_SKOPS_TRUSTED_TYPES",
        "",
        "Comma-separated types the saved model may contain beyond the project's reviewed list "
        "(a custom estimator's class, for one); skops loads no other. List only types you have "
        "reviewed.",
    )

    def config(
        self,
        model_type: str = "",
        params_json: str = "",
        random_state: int = 0,
        trusted_types: tuple[str, ...] = (),
        training_function: str = "",
        search_trials: int | None = None,
        search_timeout_seconds: float | None = None,
        search_space_json: str = "",
    ) -> TrainingConfig:
        """The training config: what a run asks for, the settings for what it leaves empty."""
        params = _json("estimator params", params_json or self.model_params)
        search = SearchConfig(
            trials=self.search_trials if search_trials is None else search_trials,
            timeout_seconds=(
                self.search_timeout_seconds
                if search_timeout_seconds is None
                else search_timeout_seconds
            ),
            space=_json("search space", search_space_json or self.search_space or "{}"),
        )
        extra = tuple(t.strip() for t in self.trusted_types.split(",") if t.strip())
        return TrainingConfig(
            model_type=model_type or self.model_type,
            params=params,
            random_state=random_state,
            trusted_types=(*extra, *trusted_types),
            # A run that names an estimator trains it, not the function the settings name.
            training_function=training_function or ("" if model_type else self.training_function),
            search=search,
        )


def _json(what: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise EstimatorError(f"{what}: not JSON ({exc}): {text!r}") from exc
