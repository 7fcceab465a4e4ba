"""Hyperparameter search: seeded, scored on val only, failures recorded, a picture to look at."""

import re
import time
from dataclasses import replace

import numpy as np
import pytest

from mlops_assets.ml.dataset import clean, split
from mlops_assets.ml.estimator import EstimatorError, SearchConfig, SearchFailed, TrainingConfig
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets.ml.search import history_png, search
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.tabular import TableFile, read_validated
from mlops_assets.ml.train import fit, training_fingerprint

RIDGE_SEARCH = TrainingConfig("ridge", random_state=3, search=SearchConfig(trials=8))


@pytest.fixture(scope="module")
def splits():
    frame = read_validated(
        [TableFile("h.csv", to_csv_bytes(generate_house_prices(2000, seed=11)))], HOUSE_PRICES
    ).frame
    return split(clean(frame, HOUSE_PRICES)[0], HOUSE_PRICES)


def test_a_seeded_search_finds_the_same_best_params_and_trains_with_them(splits):
    first = fit(splits, HOUSE_PRICES, RIDGE_SEARCH)
    again = fit(splits, HOUSE_PRICES, RIDGE_SEARCH)
    assert first.search.best_params == again.search.best_params
    assert [t.value for t in first.search.trials] == [t.value for t in again.search.trials]
    assert len(first.search.trials) == 8
    assert first.search.best_value == min(t.value for t in first.search.trials)
    # The final model is trained with the best parameters.
    assert first.params["alpha"] == first.search.best_params["alpha"]
    other_seed = fit(splits, HOUSE_PRICES, replace(RIDGE_SEARCH, random_state=4))
    assert other_seed.search.best_params != first.search.best_params


def test_the_time_budget_counts_the_logging_of_each_trial(splits):
    """Each trial is handed to ``on_trial`` (logging it, here to a tracking server that takes a
    quarter of a second) as it finishes, and that time is the search's: no trial starts once
    the trials and their logging have spent the budget."""
    log_seconds, budget = 0.25, 1.5
    logged: list[int] = []

    def log(trial):
        time.sleep(log_seconds)
        logged.append(trial.number)

    config = replace(RIDGE_SEARCH, search=SearchConfig(timeout_seconds=budget))
    result = search(splits["train"], splits["val"], HOUSE_PRICES, config, config.search, log)
    trials = result.trials
    assert logged == [t.number for t in trials] == list(range(len(trials)))
    assert result.seconds >= log_seconds * len(trials)  # the logging is inside the search
    # A trial was followed by another only if it and its logging ended inside the budget.
    assert all(t.started + t.seconds + log_seconds < budget for t in trials[:-1])
    assert len(trials) < budget / log_seconds + 1
    # Ridge's search alone would run hundreds of trials in the budget.
    assert result.seconds < budget + trials[-1].seconds + log_seconds + 1.0


def test_the_search_never_reads_the_test_split(splits):
    """Replace the test split's rows with noise: the search, which is scored on val only, goes
    exactly as before; only the final test metrics change."""
    rng = np.random.default_rng(0)
    noisy = splits["test"].copy()
    noisy["price"] = rng.permutation(noisy["price"].to_numpy()) * 3
    real = fit(splits, HOUSE_PRICES, RIDGE_SEARCH)
    scrambled = fit({**splits, "test": noisy}, HOUSE_PRICES, RIDGE_SEARCH)
    assert [t.value for t in scrambled.search.trials] == [t.value for t in real.search.trials]
    assert scrambled.search.best_params == real.search.best_params
    assert scrambled.metrics["test_rmse"] != real.metrics["test_rmse"]


def test_a_failing_trial_is_recorded_and_skipped(splits):
    space = {"alpha": {"type": "float", "low": -5.0, "high": 5.0}}  # Ridge refuses alpha < 0
    config = replace(RIDGE_SEARCH, search=SearchConfig(trials=10, space=space))
    result = fit(splits, HOUSE_PRICES, config).search
    failed = [t for t in result.trials if t.value is None]
    done = [t for t in result.trials if t.value is not None]
    assert failed, "the seeded sampler should have tried a negative alpha"
    assert done, "and a non-negative one"
    assert all(t.params["alpha"] < 0 for t in failed)
    assert "'alpha' parameter of Ridge" in failed[0].error
    assert result.best_params["alpha"] >= 0
    assert history_png(result).startswith(b"\x89PNG")


def test_all_trials_failing_is_a_clear_error(splits):
    space = {"alpha": {"type": "categorical", "choices": [-1.0, -2.0]}}
    config = replace(RIDGE_SEARCH, search=SearchConfig(trials=3, space=space))
    with pytest.raises(SearchFailed, match=r"all 3 search trials failed; the first: "):
        search(splits["train"], splits["val"], HOUSE_PRICES, config, config.search)


def test_a_custom_estimator_searches_the_space_it_is_given(splits):
    lasso = TrainingConfig("sklearn.linear_model.Lasso", {"max_iter": 5000})
    with pytest.raises(SearchFailed, match="has no built-in search space: give one as JSON"):
        replace(lasso, search=SearchConfig(trials=2)).check()
    space = {"alpha": {"type": "float", "low": 0.1, "high": 100.0, "log": True}}
    config = replace(lasso, search=SearchConfig(trials=4, space=space))
    config.check()
    result = fit(splits, HOUSE_PRICES, config)
    assert 0.1 <= result.params["alpha"] <= 100.0
    assert result.params["max_iter"] == 5000


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"alpha": {"type": "float", "low": 2, "high": 1}}, "give low < high"),
        ({"alpha": {"type": "categorical"}}, "categorical needs a 'choices' list"),
        ({"alpha": {"type": "normal"}}, "type must be int, float or categorical"),
        ({"alpha": 3}, "must map each parameter to its range"),
    ],
)
def test_a_malformed_space_is_refused_before_any_trial(space, message):
    config = replace(RIDGE_SEARCH, search=SearchConfig(trials=2, space=space))
    with pytest.raises(SearchFailed, match=re.escape(message)):
        config.check()


def test_search_and_a_training_function_do_not_mix():
    with pytest.raises(EstimatorError, match="a training function does its own tuning"):
        TrainingConfig(training_function="a.b:c", search=SearchConfig(trials=2))


def test_the_search_is_part_of_the_training_fingerprint():
    plain = training_fingerprint("d", TrainingConfig("ridge"))
    assert training_fingerprint("d", replace(RIDGE_SEARCH, random_state=0)) != plain
    assert training_fingerprint("d", TrainingConfig("ridge", search=SearchConfig())) == plain
