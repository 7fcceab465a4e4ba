"""trained_model and registered_model: fit, track, register and gate the champion."""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
    multi_asset_check,
)
from pydantic import Field

from mlops_assets.components.lifecycle.scope import ModelScope
from mlops_assets.components.lifecycle.settings import PolicySettings, TrainingSettings
from mlops_assets.lib.champion import dataset_label, score_on_test
from mlops_assets.lib.datasets import dataset_manifest, dataset_splits
from mlops_assets.lib.exclusive import exclusive, model_lease
from mlops_assets.lib.metadata import md_table
from mlops_assets.lib.pod_resources import training_tags
from mlops_assets.lib.retries import SERVER_RETRY, fail_fast
from mlops_assets.ml.dataset_store import DatasetStore
from mlops_assets.ml.estimator import EstimatorError, TrainingConfig, model_input
from mlops_assets.ml.promotion import Comparison, decide, relative_improvement
from mlops_assets.ml.search import objective_name
from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tasks import (
    LOSS,
    PREDICTION,
    QUALITY_METRIC,
    answer,
    confusion_matrix_png,
    metrics_for,
)
from mlops_assets.ml.train import (
    SKOPS_TRUSTED_TYPES,
    TrainingResult,
    fit,
    saved_types,
    served_code,
    serving_requirements,
    training_fingerprint,
    untrusted_types,
)
from mlops_assets.records import (
    DatasetVersion,
    Registration,
    TrainedModel,
    champion_data_version,
)
from mlops_assets.resources.dataset_source import DatasetSourceResource
from mlops_assets.resources.leases import Lease
from mlops_assets.resources.mlflow_registry import (
    CHALLENGER,
    CHAMPION,
    FINGERPRINT_TAG,
    MODEL_URI_TAG,
    PENDING,
    REGISTRATION_TAG,
    SEARCH_PICTURE,
    SEARCH_SPACE,
    AliasMove,
    MlflowResource,
)
from mlops_assets.resources.object_store import ObjectStoreResource

SMOKE_ROWS = 100
DAGSTER_RUN_TAG = "dagster.run_id"  # on a registered version: the run that registered it


class TrainingRunConfig(Config):
    model_type: str = Field(
        default="",
        description="hist_gradient_boosting, random_forest, ridge (regression), "
        "logistic_regression (classification), or the import path of a scikit-learn-compatible "
        "regressor or classifier (package.module.Class); empty: MLOPS_MODEL_TYPE",
    )
    params_json: str = Field(
        default="", description="estimator parameters as a JSON object; empty: MLOPS_MODEL_PARAMS"
    )
    random_state: int = 0
    training_function: str = Field(
        default="",
        description="your own training code, package.module:function(splits, spec) returning a "
        "fitted regressor or classifier; empty: MLOPS_TRAINING_FUNCTION",
    )
    search_trials: int | None = Field(
        default=None, description="Optuna trials ahead of training; empty: MLOPS_SEARCH_TRIALS"
    )
    search_timeout_seconds: float | None = Field(
        default=None,
        description="search time budget, its trials and their logging; empty: "
        "MLOPS_SEARCH_TIMEOUT_SECONDS",
    )
    search_space_json: str = Field(
        default="", description="search space as JSON; empty: MLOPS_SEARCH_SPACE or built-in"
    )
    trusted_types: list[str] = Field(
        default=[],
        description="types the saved model may contain, in addition to MLOPS_SKOPS_TRUSTED_TYPES "
        "and the reviewed list",
    )
    force_retrain: bool = Field(
        default=False,
        description="train even when an MLflow run already trained this dataset version with "
        "this config (otherwise that run's model is reused and nothing new is registered)",
    )


def trained_model(
    context: AssetExecutionContext,
    config: TrainingRunConfig,
    versioned_dataset: DatasetVersion,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
    training_settings: TrainingSettings,
) -> MaterializeResult:
    spec = dataset_source.spec
    try:
        training = training_settings.config(
            config.model_type,
            config.params_json,
            config.random_state,
            tuple(config.trusted_types),
            config.training_function,
            config.search_trials,
            config.search_timeout_seconds,
            config.search_space_json,
        )
        training.check(spec.task)  # an unusable estimator fails now, before data is read
        manifest = dataset_manifest(versioned_dataset.digest, spec, object_store)
        fingerprint = training_fingerprint(manifest["digest"], training)
    except EstimatorError as exc:
        raise Failure(allow_retries=False, description=f"bad training config: {exc}") from exc
    earlier = None if config.force_retrain else mlflow.find_training_run(fingerprint)
    if earlier is not None:
        run_id, model_uri = earlier.info.run_id, earlier.data.tags[MODEL_URI_TAG]
        metrics, extra_metadata = _reused_run(earlier, spec.task, mlflow)
        training_note = (
            f"not trained: dataset {manifest['tag']} ({manifest['digest'][:12]}) and the training "
            f"config are unchanged since MLflow run {run_id}, whose model is reused; set "
            "force_retrain to train again"
        )
    else:
        splits = DatasetStore(object_store, spec.name).load_splits(manifest)
        tags = {
            "mlops.dataset_name": spec.name,
            "mlops.dataset_digest": manifest["digest"],
            "mlops.dataset_tag": manifest["tag"],
            "mlops.dataset_uri": object_store.uri(manifest["files"]["train"]["key"]),
            "dagster.run_id": context.run.run_id,
            "dagster.asset": context.assets_def.key.to_user_string(),
            FINGERPRINT_TAG: fingerprint,
        }
        run_id, model_uri, metrics, extra_metadata = _train_and_log(
            splits, spec, training, tags, mlflow
        )
        training_note = "trained" + (" (force_retrain)" if config.force_retrain else "")
    quality = QUALITY_METRIC[spec.task]
    context.log.info(
        f"MLflow run {run_id}, test {quality} {metrics[f'test_{quality}']:.6g}: {training_note}"
    )
    return MaterializeResult(
        value=TrainedModel(
            run_id=run_id,
            model_uri=model_uri,
            metrics=metrics,
            dataset_digest=manifest["digest"],
            dataset_tag=manifest["tag"],
            fingerprint=fingerprint,
            forced=config.force_retrain,
        ),
        metadata={
            "trained": earlier is None,
            "training": training_note,
            "mlflow_run_id": run_id,
            "model_uri": model_uri,
            "model_type": training.label,
            "dataset_tag": manifest["tag"],
            "training_fingerprint": fingerprint,
            "task": spec.task,
            **extra_metadata,
            **{name: MetadataValue.float(value) for name, value in metrics.items()},
        },
    )


def _train_and_log(
    splits: dict[str, Any],
    spec: DatasetSpec,
    training: TrainingConfig,
    tags: dict[str, str],
    mlflow: MlflowResource,
) -> tuple[str, str, dict[str, float], dict[str, Any]]:
    """Fit on the splits and log the model in a new MLflow run with ``tags``: its run id, model
    URI, metrics and the search's or classes' metadata. A search logs each trial as it
    finishes, so that its time budget holds their logging. A model holding types skops does
    not trust, or no usable model (an EstimatorError, which fail_fast fails at once), fails
    the step with nothing registered and nothing logged but a search's trials (in a run
    marked FAILED)."""
    with mlflow.training_run(tags) as run:
        objective = objective_name(spec)
        result = fit(splits, spec, training, lambda trial: run.log_trial(trial, objective))
        # A classifier is registered as a ClassAnswer: it answers with classes and probabilities.
        from mlops_assets.ml.answering import ClassAnswer

        classify = spec.task == "classification"
        model = ClassAnswer(result.pipeline, spec.classes) if classify else result.pipeline
        types = saved_types(model)
        untrusted = untrusted_types(types, training.trusted_types)
        if untrusted:
            raise Failure(
                allow_retries=False,
                description=f"the fitted {training.label} model holds types skops does "
                f"not trust: {', '.join(untrusted)}. Review them, then list them in "
                "MLOPS_SKOPS_TRUSTED_TYPES (or the run config's trusted_types). Nothing was "
                "registered, and nothing logged but the search's trials, if one ran.",
            )
        code = served_code(types)
        logged = run.log_model(
            pipeline=model,
            params=result.params,
            metrics=result.metrics,
            input_example=model_input(splits["train"].head(5), spec),
            training_frame=splits["train"],
            target=spec.target.name,
            skops_trusted_types=[*SKOPS_TRUSTED_TYPES, *training.trusted_types],
            pip_requirements=[*serving_requirements(), *code.requirements],
            code_paths=list(code.code_paths),
            search=result.search,
            classes=_fitted_classes(result) if classify else None,
            artifacts=_class_artifacts(result, spec.classes),
        )
    metadata: dict[str, Any] = {}
    if (search := result.search) is not None:
        metadata.update(
            _search_metadata(
                search.best_params,
                objective=search.objective,
                best_value=search.best_value,
                trials=len(search.trials),
                failed=search.failed,
                seconds=search.seconds,
                plot_uri=logged.search_plot_uri,
            )
        )
    if result.test_classes is not None:
        per_class, matrix = result.test_classes
        plot_uri = logged.artifact_uris.get(CONFUSION_PNG, "")
        metadata.update(_class_metadata(per_class, matrix, plot_uri))
    return logged.run_id, logged.model_uri, result.metrics, metadata


def _reused_run(
    run: Any, task: str, mlflow: MlflowResource
) -> tuple[dict[str, float], dict[str, Any]]:
    """An earlier MLflow run's training metrics, and the metadata _train_and_log gave when it
    made that run, read back from the run: the search's best parameters, trials and picture,
    and a classifier's class report and picture."""
    metrics = dict(run.data.metrics)
    search = {name: metrics.pop(name) for name in list(metrics) if name.startswith("search_")}
    metadata: dict[str, Any] = {}
    best = next((name for name in search if name.startswith("search_best_")), None)
    if best is not None:
        files = mlflow.logged_files(run, "search")
        # The searched parameters; their best values are the run's own params. A run logged
        # before the space was a file has only the param, cut at 6,000 characters.
        if SEARCH_SPACE in files:
            searched = json.loads(mlflow.read_logged_file(run.info.run_id, SEARCH_SPACE))
        else:
            try:
                searched = json.loads(run.data.params.get("search_space", "{}"))
            except ValueError:
                searched = {}
        metadata.update(
            _search_metadata(
                {name: run.data.params[name] for name in searched if name in run.data.params},
                objective=best.removeprefix("search_best_"),
                best_value=search[best],
                trials=int(search.get("search_trials", 0)),
                failed=int(search.get("search_failed_trials", 0)),
                seconds=search.get("search_seconds"),  # None: logged before it was recorded
                plot_uri=files.get(SEARCH_PICTURE, ""),
            )
        )
    evaluation = mlflow.logged_files(run, "evaluation") if task == "classification" else {}
    if CLASS_REPORT_JSON in evaluation:
        report = json.loads(mlflow.read_logged_file(run.info.run_id, CLASS_REPORT_JSON))
        plot_uri = evaluation.get(CONFUSION_PNG, "")
        metadata.update(_class_metadata(report["classes"], report["confusion_matrix"], plot_uri))
    return metrics, metadata


CONFUSION_PNG = "evaluation/confusion_matrix_test.png"
CLASS_REPORT_JSON = "evaluation/classes_test.json"


def _fitted_classes(result: TrainingResult) -> list[str]:
    return [str(c) for c in result.pipeline.classes_]


def _class_artifacts(result: TrainingResult, classes: tuple[str, ...]) -> dict[str, bytes]:
    """The test split's confusion matrix as a picture and the per-class report as JSON."""
    if result.test_classes is None:
        return {}
    per_class, matrix = result.test_classes
    picture = confusion_matrix_png(matrix, classes, "Confusion matrix (test split)")
    report = {"classes": per_class, "confusion_matrix": matrix, "order": list(classes)}
    return {CONFUSION_PNG: picture, CLASS_REPORT_JSON: json.dumps(report, indent=2).encode()}


def _class_metadata(
    per_class: list[dict[str, Any]], matrix: list[list[int]], plot_uri: str
) -> dict[str, Any]:
    """Per-class precision and recall and the confusion matrix, as a person reads them."""
    names = [row["class"] for row in per_class]
    return {
        "test_per_class": md_table(
            ["class", "precision", "recall", "support"],
            [
                (r["class"], f"{r['precision']:.3f}", f"{r['recall']:.3f}", r["support"])
                for r in per_class
            ],
        ),
        "test_confusion_matrix": md_table(
            ["true class", *(f"predicted {n}" for n in names)],
            [(name, *row) for name, row in zip(names, matrix, strict=True)],
        ),
        "test_confusion_matrix_plot": MetadataValue.url(plot_uri)
        if plot_uri
        else MetadataValue.null(),
    }


def _search_metadata(
    best_params: Mapping[str, object],
    *,
    objective: str,
    best_value: float,
    trials: int,
    failed: int,
    seconds: float | None,
    plot_uri: str,
) -> dict[str, Any]:
    """The search as a person reads it: best params, how many trials (and failures), how long
    it took (its trials and their logging, which its time budget bounds), and where the
    optimisation history picture is."""
    return {
        "search_best_params": md_table(["parameter", "best value"], sorted(best_params.items())),
        f"search_best_{objective}": MetadataValue.float(best_value),
        "search_trials": trials,
        "search_failed_trials": failed,
        "search_seconds": MetadataValue.null() if seconds is None else MetadataValue.float(seconds),
        "search_history_plot": MetadataValue.url(plot_uri) if plot_uri else MetadataValue.null(),
    }


def beats_naive_baseline(trained_model: TrainedModel, policy: PolicySettings) -> AssetCheckResult:
    metrics = trained_model.metrics
    metric = LOSS["classification" if "test_log_loss" in metrics else "regression"]
    model, baseline = metrics[f"test_{metric}"], metrics[f"baseline_test_{metric}"]
    limit = baseline * (1 - policy.baseline_margin)
    return AssetCheckResult(
        passed=model <= limit,
        description=f"test {metric} {model:.6g} vs baseline {baseline:.6g} "
        f"(must be <= {limit:.6g})",
        metadata={f"test_{metric}": model, f"baseline_test_{metric}": baseline},
    )


def meets_metric_thresholds(
    trained_model: TrainedModel, policy: PolicySettings
) -> AssetCheckResult:
    metrics = trained_model.metrics
    if "test_balanced_accuracy" in metrics:
        name, minimum = "balanced_accuracy", policy.min_balanced_accuracy
    else:
        name, minimum = "r2", policy.min_r2
    value = metrics[f"test_{name}"]
    return AssetCheckResult(
        passed=value >= minimum,
        description=f"test {name.replace('_', ' ')} {value:.4f} (minimum {minimum})",
        metadata={f"test_{name}": value, f"min_{name}": minimum},
    )


@dataclass(frozen=True)
class Gate:
    """What registered_model did: the version, whether this step registered it, the alias
    moves it made, and why."""

    version: str
    newly_registered: bool
    champion_before: str | None
    champion_score: float | None
    moves: list[AliasMove]
    reason: str
    notes: list[str] = field(default_factory=list)  # what settling the champion did, for the log


def register_and_gate(
    lease: Lease,
    trained_model: TrainedModel,
    test: Any,
    spec: DatasetSpec,
    metric: str,
    run_id: str,
    mlflow: MlflowResource,
    policy: PolicySettings,
) -> Gate:
    """Register the trained model (once per MLflow run, and once per training fingerprint
    unless training was forced), move 'challenger' to it and decide 'champion', holding the
    model's lease. A version whose registration a stopped run left pending is finished here:
    the step is idempotent across crashes and retries. A version already decided moves no
    alias, so re-running never undoes an approval or a rollback."""
    version = mlflow.version_of_run(trained_model.run_id)
    same_training = ""
    if version is None and trained_model.fingerprint and not trained_model.forced:
        version = mlflow.version_with_fingerprint(trained_model.fingerprint)
        if version is not None:
            same_training = (
                f"v{version} was trained from the same dataset, config, code and packages by "
                f"another run; MLflow run {trained_model.run_id} is not registered again"
            )
    newly_registered = version is None
    if version is None:
        lease.ensure_held()
        version = mlflow.register(
            trained_model.model_uri,
            tags={
                "mlops.dataset_digest": trained_model.dataset_digest,
                "mlops.dataset_tag": trained_model.dataset_tag,
                FINGERPRINT_TAG: trained_model.fingerprint,
                DAGSTER_RUN_TAG: run_id,
                REGISTRATION_TAG: PENDING,
            },
        )
    state, recorded = mlflow.registration_state(version)
    # A champion change a stopped step left is finished, and one made outside the project
    # recorded, before this one is decided.
    lease.ensure_held()
    _, champion_before, notes = mlflow.settle_champion(run_id)
    champion_score = None
    if champion_before is not None:
        champion_score = score_on_test(mlflow.load_model(champion_before), test, spec, metric)
    if state != PENDING:
        reason = (
            same_training
            or f"the model of MLflow run {trained_model.run_id} is already registered as v{version}"
        ) + f"; its registration was decided ({recorded or 'before decisions were recorded'}): "
        reason += "no alias moved"
        return Gate(version, False, champion_before, champion_score, [], reason, notes)
    moves = []
    finishing = (
        "" if newly_registered else "finished the registration an interrupted attempt left: "
    )
    challenger = mlflow.alias_version(CHALLENGER)
    if challenger is None or int(challenger) < int(version):
        lease.ensure_held()
        why = "newly registered" if newly_registered else "registration finished"
        moves.append(mlflow.move_alias(CHALLENGER, version, why))
    challenger_score = trained_model.metrics[f"test_{metric}"]
    comparison = None
    if champion_before is not None and champion_score is not None:
        comparison = Comparison(
            metric=metric,
            challenger_version=version,
            challenger_score=challenger_score,
            champion_version=champion_before,
            champion_score=champion_score,
            dataset=dataset_label(trained_model.dataset_tag, trained_model.dataset_digest),
        )
    if champion_before == version:
        reason = f"v{version} is champion already (moved before the stop)"
    elif policy.promotion_policy == "manual":
        reason = (
            f"awaiting approval: {_versus_champion(comparison, version, metric, challenger_score)}"
        )
        reason += "; policy is manual: run the approve_challenger job to promote it"
        if comparison is not None and comparison.worse:
            reason += " (it scores worse: approving it needs override_worse: true and a reason)"
    else:
        decision = decide(challenger_score, champion_score, metric, policy.min_improvement)
        reason = decision.reason
        if decision.promote:
            lease.ensure_held()
            moves.append(
                mlflow.change_champion(
                    version,
                    "promotion",
                    reason,
                    actor="registered_model (policy auto)",
                    run_id=run_id,
                    comparison=comparison,
                )
            )
    lease.ensure_held()
    mlflow.record_decision(version, reason)
    return Gate(
        version,
        newly_registered,
        champion_before,
        champion_score,
        moves,
        finishing + reason,
        notes,
    )


def _versus_champion(
    comparison: Comparison | None, version: str, metric: str, challenger_score: float
) -> str:
    if comparison is None:
        return f"no champion yet (challenger v{version} test {metric} {challenger_score:.6g})"
    return comparison.describe()


def registered_model(
    context: AssetExecutionContext,
    trained_model: TrainedModel,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
    policy: PolicySettings,
) -> MaterializeResult:
    spec = dataset_source.spec
    metric = policy.metric_for(spec.task)
    if metric not in metrics_for(spec.task) or policy.promotion_policy not in ("auto", "manual"):
        raise Failure(
            allow_retries=False,
            description=f"promotion metric '{metric}' must be one of "
            f"{', '.join(metrics_for(spec.task))} (task {spec.task}) and policy "
            f"'{policy.promotion_policy}' one of auto, manual",
        )
    splits = dataset_splits(trained_model.dataset_digest, spec, object_store)
    # Alias moves read, decide and write: one step at a time per model, across runs and
    # machines, and a holder that died frees the lease (its runs are marked failed).
    lease_name = model_lease(mlflow.model_name)
    with exclusive(context, object_store, lease_name, on_dead_run=mlflow.fail_runs_of) as lease:
        gate = register_and_gate(
            lease, trained_model, splits["test"], spec, metric, context.run.run_id, mlflow, policy
        )
        champion_after = mlflow.alias_version(CHAMPION)
    version = gate.version
    challenger_score = trained_model.metrics[f"test_{metric}"]
    for note in gate.notes:
        context.log.warning(note)
    context.log.info(f"v{version}: {gate.reason}")
    champion_events = [m.event.as_dict() for m in gate.moves if m.event is not None]
    return MaterializeResult(
        value=Registration(
            model_name=mlflow.model_name,
            version=version,
            champion_before=gate.champion_before,
            champion_after=champion_after,
            metric=metric,
            challenger_score=challenger_score,
            champion_score_before=gate.champion_score,
            dataset_digest=trained_model.dataset_digest,
        ),
        data_version=DataVersion(champion_data_version(champion_after)),
        metadata={
            "model_name": mlflow.model_name,
            "version": version,
            "newly_registered": gate.newly_registered,
            "champion_version": champion_after or "",
            "promoted": champion_after == version and gate.champion_before != version,
            "decision": gate.reason,
            f"challenger_test_{metric}": challenger_score,
            f"champion_test_{metric}_before": MetadataValue.float(gate.champion_score)
            if gate.champion_score is not None
            else MetadataValue.text("no champion"),
            "alias_moves": md_table(
                ["alias", "from", "to", "reason"],
                [(m.alias, m.from_version or "-", m.to_version, m.reason) for m in gate.moves],
            ),
            # The champion's change as MLflow's history records it (mlops.champion_event.*).
            **(
                {"champion_event": MetadataValue.json(champion_events[0])}
                if champion_events
                else {}
            ),
        },
    )


def registered_model_gates(
    registered_model: Registration,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
    scope: ModelScope,
) -> Iterator[AssetCheckResult]:
    spec = dataset_source.spec
    version = registered_model.version
    challenger = mlflow.alias_version(CHALLENGER)
    yield AssetCheckResult(
        check_name="challenger_alias_points_here",
        asset_key=scope.key("registered_model"),
        passed=challenger is not None and int(challenger) >= int(version),
        description=f"challenger -> v{challenger}, this materialisation registered v{version}"
        + (" (superseded by a later registration)" if challenger not in (None, version) else ""),
    )
    champion = mlflow.alias_version(CHAMPION)
    if champion is None:
        yield AssetCheckResult(
            check_name="champion_not_regressed",
            asset_key=scope.key("registered_model"),
            passed=True,
            description="no champion yet (manual policy awaiting approval)",
        )
        # WARN, not ERROR: nothing serves yet, and scoring fails on its own with the reason.
        yield AssetCheckResult(
            check_name="champion_loads_and_predicts",
            asset_key=scope.key("registered_model"),
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"models:/{mlflow.model_name}@champion does not exist yet: run the "
            "approve_challenger job to promote a version",
        )
        return
    splits = dataset_splits(registered_model.dataset_digest, spec, object_store)
    test = splits["test"]
    metric = registered_model.metric
    try:
        model = mlflow.load_model(CHAMPION)
        answers = answer(model, model_input(test.head(SMOKE_ROWS), spec), spec)
        load_error = None
    except Exception as exc:
        load_error = f"{type(exc).__name__}: {exc}"
    if load_error is None:
        expected = min(SMOKE_ROWS, len(test))
        predictions = answers[PREDICTION]
        if spec.task == "classification":  # a class for every row, probabilities finite
            probabilities = answers.drop(columns=PREDICTION).to_numpy(dtype=float)
            finite = int((predictions.notna() & np.isfinite(probabilities).all(axis=1)).sum())
        else:
            finite = int(np.isfinite(predictions.to_numpy(dtype=float)).sum())
        ok = len(predictions) == expected and finite == expected
        yield AssetCheckResult(
            check_name="champion_loads_and_predicts",
            asset_key=scope.key("registered_model"),
            passed=ok,
            description=f"v{champion}: {len(predictions)} predictions for {expected} rows, "
            f"{finite} finite",
        )
    else:
        yield AssetCheckResult(
            check_name="champion_loads_and_predicts",
            asset_key=scope.key("registered_model"),
            passed=False,
            description=f"models:/{mlflow.model_name}@champion (v{champion}) failed: {load_error}",
        )
        return
    before = registered_model.champion_score_before
    if before is None:
        yield AssetCheckResult(
            check_name="champion_not_regressed",
            asset_key=scope.key("registered_model"),
            passed=True,
            description=f"v{champion} is the first champion",
        )
        return
    now = score_on_test(model, test, spec, metric)
    change = relative_improvement(now, before, metric)
    yield AssetCheckResult(
        check_name="champion_not_regressed",
        asset_key=scope.key("registered_model"),
        passed=change >= -1e-9,
        description=f"champion v{champion} test {metric} {now:.6g}; champion before "
        f"v{registered_model.champion_before}: {before:.6g}",
        metadata={f"champion_test_{metric}": now, f"previous_champion_test_{metric}": before},
    )


def build_model_assets(model: ModelScope) -> list[AssetsDefinition]:
    """trained_model and registered_model of ``model``, with their checks."""
    return [
        asset(
            key=model.key("trained_model"),
            # On Kubernetes, its step pod (k8s_job_executor) has the model's training size.
            op_tags=training_tags(model.pods),
            retry_policy=SERVER_RETRY,
            group_name=model.name,
            kinds={"sklearn", "mlflow"},
            ins={"versioned_dataset": AssetIn(model.key("versioned_dataset"))},
            description="sklearn Pipeline (preprocessing inside) fitted on the train split and logged "
            "to MLflow with params, metrics, signature, input example, dataset digest and run id.",
        )(fail_fast(model.bind(trained_model))),
        asset_check(
            retry_policy=SERVER_RETRY,
            asset=model.key("trained_model"),
            blocking=True,
            description="Test loss beats a naive model's by the policy's margin: RMSE against the train "
            "median (regression), log loss against the train class shares, i.e. the majority class "
            "(classification). Failing means the model learned nothing worth registering.",
        )(fail_fast(model.bind(beats_naive_baseline))),
        asset_check(
            retry_policy=SERVER_RETRY,
            asset=model.key("trained_model"),
            blocking=True,
            description="Test R2 (regression) or test balanced accuracy (classification) reaches the "
            "policy's minimum. Failing stops registration.",
        )(fail_fast(model.bind(meets_metric_thresholds))),
        asset(
            key=model.key("registered_model"),
            retry_policy=SERVER_RETRY,
            group_name=model.name,
            kinds={"mlflow"},
            ins={"trained_model": AssetIn(model.key("trained_model"))},
            description="A registry version with alias 'challenger', promoted to 'champion' when it beats "
            "the current champion on the same test split (policy auto) or when approved (policy manual).",
        )(fail_fast(model.bind(registered_model))),
        multi_asset_check(
            name=f"{model.name}__registered_model_gates",
            retry_policy=SERVER_RETRY,
            specs=[
                AssetCheckSpec(
                    "challenger_alias_points_here",
                    asset=model.key("registered_model"),
                    blocking=True,
                    description="The 'challenger' alias names the version this materialisation "
                    "registered, or a later one registered since (the pool serialises registrations, "
                    "not this check). Failing means the alias is missing or moved back.",
                ),
                AssetCheckSpec(
                    "champion_not_regressed",
                    asset=model.key("registered_model"),
                    blocking=True,
                    description="The champion now scores no worse on the same test split than the "
                    "champion before this materialisation. Failing means a worse model serves.",
                ),
                AssetCheckSpec(
                    "champion_loads_and_predicts",
                    asset=model.key("registered_model"),
                    blocking=True,
                    description="models:/NAME@champion loads and returns one finite prediction per row "
                    "of the test split.",
                ),
            ],
            ins={"registered_model": AssetIn(model.key("registered_model"))},
        )(fail_fast(model.bind(registered_model_gates))),
    ]
