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
