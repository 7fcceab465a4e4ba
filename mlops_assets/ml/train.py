"""Fit and evaluate the configured model (:mod:`mlops_assets.ml.estimator`) for the spec's
task, after a search when one is configured (:mod:`mlops_assets.ml.search`), and say what the
saved model needs: its code, its trusted types, its serving requirements.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_assets.ml import estimator, tasks
from mlops_assets.ml.estimator import (
    MODEL_TYPES,
    EstimatorError,
    TrainingConfig,
    build_pipeline,
    check_task,
    estimator_class,
    estimator_step,
    model_input,
    target_values,
    training_function,
)
from mlops_assets.ml.search import SearchResult, Trial, search
from mlops_assets.ml.serving import pinned
from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tasks import (
    answer,
    class_report,
    class_shares,
    classification_metrics,
    regression_metrics,
    score,
)

# skops refuses to load types it was not told to trust; these are the ones the
# Pipelines built here contain beyond sklearn's defaults, each reviewed.
SKOPS_TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.compose._column_transformer._RemainderColsList",
    "sklearn.tree._tree.Tree",  # the fitted trees of random_forest (and sklearn's tree models)
    "numpy.dtype",  # OneHotEncoder's output dtype parameter
    "mlops_assets.ml.answering.ClassAnswer",  # a registered classifier (ships in its model)
]


# What the served model needs to load and predict: pinned to the versions it was trained with,
# so the image serves exactly this model (MLflow's inference would also pick up whatever the
# training process happened to import).
SERVING_PACKAGES = ("mlflow", "scikit-learn", "skops", "numpy", "pandas", "scipy")


def serving_requirements() -> list[str]:
    return pinned(SERVING_PACKAGES)


# Top-level modules whose types the serving packages themselves provide.
_SERVING_MODULES = {"builtins", "collections", "numpy", "pandas", "scipy", "sklearn", "skops"}
# This project: not on a package index, so its source always travels in the model.
_PROJECT = __name__.split(".")[0]


@dataclass(frozen=True)
class ServedCode:
    """What the saved model needs beyond SERVING_PACKAGES to load where it is served."""

    code_paths: tuple[str, ...] = ()  # local source folders or files, copied into the model
    requirements: tuple[str, ...] = ()  # installed distributions, pinned


def saved_types(pipeline: Any) -> tuple[str, ...]:
    """The types in ``pipeline``'s skops file that skops does not trust by itself (one dump,
    for untrusted_types and served_code: dumping a forest of trees takes seconds)."""
    import skops.io

    return tuple(skops.io.get_untrusted_types(data=skops.io.dumps(pipeline)))


def served_code(types: Sequence[str]) -> ServedCode:
    """The code the model's own ``types`` (saved_types) come from, a custom estimator class
    say: a package installed from a distribution is pinned as a requirement; source that is
    not installed (a folder on the path) is copied into the MLflow model (``code_paths``),
    which MLflow puts on the path wherever it loads the model, in the served image too.

    A package may be a namespace package (a folder with no ``__init__.py``): it has no file of
    its own, so where it lives is read from the modules that define the types."""
    from importlib.metadata import packages_distributions

    by_package: dict[str, list[str]] = {}
    for name in types:
        package = name.split(".")[0]
        if package not in _SERVING_MODULES:
            by_package.setdefault(package, []).append(name)
    distributions: Mapping[str, list[str]] = {}
    code_paths: list[str] = []
    requirements: list[str] = []
    for package, names in sorted(by_package.items()):
        if package == "__main__":
            raise EstimatorError(
                f"the model holds {', '.join(names)}, defined in __main__ (a notebook or a "
                "script), which no model can carry to where it is served: move the class into "
                "a module of your package (e.g. my_team/models.py) and name it by that path"
            )
        files = [_defining_file(name) for name in names]
        found = _find_spec(package)
        if found is None or None in files:
            raise EstimatorError(f"the model holds types from '{package}', which cannot be found")
        sources = [Path(file) for file in files if file is not None]
        installed = any({"site-packages", "dist-packages"} & set(f.parts) for f in sources)
        from_distribution = installed and package != _PROJECT
        if from_distribution and not distributions:
            # Reads every installed distribution's file list (a second): only when needed.
            distributions = packages_distributions()
        if from_distribution and package in distributions:
            requirements.extend(pinned(_owners(distributions[package], sources)))
        elif package == _PROJECT:
            code_paths.append(str(project_runtime(names)))
        elif found.submodule_search_locations is None:  # a module, not a package
            code_paths.append(str(found.origin))
        else:
            code_paths.append(_folder_holding(package, found.submodule_search_locations, sources))
    return ServedCode(tuple(code_paths), tuple(requirements))


def project_runtime(types: Sequence[str]) -> Path:
    """The modules of this project that ``types`` (ClassAnswer) need, and the project modules
    those import, in a folder laid out as the package (its ``__init__.py`` files empty): what a
    saved model carries of the project, a few files, not the whole package (its components,
    resources and local stack). The folder is named by its content, so the same runtime is
    written once."""
    import ast
    import tempfile

    root = Path(_find_spec(_PROJECT).submodule_search_locations[0])

    def source(module: str) -> Path | None:
        path = root.joinpath(*module.split(".")[1:])
        return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None

    needed: dict[str, Path] = {}
    todo = [name.rsplit(".", 1)[0] for name in types]
    while todo:
        module = todo.pop()
        path = source(module)
        if module in needed or path is None:
            continue
        needed[module] = path
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                todo += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            todo = [m for m in todo if m.split(".")[0] == _PROJECT]
    digest = hashlib.sha256()
    for module in sorted(needed):
        digest.update(module.encode() + b"\0" + needed[module].read_bytes() + b"\0")
    folder = Path(tempfile.gettempdir()) / f"mlops-model-runtime-{digest.hexdigest()[:16]}"
    package = folder / _PROJECT
    if not package.is_dir():
        staging = Path(tempfile.mkdtemp(prefix="mlops-model-runtime-"))
        for module, path in needed.items():
            parts = module.split(".")
            for depth in range(1, len(parts)):
                init = staging.joinpath(*parts[:depth], "__init__.py")
                init.parent.mkdir(parents=True, exist_ok=True)
                init.touch()
            staging.joinpath(*parts).with_suffix(".py").write_bytes(path.read_bytes())
        try:
            staging.rename(folder)  # whole or not at all, whoever writes it first
        except OSError:
            import shutil

            shutil.rmtree(staging, ignore_errors=True)
    return package


def _find_spec(name: str) -> Any:
    """importlib's spec of module ``name``, or None where it has none (a module of a package
    that is not a package itself, say)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None


def _defining_file(type_name: str) -> str | None:
    """The source file of the module that defines ``type_name`` (module.Class), or None."""
    parts = type_name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        found = _find_spec(".".join(parts[:end]))
        if found is not None and found.has_location and found.origin:
            return str(found.origin)
    return None


def _folder_holding(package: str, folders: Iterable[str], sources: Sequence[Path]) -> str:
    """The one folder of ``package`` that holds all ``sources``: a regular package has one;
    a namespace package has one for each path entry it is found on (its portions), and
    MLflow copies each code path to a folder of its own name, so only one of them can go."""
    holding = [f for f in folders if any(s.is_relative_to(Path(f)) for s in sources)]
    if len(holding) != 1:
        raise EstimatorError(
            f"the model holds types from {len(holding)} folders of '{package}' "
            f"({', '.join(holding)}), a namespace package; a model carries one folder of each "
            "name: keep the classes the model holds in one of them"
        )
    return holding[0]


def _owners(distributions: Sequence[str], sources: Sequence[Path]) -> list[str]:
    """The distributions among ``distributions`` (those that install a top-level name) that
    install the files ``sources``: several share a namespace package such as ``google``."""
    from importlib.metadata import distribution

    if len(distributions) == 1:
        return list(distributions)
    wanted = {source.resolve() for source in sources}
    owners = []
    for name in distributions:
        found = distribution(name)
        files = {Path(str(found.locate_file(f))).resolve() for f in found.files or ()}
        if wanted & files:
            owners.append(name)
    return owners or list(distributions[:1])


def training_fingerprint(dataset_digest: str, config: TrainingConfig) -> str:
    """What decides the model a training run produces: the dataset version (its rows, schema
    and processing), the training config, this module's code (the Pipeline and how it is fitted)
    and the versions of the packages that fit and serve it. The same fingerprint trains the
    same model again, so it is not trained twice."""
    from importlib.metadata import version

    identity: dict[str, Any] = {
        "dataset_digest": dataset_digest,
        "training_code": hashlib.sha256(
            Path(__file__).read_bytes()
            + Path(estimator.__file__).read_bytes()
            + Path(tasks.__file__).read_bytes()
        ).hexdigest(),
        "model_type": config.model_type,
        "params": config.params,
        "random_state": config.random_state,
        "packages": {name: version(name) for name in SERVING_PACKAGES},
    }
    if config.search.enabled:
        identity["search"] = {
            "trials": config.search.trials,
            "timeout_seconds": config.search.timeout_seconds,
            "space": config.search.space,
        }
    # The user's own code decides the model too: the source of its module.
    if config.training_function:
        identity["training_function"] = config.training_function
        identity["user_code"] = _source_digest(training_function(config.training_function))
    elif config.model_type not in MODEL_TYPES:
        identity["user_code"] = _source_digest(estimator_class(config.model_type))
    encoded = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()[:32]


def _source_digest(code: Any) -> str:
    source = inspect.getsourcefile(code)
    return hashlib.sha256(Path(source).read_bytes()).hexdigest() if source else ""


@dataclass
class TrainingResult:
    pipeline: Any
    metrics: dict[str, float]
    params: dict[str, Any]
    search: SearchResult | None = None  # when a search ran ahead of training
    # classification: the test split's per-class precision/recall/support and confusion matrix
    test_classes: tuple[list[dict[str, Any]], list[list[int]]] | None = None


def untrusted_types(types: Sequence[str], trusted: tuple[str, ...] = ()) -> list[str]:
    """The model's ``types`` (saved_types) that neither skops, the reviewed SKOPS_TRUSTED_TYPES
    nor ``trusted`` allow: a model containing any is not saved, so never loaded unreviewed."""
    return sorted(set(types) - set(SKOPS_TRUSTED_TYPES) - set(trusted))


class TrainingDataError(EstimatorError):
    """The training split cannot teach this task (e.g. a single class)."""


def check_training_data(train: pd.DataFrame, spec: DatasetSpec) -> None:
    if spec.task != "classification":
        return
    seen = sorted(set(train[spec.target.name].astype(str)))
    if len(seen) < 2:
        raise TrainingDataError(
            f"target '{spec.target.name}' has only the class {seen} in the train split "
            f"({len(train)} rows): a classifier needs at least two of "
            f"{', '.join(spec.classes)}"
        )


def fit(
    splits: dict[str, pd.DataFrame],
    spec: DatasetSpec,
    config: TrainingConfig,
    on_trial: Callable[[Trial], None] | None = None,
) -> TrainingResult:
    """Fit on train; report the task's metrics on val and test, and those of a naive baseline:
    the train median for every row (regression), or the majority class with the train class
    shares as probabilities (classification). With ``config.training_function`` the user's
    function fits the model instead (see fit_with_user_code). A search ahead of training
    hands each trial to ``on_trial`` as it finishes, inside its time budget (see search)."""
    target = spec.target.name
    train = splits["train"]
    check_training_data(train, spec)
    searched = None
    if config.training_function:
        pipeline = fit_with_user_code(splits, spec, config.training_function)
        params: dict[str, Any] = {
            "training_function": config.training_function,
            **_scalar_params(pipeline),
        }
    else:
        if config.search.enabled:
            # The search gets train and val only: the test split is for the gates.
            searched = search(train, splits["val"], spec, config, config.search, on_trial)
            config = replace(config, params={**config.params, **searched.best_params})
        pipeline = build_pipeline(spec, config)
        try:
            pipeline.fit(model_input(train, spec), target_values(train, spec))
        except MemoryError:
            raise
        except Exception as exc:  # a parameter value the estimator refuses, say
            raise EstimatorError(
                f"model_type '{config.model_type}' with params {config.params} cannot be "
                f"fitted to the train split: {type(exc).__name__}: {exc}"
            ) from exc
        params = {"model_type": config.model_type, "random_state": config.random_state}
        params.update(pipeline.named_steps[estimator_step(spec)].get_params())
    metrics: dict[str, float] = {}
    test_classes = None
    if spec.task == "regression":
        metrics["train_target_min"] = float(train[target].min())
        metrics["train_target_max"] = float(train[target].max())
    for name in ("val", "test"):
        part = splits[name]
        y = target_values(part, spec)
        answers = answer(pipeline, model_input(part, spec), spec)
        for key, value in score(y, answers, spec).items():
            metrics[f"{name}_{key}"] = value
        for key, value in _baseline(train, y, spec).items():
            metrics[f"baseline_{name}_{key}"] = value
        if name == "test" and spec.task == "classification":
            test_classes = class_report(y, answers[tasks.PREDICTION], spec.classes)
    return TrainingResult(
        pipeline=pipeline,
        metrics=metrics,
        params=params,
        search=searched,
        test_classes=test_classes,
    )


def _baseline(train: pd.DataFrame, y: np.ndarray, spec: DatasetSpec) -> dict[str, float]:
    """The naive model's metrics on ``y``: the train median, or the train class shares."""
    if spec.task == "classification":
        shares = class_shares(train[spec.target.name], spec.classes)
        return classification_metrics(y, np.tile(shares, (len(y), 1)), spec.classes)
    median = float(train[spec.target.name].median())
    return regression_metrics(y, np.full(len(y), median))


def fit_with_user_code(splits: dict[str, pd.DataFrame], spec: DatasetSpec, path: str) -> Any:
    """Call the user's ``package.module:function(splits, spec)`` with the train and val splits
    (the test split is kept back for the gates). It returns a fitted scikit-learn regressor
    (a classifier with predict_proba when the spec's task is classification), usually a
    Pipeline, that predicts from ``model_input(frame, spec)``: the raw feature columns,
    exactly as the served model is called. ``build_pipeline`` is there to reuse."""
    function = training_function(path)
    name = f"training function '{path}'"
    model = function({part: splits[part].copy() for part in ("train", "val")}, spec)
    if not callable(getattr(model, "predict", None)):
        raise EstimatorError(f"{name} returned {type(model).__name__}, not a fitted estimator")
    check_task(model, name, spec.task)
    try:
        answer(model, model_input(splits["val"].head(5), spec), spec)
    except Exception as exc:  # the user's model, any failure: say which and why
        raise EstimatorError(
            f"{name} returned a model that cannot predict from the spec's feature columns "
            f"({', '.join(spec.feature_columns)}): {type(exc).__name__}: {exc}"
        ) from exc
    return model


def _scalar_params(model: Any) -> dict[str, Any]:
    """The final estimator's plain parameters, for tracking."""
    final = model.steps[-1][1] if hasattr(model, "steps") else model
    return {
        key: value
        for key, value in final.get_params(deep=False).items()
        if isinstance(value, (str, int, float, bool)) or value is None
    }
