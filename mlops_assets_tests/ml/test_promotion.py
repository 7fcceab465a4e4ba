import pytest

from mlops_assets.ml.promotion import decide, relative_improvement


def test_first_model_is_promoted():
    assert decide(10.0, None, "rmse", 0.05).promote


def test_lower_rmse_by_the_minimum_is_promoted_and_less_is_not():
    assert decide(94.0, 100.0, "rmse", 0.05).promote
    decision = decide(96.0, 100.0, "rmse", 0.05)
    assert not decision.promote
    assert "below the minimum" in decision.reason


def test_a_tie_is_not_promoted_even_with_zero_minimum():
    assert not decide(100.0, 100.0, "rmse", 0.0).promote


def test_higher_r2_is_better():
    assert decide(0.9, 0.8, "r2", 0.1).promote
    assert not decide(0.7, 0.8, "r2", 0.0).promote
    assert relative_improvement(0.7, 0.8, "r2") < 0


def test_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="promotion metric 'auc'"):
        decide(1.0, 2.0, "auc", 0.0)


def test_a_comparison_names_both_versions_scores_and_the_split():
    from mlops_assets.ml.promotion import Comparison

    worse = Comparison("log_loss", "5", 0.4128, "4", 0.24, "data-v1.0.0 (1a2b3c4d5e6f)")
    assert worse.worse
    assert worse.describe() == (
        "challenger v5 test log_loss 0.4128 is 72% worse than champion v4's 0.24 on the same "
        "test split (dataset data-v1.0.0 (1a2b3c4d5e6f))"
    )
    better = Comparison("r2", "5", 0.9, "4", 0.8, "data-v1.0.0 (1a2b3c4d5e6f)")
    assert not better.worse
    assert "is 12% better than champion v4's 0.8" in better.describe()
    tie = Comparison("rmse", "5", 100.0, "4", 100.0, "d")
    assert not tie.worse
    assert "scores the same as champion v4's 100" in tie.describe()
    assert "0.10% worse" in Comparison("rmse", "5", 100.1, "4", 100.0, "d").describe()
