"""A model's own settings: how it trains and the policies its checks and gate enforce.

Each field is an attribute of the ModelLifecycle component (``training`` and ``policy`` in a
model's defs.yaml): its default and description are declared here once, and the component's
schema, ``dg docs`` and the README's settings table show them from here. Plain values, not
Dagster resources: a model's assets get them as parameters (``ModelScope.bind``).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mlops_assets.ml.estimator import EstimatorError, SearchConfig, TrainingConfig

DRIFT_POLICIES = ("continue", "retrain", "rollback")


def setting_field(default: Any, description: str) -> Any:
    """A model setting: its default and what it sets."""
    return Field(default=default, description=description)


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TrainingSettings(_Settings):
    """How a model's trained_model fits: the estimator, its parameters, the search and the
    types its saved model may hold. Schedules and sensors train with these; a run's config
    overrides them."""

    model_type: str = setting_field(
        "hist_gradient_boosting",
        "Estimator: hist_gradient_boosting, random_forest (either task), ridge (regression), "
        "logistic_regression (classification), or the import path of any scikit-learn-compatible "
        "regressor or classifier (e.g. sklearn.svm.SVR, or a class in a package you installed).",
    )
    model_params: str = setting_field(
        "{}",
        'Estimator parameters as a JSON object, e.g. {"C": 2.0}.',
    )
    training_function: str = setting_field(
        "",
        "Your own training code, package.module:function(splits, spec) returning a fitted "
        "regressor (or classifier) that predicts from the raw feature columns; set, it replaces "
        "model_type.",
    )
    search_trials: int = setting_field(
        0,
        "Hyperparameter search ahead of training: this many Optuna trials, each scored on the "
        "val split (0 with no time budget: no search).",
    )
    search_timeout_seconds: float = setting_field(
        0.0,
        "Time budget of the search in seconds: its trials and their logging to MLflow; no trial "
        "starts once it is spent, the final fit comes after (0: none; with trials, whichever "
        "ends first).",
    )
    search_space: str = setting_field(
        "",
        'Search space as JSON, e.g. {"alpha": {"type": "float", "low": 0.01, "high": 10, '
        '"log": true}}; empty: the built-in type\'s space.',
    )
    trusted_types: str = setting_field(
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


class PolicySettings(_Settings):
    """Thresholds of a model's checks, its promotion gate and its drift policy."""

    promotion_policy: str = setting_field(
        "auto",
        "auto: promote a better challenger; manual: wait for the approve_challenger job.",
    )
    promotion_metric: str = setting_field(
        "",
        "Test-split metric that decides promotion. Regression: rmse, mae or r2 (empty: rmse); "
        "classification: accuracy, balanced_accuracy, macro_f1, roc_auc or log_loss (empty: "
        "log_loss).",
    )
    min_improvement: float = setting_field(
        0.0,
        "Fraction by which a challenger must beat the champion.",
    )
    min_r2: float = setting_field(
        0.5,
        "Lowest test R2 a trained model may have (blocking check).",
    )
    min_balanced_accuracy: float = setting_field(
        0.6,
        "Lowest test balanced accuracy a trained classifier may have (blocking check).",
    )
    baseline_margin: float = setting_field(
        0.1,
        "Fraction by which a model must beat the naive baseline's test loss: RMSE of the train "
        "median (regression), log loss of the train class shares (classification).",
    )
    drift_share_threshold: float = setting_field(
        0.3,
        "Share of drifted feature columns that fails the drift check (WARN).",
    )
    quality_tolerance: float = setting_field(
        0.25,
        "Fraction by which a labelled batch's quality may fall short of the champion's test "
        "quality before the quality check fails (ERROR): RMSE may be that much higher "
        "(regression), balanced accuracy that much lower (classification).",
    )
    max_quarantine_share: float = setting_field(
        0.1,
        "Share of a day's batch set aside (rows that break a rule of the contract, or that the "
        "model cannot score) above which predictions' quarantine check fails (ERROR); any row "
        "set aside warns.",
    )
    drift_sample_rows: int = setting_field(
        50000,
        "Rows sampled from batch and reference for the drift report.",
    )
    drift_policy: str = setting_field(
        "retrain",
        "What a failed drift_report check starts: continue (alerts only), retrain "
        "(refresh_model), or rollback (a failed quality check rolls the champion back; drift "
        "alone retrains).",
    )
    traffic_max_error_share: float = setting_field(
        0.05,
        "Share of a day's served requests refused (4xx, 5xx) above which served_traffic's "
        "check fails (WARN).",
    )
    traffic_max_dropped_share: float = setting_field(
        0.01,
        "Share of a day's served requests the server answered but could not log (its buffer "
        "was full) above which served_traffic's check fails (WARN).",
    )
    retrain_cooldown_minutes: float = setting_field(
        360.0,
        "After a run started by the drift policy, further drift failures start nothing for "
        "this long.",
    )

    def metric_for(self, task: str) -> str:
        """The promotion metric: the one set, else the task's default."""
        from mlops_assets.ml.tasks import LOSS

        return self.promotion_metric.strip() or LOSS[task]

    def drift_action(self, check_name: str) -> str:
        """``continue``, ``retrain`` or ``rollback`` for a failed check of drift_report."""
        policy = self.drift_policy.strip().lower()
        if policy not in DRIFT_POLICIES:
            raise ValueError(
                f"policy.drift_policy is '{self.drift_policy}'; expected one of "
                f"{', '.join(DRIFT_POLICIES)}"
            )
        if policy == "rollback" and check_name != "quality_not_degraded":
            return "retrain"  # drift alone says the data moved, not that the champion got worse
        return policy
