"""When a challenger replaces the champion."""

from __future__ import annotations

from dataclasses import dataclass

# metric -> True when lower is better (regression, then classification metrics)
METRIC_DIRECTION = {
    "rmse": True,
    "mae": True,
    "r2": False,
    "accuracy": False,
    "balanced_accuracy": False,
    "macro_f1": False,
    "roc_auc": False,
    "log_loss": True,
}


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    improvement: float | None


def relative_improvement(challenger: float, champion: float, metric: str) -> float:
    """Fraction by which the challenger is better than the champion (negative when worse)."""
    lower_is_better = METRIC_DIRECTION[metric]
    gain = champion - challenger if lower_is_better else challenger - champion
    return (
        gain / abs(champion) if champion != 0 else (1.0 if gain > 0 else 0.0 if gain == 0 else -1.0)
    )


def decide(
    challenger: float,
    champion: float | None,
    metric: str,
    min_improvement: float,
) -> PromotionDecision:
    """Promote when there is no champion, or when the challenger is strictly better on the same
    test split by at least ``min_improvement`` (a fraction of the champion's score)."""
    if metric not in METRIC_DIRECTION:
        raise ValueError(f"promotion metric '{metric}' is not one of {sorted(METRIC_DIRECTION)}")
    if champion is None:
        return PromotionDecision(True, "no champion yet", None)
    improvement = relative_improvement(challenger, champion, metric)
    if improvement > 0 and improvement >= min_improvement:
        return PromotionDecision(
            True,
            f"test {metric} {challenger:.6g} beats champion {champion:.6g} "
            f"by {improvement:.2%} (minimum {min_improvement:.2%})",
            improvement,
        )
    return PromotionDecision(
        False,
        f"test {metric} {challenger:.6g} vs champion {champion:.6g}: improvement "
        f"{improvement:.2%} is below the minimum {min_improvement:.2%}",
        improvement,
    )


@dataclass(frozen=True)
class Comparison:
    """A challenger and the champion scored on the same test split: what registered_model's
    gate compares, and what approving a challenger by hand is held to."""

    metric: str
    challenger_version: str
    challenger_score: float
    champion_version: str
    champion_score: float
    dataset: str  # the dataset version whose test split both were scored on

    @property
    def improvement(self) -> float:
        return relative_improvement(self.challenger_score, self.champion_score, self.metric)

    @property
    def worse(self) -> bool:
        return self.improvement < 0

    def describe(self) -> str:
        """``challenger v5 test log_loss 0.41 is 72% worse than champion v4's 0.24 on the same
        test split (dataset data-v1.0.0 (1a2b3c4d5e6f))``."""
        improvement = self.improvement
        if improvement < 0:
            how = f"is {_share(-improvement)} worse than"
        elif improvement > 0:
            how = f"is {_share(improvement)} better than"
        else:
            how = "scores the same as"
        return (
            f"challenger v{self.challenger_version} test {self.metric} "
            f"{self.challenger_score:.6g} {how} champion v{self.champion_version}'s "
            f"{self.champion_score:.6g} on the same test split (dataset {self.dataset})"
        )


def _share(fraction: float) -> str:
    """72%, or 0.35% below one percent."""
    return f"{fraction:.0%}" if fraction >= 0.01 else f"{fraction:.2%}"
