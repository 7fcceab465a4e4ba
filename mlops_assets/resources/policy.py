"""Thresholds and policies the checks and the promotion gate enforce."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field


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
