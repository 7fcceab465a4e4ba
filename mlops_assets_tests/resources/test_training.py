"""TrainingSettings: the settings train; a run's config overrides each of them."""

import pytest

from mlops_assets.components.lifecycle.settings import TrainingSettings
from mlops_assets.ml.estimator import EstimatorError


def test_settings_apply_where_the_run_config_is_empty():
    settings = TrainingSettings(
        model_type="sklearn.svm.SVR", model_params='{"C": 2.0}', trusted_types="a.B, c.D"
    )
    config = settings.config()
    assert (config.model_type, config.params) == ("sklearn.svm.SVR", {"C": 2.0})
    assert config.trusted_types == ("a.B", "c.D")
    run = settings.config("ridge", '{"alpha": 3}', random_state=4, trusted_types=("e.F",))
    assert (run.model_type, run.params, run.random_state) == ("ridge", {"alpha": 3}, 4)
    assert run.trusted_types == ("a.B", "c.D", "e.F")


def test_params_that_are_not_a_json_object_are_refused_with_the_text():
    with pytest.raises(EstimatorError, match=r"estimator params: not JSON .*'\{C: 2\}'"):
        TrainingSettings(model_params="{C: 2}").config()
    with pytest.raises(EstimatorError, match="must be a JSON object"):
        TrainingSettings(model_params="[1, 2]").config()


def test_the_house_models_settings_come_from_the_environment(clean_env, monkeypatch):
    """For the house-price model, through its defs.yaml's templates."""
    from mlops_assets_tests.components.test_lifecycle import scopes

    monkeypatch.setenv("MLOPS_MODEL_TYPE", "sklearn.linear_model.Lasso")
    monkeypatch.setenv("MLOPS_MODEL_PARAMS", '{"alpha": 0.5}')
    config = scopes()["house_prices"].training.config()
    assert (config.model_type, config.params) == ("sklearn.linear_model.Lasso", {"alpha": 0.5})


def test_search_settings_and_their_run_overrides():
    settings = TrainingSettings(
        search_trials=20, search_space='{"alpha": {"type": "float", "low": 1, "high": 2}}'
    )
    search = settings.config().search
    assert (search.trials, search.timeout_seconds) == (20, 0.0)
    assert search.space == {"alpha": {"type": "float", "low": 1, "high": 2}}
    run = settings.config(search_trials=0, search_timeout_seconds=30.0).search
    assert (run.trials, run.timeout_seconds, run.enabled) == (0, 30.0, True)
    assert not TrainingSettings().config().search.enabled
