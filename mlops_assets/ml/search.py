"""Hyperparameter search ahead of training (Optuna), scored on the validation split only.

The search sees the train and val splits and nothing else: the test split stays unread until
the final model, fitted with the best parameters, is evaluated for the gates. The sampler is
seeded with the training config's random state, so the same data, config and number of trials
give the same best parameters (a time budget stops after however many trials fit in it). A
trial that fails is recorded with its error and skipped; all of them failing is an error.

The time budget is the search's as a user sees it: its trials and the logging of each one
(``on_trial``, called as each trial finishes) count against it. No trial starts once it is
spent, so the search ends within the budget plus the trial then running; the final fit with
the best parameters comes after it.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.ml.estimator import (
    SearchConfig,
    SearchFailed,
    TrainingConfig,
    build_pipeline,
    model_input,
    space_for,
    target_values,
)
from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tasks import LOSS, answer, score


def objective_name(spec: DatasetSpec) -> str:
    """What a trial minimises: the task's loss on the validation split."""
    return f"val_{LOSS[spec.task]}"


@dataclass(frozen=True)
class Trial:
    number: int
    params: dict[str, Any]
    value: float | None  # the validation objective; None when the trial failed
    error: str = ""
    seconds: float = 0.0  # fitting and scoring
    started: float = 0.0  # seconds into the search when the trial started


@dataclass(frozen=True)
class SearchResult:
    best_params: dict[str, Any]
    best_value: float
    trials: tuple[Trial, ...]
    space: dict[str, dict[str, Any]]
    objective: str = "val_rmse"
    seconds: float = 0.0  # the search's wall time, the logging of its trials included

    @property
    def failed(self) -> int:
        return sum(1 for t in self.trials if t.value is None)


def search(
    train: pd.DataFrame,
    val: pd.DataFrame,
    spec: DatasetSpec,
    config: TrainingConfig,
    search_config: SearchConfig,
    on_trial: Callable[[Trial], None] | None = None,
) -> SearchResult:
    """Search ``config``'s estimator's parameters on ``train``, scoring each on ``val``.

    ``on_trial`` (logging a trial, say) gets each trial as it finishes, failed ones too, and
    its time counts against the search's time budget; an error it raises ends the search."""
    import optuna

    space = space_for(config, search_config)
    budget = search_config.timeout_seconds
    began = time.monotonic()
    # Failed trials are recorded here (and in MLflow); Optuna need not print their tracebacks.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    x_train, y_train = model_input(train, spec), target_values(train, spec)
    x_val, y_val = model_input(val, spec), target_values(val, spec)
    metric = LOSS[spec.task]
    trials: list[Trial] = []

    def objective(trial: optuna.Trial) -> float:
        started = time.monotonic()
        params: dict[str, Any] = {}

        def record(value: float | None, error: str = "") -> None:
            seconds = time.monotonic() - started
            trials.append(Trial(trial.number, params, value, error, seconds, started - began))

        try:
            params.update({name: _suggest(trial, name, entry) for name, entry in space.items()})
            candidate = replace(config, params={**config.params, **params})
            pipeline = build_pipeline(spec, candidate).fit(x_train, y_train)
            value = score(y_val, answer(pipeline, x_val, spec), spec)[metric]
            if not np.isfinite(value):
                raise ValueError(f"validation {metric} is {value}")
        except Exception as exc:  # any failure of one trial: record it, go on with the next
            record(None, f"{type(exc).__name__}: {exc}")
            raise
        record(value)
        return value

    def finished(study: optuna.Study, _: Any) -> None:
        # Outside the objective, so a logging error is not taken for the trial's own failure.
        if on_trial is not None:
            on_trial(trials[-1])
        if budget and time.monotonic() - began >= budget:
            study.stop()

    study = optuna.create_study(
        direction="minimize", sampler=optuna.samplers.TPESampler(seed=config.random_state)
    )
    # The budget is kept by `finished`, on the search's own clock (Optuna's timeout would leave
    # out what comes before optimize); it is checked after each trial and its logging.
    study.optimize(
        objective,
        n_trials=search_config.trials or None,
        catch=(Exception,),
        callbacks=[finished],
    )
    done = [t for t in trials if t.value is not None]
    if not done:
        first = trials[0].error if trials else "no trial ran within the time budget"
        raise SearchFailed(f"all {len(trials)} search trials failed; the first: {first}")
    best = min(done, key=lambda t: (t.value, t.number))
    return SearchResult(
        best.params,
        float(best.value or 0.0),
        tuple(trials),
        space,
        objective_name(spec),
        time.monotonic() - began,
    )


def _suggest(trial: Any, name: str, entry: dict[str, Any]) -> Any:
    log = bool(entry.get("log"))
    if entry["type"] == "int":
        return trial.suggest_int(name, int(entry["low"]), int(entry["high"]), log=log)
    if entry["type"] == "float":
        return trial.suggest_float(name, float(entry["low"]), float(entry["high"]), log=log)
    return trial.suggest_categorical(name, list(entry["choices"]))


def history_png(result: SearchResult) -> bytes:
    """The optimisation history: each trial's validation objective and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    done = [t for t in result.trials if t.value is not None]
    numbers = [t.number for t in done]
    values = [float(t.value or 0.0) for t in done]
    best = np.minimum.accumulate(values)
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    axes.scatter(numbers, values, s=18, label="trial")
    axes.step(numbers, best, where="post", color="tab:red", label="best so far")
    failed = [t.number for t in result.trials if t.value is None]
    if failed:
        marks = [max(values)] * len(failed)
        axes.scatter(failed, marks, marker="x", color="grey", label=f"failed ({len(failed)})")
    axes.set_xlabel("trial")
    axes.set_ylabel(result.objective.replace("val_", "validation ").replace("_", " "))
    axes.set_title("Hyperparameter search: optimisation history")
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
