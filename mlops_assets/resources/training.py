"""How trained_model fits: the estimator, its parameters and the types its saved model may
hold. Schedules and sensors train with these settings; a run's config overrides them."""

from __future__ import annotations

import json

from dagster import ConfigurableResource

from mlops_assets.ml.train import EstimatorError, TrainingConfig
from mlops_assets.settings import env_field


class TrainingResource(ConfigurableResource):
    model_type: str = env_field(
        "MLOPS_MODEL_TYPE",
        "hist_gradient_boosting",
        "Estimator: hist_gradient_boosting, random_forest, ridge, or the import path of any "
        "scikit-learn-compatible regressor (e.g. sklearn.svm.SVR, or a class in a package you "
        "installed).",
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
        "regressor that predicts from the raw feature columns; set, it replaces MLOPS_MODEL_TYPE.",
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
    ) -> TrainingConfig:
        """The training config: what a run asks for, the settings for what it leaves empty."""
        text = params_json or self.model_params
        try:
            params = json.loads(text)
        except ValueError as exc:
            raise EstimatorError(f"estimator params are not JSON ({exc}): {text!r}") from exc
        extra = tuple(t.strip() for t in self.trusted_types.split(",") if t.strip())
        return TrainingConfig(
            model_type=model_type or self.model_type,
            params=params,
            random_state=random_state,
            trusted_types=(*extra, *trusted_types),
            # A run that names an estimator trains it, not the function the settings name.
            training_function=training_function or ("" if model_type else self.training_function),
        )
