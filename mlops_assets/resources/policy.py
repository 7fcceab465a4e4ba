"""Thresholds and policies the checks and the promotion gate enforce."""

from __future__ import annotations

from dagster import ConfigurableResource

from mlops_assets.lib.env_settings import env_field

DRIFT_POLICIES = ("continue", "retrain", "rollback")


class LifecyclePolicy(ConfigurableResource):
    promotion_policy: str = env_field(
        "MLOPS_PROMOTION_POLICY",
        "auto",
        "auto: promote a better challenger; manual: wait for the approve_challenger job.",
    )
    promotion_metric: str = env_field(
        "MLOPS_PROMOTION_METRIC",
        "",
        "Test-split metric that decides promotion. Regression: rmse, mae or r2 (empty: rmse); "
        "classification: accuracy, balanced_accuracy, macro_f1, roc_auc or log_loss (empty: "
        "log_loss).",
    )
    min_improvement: float = env_field(
        "MLOPS_MIN_IMPROVEMENT",
        0.0,
        "Fraction by which a challenger must beat the champion.",
    )
    min_r2: float = env_field(
        "MLOPS_MIN_R2",
        0.5,
        "Lowest test R2 a trained model may have (blocking check).",
    )
    min_balanced_accuracy: float = env_field(
        "MLOPS_MIN_BALANCED_ACCURACY",
        0.6,
        "Lowest test balanced accuracy a trained classifier may have (blocking check).",
    )
    baseline_margin: float = env_field(
        "MLOPS_BASELINE_MARGIN",
        0.1,
        "Fraction by which a model must beat the naive baseline's test loss: RMSE of the train "
        "median (regression), log loss of the train class shares (classification).",
    )
    drift_share_threshold: float = env_field(
        "MLOPS_DRIFT_SHARE_THRESHOLD",
        0.3,
        "Share of drifted feature columns that fails the drift check (WARN).",
    )
    quality_tolerance: float = env_field(
        "MLOPS_QUALITY_TOLERANCE",
        0.25,
        "Fraction by which a labelled batch's quality may fall short of the champion's test "
        "quality before the quality check fails (ERROR): RMSE may be that much higher "
        "(regression), balanced accuracy that much lower (classification).",
    )
    max_quarantine_share: float = env_field(
        "MLOPS_MAX_QUARANTINE_SHARE",
        0.1,
        "Share of a day's batch set aside (rows that break a rule of the contract, or that the "
        "model cannot score) above which predictions' quarantine check fails (ERROR); any row "
        "set aside warns.",
    )
    drift_sample_rows: int = env_field(
        "MLOPS_DRIFT_SAMPLE_ROWS",
        50000,
        "Rows sampled from batch and reference for the drift report.",
    )
    drift_policy: str = env_field(
        "MLOPS_DRIFT_POLICY",
        "retrain",
        "What a failed drift_report check starts: continue (alerts only), retrain "
        "(refresh_model), or rollback (a failed quality check rolls the champion back; drift "
        "alone retrains).",
    )
    traffic_max_error_share: float = env_field(
        "MLOPS_TRAFFIC_MAX_ERROR_SHARE",
        0.05,
        "Share of a day's served requests refused (4xx, 5xx) above which served_traffic's "
        "check fails (WARN).",
    )
    traffic_max_dropped_share: float = env_field(
        "MLOPS_TRAFFIC_MAX_DROPPED_SHARE",
        0.01,
        "Share of a day's served requests the server answered but could not log (its buffer "
        "was full) above which served_traffic's check fails (WARN).",
    )
    retrain_cooldown_minutes: float = env_field(
        "MLOPS_RETRAIN_COOLDOWN_MINUTES",
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
                f"MLOPS_DRIFT_POLICY is '{self.drift_policy}'; expected one of "
                f"{', '.join(DRIFT_POLICIES)}"
            )
        if policy == "rollback" and check_name != "quality_not_degraded":
            return "retrain"  # drift alone says the data moved, not that the champion got worse
        return policy
