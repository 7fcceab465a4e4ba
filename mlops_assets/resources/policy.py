"""Thresholds and policies the checks and the promotion gate enforce."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

DRIFT_POLICIES = ("continue", "retrain", "rollback")


class LifecyclePolicy(ConfigurableResource):
    promotion_policy: str = Field(
        default="auto", description="auto: promote a better challenger; manual: approve by job"
    )
    promotion_metric: str = Field(default="rmse", description="rmse, mae or r2 on the test split")
    min_improvement: float = Field(
        default=0.0, description="fraction by which a challenger must beat the champion"
    )
    min_r2: float = Field(default=0.5, description="lowest acceptable test R2")
    baseline_margin: float = Field(
        default=0.1, description="fraction by which test RMSE must beat the median baseline"
    )
    drift_share_threshold: float = Field(
        default=0.3, description="share of drifted feature columns that fails the drift check"
    )
    quality_tolerance: float = Field(
        default=0.25,
        description="allowed fractional rise of batch RMSE over the champion's test RMSE",
    )
    drift_sample_rows: int = Field(default=50_000, description="rows sampled for drift reports")
    drift_policy: str = Field(
        default="retrain",
        description="what a failed drift_report check starts: continue, retrain or rollback",
    )
    retrain_cooldown_minutes: float = Field(
        default=360, description="quiet time after a run started by the drift policy"
    )

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
