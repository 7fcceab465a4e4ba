"""predictions (batch inference of each day's incoming batch) and its drift_report."""

import hashlib
from collections import Counter
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from mlops_assets.components.lifecycle.scope import ModelScope
from mlops_assets.components.lifecycle.settings import PolicySettings
from mlops_assets.lib.datasets import dataset_splits
from mlops_assets.lib.metadata import md_table, redact_uri
from mlops_assets.lib.retries import SERVER_RETRY, fail_fast
from mlops_assets.ml.batch_scoring import score_rows
from mlops_assets.ml.dataset_store import frame_to_parquet, parquet_to_frame
from mlops_assets.ml.drift import drift_report as build_drift_report
from mlops_assets.ml.drift import sample
from mlops_assets.ml.estimator import model_input
from mlops_assets.ml.spec import DatasetSpec, NumericColumn
from mlops_assets.ml.tabular import DatasetRejected, plural, quarantine_rows, read_batch
from mlops_assets.ml.tasks import PREDICTION, QUALITY_METRIC, answer, probability_column
from mlops_assets.partitions import partitioned_checks
from mlops_assets.records import DriftResult, ScoredBatch
from mlops_assets.resources.dataset_source import DatasetSourceResource, SourceUnavailable
from mlops_assets.resources.mlflow_registry import CHAMPION, MlflowResource
from mlops_assets.resources.object_store import ObjectStoreResource

MODEL_VERSION = "model_version"


def predictions_key(model_name: str, day: str, table: bytes) -> str:
    """Where a day's scored batch goes: one file per distinct content, as served_traffic's."""
    return f"predictions/{model_name}/{day}/{hashlib.sha256(table).hexdigest()[:16]}.parquet"


def report_prefix(kind: str, model_name: str, day: str, version: str, subject_key: str) -> str:
    """Where a drift report of ``subject_key`` (a content-addressed table) goes: one folder per
    table it compares, so two runs of one day never write into each other's report."""
    table = subject_key.rsplit("/", 1)[-1].removesuffix(".parquet")
    return f"reports/{kind}/{model_name}/{day}/v{version}-{table}"


def predictions(
    context: AssetExecutionContext,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
) -> MaterializeResult:
    spec = dataset_source.spec
    day = date.fromisoformat(context.partition_key)
    batch_uri = redact_uri(dataset_source.incoming_batch_uri(day))

    # 1. load data: a problem of the file rejects the batch; a row breaking a rule is set aside
    try:
        files = dataset_source.read_incoming(day)
        batch = read_batch(files, spec)
    except SourceUnavailable as exc:
        raise Failure(
            allow_retries=exc.transient,
            description=f"cannot read the incoming batch {batch_uri} for {day}: {exc}",
        ) from exc
    except DatasetRejected as exc:
        raise Failure(
            allow_retries=False,
            description=f"incoming batch {batch_uri} for {day} rejected, nothing scored:\n{exc}",
        ) from exc
    ignored = batch.describe_ignored()
    if ignored:
        context.log.warning(f"columns not in the spec '{spec.name}' are left out: {ignored}")

    # 2. load model
    champion = mlflow.alias_version(CHAMPION)
    if champion is None:
        raise Failure(
            allow_retries=False,
            description=f"model '{mlflow.model_name}' has no champion: materialise "
            "registered_model (policy auto) or run approve_challenger (policy manual) first",
        )
    model = mlflow.load_model(champion)

    # 3. run inference, row by row: the value, or the class and one probability per class
    result = score_rows(model, batch, spec)
    scored = result.scored
    scored[MODEL_VERSION] = champion
    quarantine = batch.quarantine
    if len(result.unscorable):
        unscorable = quarantine_rows(files, result.unscorable, result.unscorable_rules)
        quarantine = pd.concat([quarantine, unscorable], ignore_index=True)

    # 4. save results, addressed by their content: two runs scoring the same day (a backfill
    # beside the schedule) never overwrite what the other's drift report reads. The rows set
    # aside go beside them.
    parquet = frame_to_parquet(scored)
    key = predictions_key(mlflow.model_name, day.isoformat(), parquet)
    object_store.put_bytes(key, parquet)
    quarantine_key = None
    if len(quarantine):
        quarantine_key = key.removesuffix(".parquet") + ".quarantine.parquet"
        object_store.put_bytes(quarantine_key, frame_to_parquet(quarantine))
        context.log.warning(
            f"{plural(len(quarantine), 'row')} of {batch.received:,} set aside, the rest "
            f"scored: {object_store.uri(quarantine_key)}"
        )
    rules = _rule_counts(quarantine)
    run_metrics = mlflow.run(mlflow.model_version(champion).run_id).data.metrics
    return MaterializeResult(
        value=ScoredBatch(
            key=key,
            rows=len(scored),
            input_rows=batch.received,
            model_version=champion,
            batch_uri=batch_uri,
            train_target_min=run_metrics.get("train_target_min"),
            train_target_max=run_metrics.get("train_target_max"),
            classes=spec.classes,
            quarantined=len(quarantine),
            quarantine_key=quarantine_key,
            quarantine_rules=rules,
            quarantine_examples=tuple(_quarantine_lines(quarantine.head(10))),
        ),
        metadata={
            "rows": len(scored),
            "received_rows": batch.received,
            "quarantined_rows": len(quarantine),
            "model_version": champion,
            "batch": batch_uri,
            **_prediction_summary(scored, spec.classes),
            "blanks_imputed": md_table(
                ["column", "blank values scored"],
                sorted(batch.blanks(spec.feature_columns).items()),
            )
            if batch.blanks(spec.feature_columns)
            else "none",
            "labelled": spec.target.name in scored.columns,
            "ignored_columns": ignored or "none",
            "table": MetadataValue.url(object_store.uri(key)),
            "quarantine": MetadataValue.url(object_store.uri(quarantine_key))
            if quarantine_key
            else "none",
            **(
                {"quarantine_rules": md_table(["rule", "rows"], sorted(rules.items()))}
                if rules
                else {}
            ),
        },
    )


def _rule_counts(quarantine: pd.DataFrame) -> dict[str, int]:
    """How many rows set aside broke each rule (a row may break several)."""
    counts: Counter[str] = Counter()
    for rules in quarantine["rules"]:
        counts.update(set(str(rules).split("; ")))
    return dict(counts)


def _quarantine_lines(quarantine: pd.DataFrame) -> list[str]:
    return [
        f"file '{r.file}', row {r.row}"
        + (f" (line {r.line})" if pd.notna(r.line) else "")
        + f": {r.rules}"
        for r in quarantine.itertuples()
    ]


def _prediction_summary(scored: Any, classes: tuple[str, ...]) -> dict[str, Any]:
    """The mean prediction, or each class's share of the predictions."""
    if not classes:
        return {"prediction_mean": float(scored[PREDICTION].mean())}
    shares = scored[PREDICTION].value_counts(normalize=True)
    return {
        "predicted_class_shares": md_table(
            ["class", "share"], [(c, f"{shares.get(c, 0.0):.1%}") for c in classes]
        )
    }


def _load_predictions(handle: ScoredBatch, store: ObjectStoreResource) -> Any:
    return parquet_to_frame(store.get_bytes(handle.key))


def one_prediction_per_row(
    predictions: ScoredBatch, object_store: ObjectStoreResource
) -> AssetCheckResult:
    """Nothing received is dropped silently: the predictions and the rows set aside, as
    stored, add up to the rows received."""
    rows = len(_load_predictions(predictions, object_store))
    set_aside = (
        len(parquet_to_frame(object_store.get_bytes(predictions.quarantine_key)))
        if predictions.quarantine_key
        else 0
    )
    return AssetCheckResult(
        passed=rows + set_aside == predictions.input_rows and rows == predictions.rows,
        description=f"{rows:,} predictions + {set_aside:,} rows set aside = {rows + set_aside:,} "
        f"of {predictions.input_rows:,} rows received",
        metadata={"predictions": rows, "set_aside": set_aside},
    )


def quarantine_share_within_limit(
    predictions: ScoredBatch, policy: PolicySettings
) -> AssetCheckResult:
    """Rows set aside: any warns; more than the policy's share fails (ERROR)."""
    received, count = predictions.input_rows, predictions.quarantined
    share = count / received if received else 0.0
    limit = policy.max_quarantine_share
    if count == 0:
        return AssetCheckResult(passed=True, description=f"all {received:,} rows scored")
    rules = "; ".join(f"{rule}: {n:,}" for rule, n in sorted(predictions.quarantine_rules.items()))
    return AssetCheckResult(
        passed=False,
        severity=AssetCheckSeverity.ERROR if share > limit else AssetCheckSeverity.WARN,
        description=f"{plural(count, 'row')} of {received:,} ({share:.1%}) set aside, "
        f"{'over' if share > limit else 'within'} the limit of {limit:.0%}; by rule: {rules}\n"
        + "\n".join(predictions.quarantine_examples),
        metadata={"quarantined": count, "share": share},
    )


def no_missing_predictions(
    predictions: ScoredBatch, object_store: ObjectStoreResource
) -> AssetCheckResult:
    scored = _load_predictions(predictions, object_store)
    if predictions.classes:
        return _valid_classes(scored, predictions.classes)
    values = scored[PREDICTION].to_numpy(dtype=float)
    bad = np.flatnonzero(~np.isfinite(values))
    return AssetCheckResult(
        passed=len(bad) == 0,
        description=f"{len(bad)} non-finite predictions"
        + (f" in rows {', '.join(str(i + 1) for i in bad[:10])}" if len(bad) else ""),
    )


def _rows(mask: Any) -> str:
    rows = np.flatnonzero(np.asarray(mask))
    return ", ".join(str(i + 1) for i in rows[:10]) + (" ..." if len(rows) > 10 else "")


def _valid_classes(scored: Any, classes: tuple[str, ...]) -> AssetCheckResult:
    """Every predicted class is one of the spec's; each row's probabilities are in [0, 1] and
    sum to 1 (within 1e-6)."""
    columns = [probability_column(c) for c in classes]
    missing = [c for c in columns if c not in scored.columns]
    if missing:
        return AssetCheckResult(
            passed=False, description=f"probability columns missing: {', '.join(missing)}"
        )
    unknown = ~scored[PREDICTION].isin(classes)
    probabilities = scored[columns].to_numpy(dtype=float)
    out_of_range = ~((probabilities >= 0) & (probabilities <= 1)).all(axis=1)
    bad_sum = ~np.isclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    problems = []
    if unknown.any():
        problems.append(
            f"{int(unknown.sum())} predicted classes not in {{{', '.join(classes)}}} "
            f"(rows {_rows(unknown)})"
        )
    if out_of_range.any():
        problems.append(
            f"{int(out_of_range.sum())} rows with a probability outside [0, 1] or missing "
            f"(rows {_rows(out_of_range)})"
        )
    if bad_sum.any():
        problems.append(
            f"{int(bad_sum.sum())} rows whose probabilities do not sum to 1 (rows {_rows(bad_sum)})"
        )
    return AssetCheckResult(
        passed=not problems,
        description="; ".join(problems)
        or f"{len(scored)} predictions, each one of {len(classes)} classes with probabilities "
        "in [0, 1] summing to 1",
    )


def plausible_range(
    train_min: float, train_max: float, spec_min: float | None, spec_max: float | None
) -> tuple[float, float]:
    """The training target range widened by half its span on each side, never past the bounds
    the spec sets for the target (a price is never negative, however wide the margin)."""
    margin = (train_max - train_min) / 2
    low, high = train_min - margin, train_max + margin
    if spec_min is not None:
        low = max(low, spec_min)
    if spec_max is not None:
        high = min(high, spec_max)
    return low, high


def predictions_in_plausible_range(
    predictions: ScoredBatch,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
) -> AssetCheckResult:
    if predictions.classes:
        return _class_spread(_load_predictions(predictions, object_store), predictions.classes)
    train_min, train_max = predictions.train_target_min, predictions.train_target_max
    values = _load_predictions(predictions, object_store)[PREDICTION].to_numpy(dtype=float)
    if train_min is None or train_max is None:
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description="champion run has no training target range",
        )
    target = dataset_source.spec.target
    if not isinstance(target, NumericColumn):  # the spec changed task since this batch
        return AssetCheckResult(
            passed=False,
            severity=AssetCheckSeverity.WARN,
            description=f"target '{target.name}' is no longer numeric in the spec",
        )
    low, high = plausible_range(train_min, train_max, target.min, target.max)
    outside = np.flatnonzero((values < low) | (values > high))
    below = int(np.count_nonzero(values < target.min)) if target.min is not None else 0
    above = int(np.count_nonzero(values > target.max)) if target.max is not None else 0
    beyond_spec = below + above
    return AssetCheckResult(
        passed=len(outside) == 0,
        severity=AssetCheckSeverity.WARN,
        description=f"{len(outside)} of {len(values)} predictions outside "
        f"[{low:.6g}, {high:.6g}]"
        + (f", rows {', '.join(str(i + 1) for i in outside[:10])}" if len(outside) else "")
        + (
            f"; {beyond_spec} break the bounds of target '{target.name}' in the spec"
            if beyond_spec
            else ""
        ),
        metadata={"outside": len(outside), "outside_spec_bounds": beyond_spec},
    )


# A batch at least this large whose predictions are all one class (of several) is suspect.
ONE_CLASS_MIN_ROWS = 20


def _class_spread(scored: Any, classes: tuple[str, ...]) -> AssetCheckResult:
    """Classification: a batch of ONE_CLASS_MIN_ROWS rows or more predicted as a single class
    is a sign the model collapsed (WARN), unless the batch is that small."""
    seen = sorted(set(scored[PREDICTION]))
    collapsed = len(scored) >= ONE_CLASS_MIN_ROWS and len(seen) == 1
    return AssetCheckResult(
        passed=not collapsed,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"all {len(scored)} predictions are class '{seen[0]}' (of {len(classes)} classes)"
            if collapsed
            else f"{len(seen)} of {len(classes)} classes predicted in {len(scored)} rows"
        ),
        metadata={"classes_predicted": len(seen)},
    )


def drift_report(
    context: AssetExecutionContext,
    predictions: ScoredBatch,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
    policy: PolicySettings,
) -> MaterializeResult:
    version = predictions.model_version
    return compare_with_training(
        _load_predictions(predictions, object_store),
        version,
        subject="batch",
        prefix=report_prefix(
            "drift", mlflow.model_name, context.partition_key, version, predictions.key
        ),
        spec=dataset_source.spec,
        object_store=object_store,
        mlflow=mlflow,
        policy=policy,
    )


def compare_with_training(
    current: Any,
    version: str,
    subject: str,
    prefix: str,
    spec: DatasetSpec,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
    policy: PolicySettings,
) -> MaterializeResult:
    """Evidently's report of ``current`` (the rows model ``version`` answered, with its answer
    columns and, where labelled, the target) against that version's training split, answered
    by the same model; saved under ``prefix`` as HTML and JSON. ``subject`` names what was
    answered (``batch``, ``traffic``) in the metadata and the checks' messages."""
    run = mlflow.run(mlflow.model_version(version).run_id)
    splits = dataset_splits(run.data.tags["mlops.dataset_digest"], spec, object_store)
    reference = sample(splits["train"], policy.drift_sample_rows)
    model = mlflow.load_model(version)
    reference = reference.join(answer(model, model_input(reference, spec), spec))
    summary, report_json, report_html = build_drift_report(
        current, reference, spec, max_rows=policy.drift_sample_rows
    )
    object_store.put_bytes(f"{prefix}/report.json", report_json.encode())
    object_store.put_bytes(f"{prefix}/report.html", report_html.encode())
    quality_metric = QUALITY_METRIC[spec.task]
    champion_test_quality = run.data.metrics[f"test_{quality_metric}"]
    quality = summary.quality or {}
    return MaterializeResult(
        value=DriftResult(
            json_key=f"{prefix}/report.json",
            html_key=f"{prefix}/report.html",
            drift_share=summary.drift_share,
            drifted_columns=summary.drifted_columns,
            quality=summary.quality,
            quality_metric=quality_metric,
            champion_test_quality=champion_test_quality,
            model_version=version,
            subject=subject,
            rows=summary.current_rows,
        ),
        metadata={
            "drift_share": MetadataValue.float(summary.drift_share),
            "drifted_columns": summary.drifted_columns,
            "columns_checked": summary.columns_checked,
            "sampled": summary.sampled,
            f"{subject}_rows": summary.current_rows,
            "reference_rows": summary.reference_rows,
            "model_version": version,
            f"champion_test_{quality_metric}": champion_test_quality,
            **{f"{subject}_{k}": MetadataValue.float(v) for k, v in quality.items()},
            "column_drift": md_table(
                ["column", "method", "score", "threshold", "drifted"],
                [
                    (name, c.method, f"{c.score:.4g}", c.threshold, "yes" if c.drifted else "no")
                    for name, c in sorted(summary.columns.items())
                ],
            ),
            "report_html": MetadataValue.url(object_store.uri(f"{prefix}/report.html")),
            "report_json": MetadataValue.url(object_store.uri(f"{prefix}/report.json")),
        },
    )


def drift_share_below_threshold(
    drift_report: DriftResult, policy: PolicySettings
) -> AssetCheckResult:
    if drift_report.rows == 0:
        return _nothing_compared(drift_report)
    share = drift_report.drift_share
    return AssetCheckResult(
        passed=share < policy.drift_share_threshold,
        severity=AssetCheckSeverity.WARN,
        description=f"{drift_report.drifted_columns} drifted columns, share {share:.0%} "
        f"(threshold {policy.drift_share_threshold:.0%})",
        metadata={"drift_share": share, "model_version": drift_report.model_version},
    )


def quality_not_degraded(drift_report: DriftResult, policy: PolicySettings) -> AssetCheckResult:
    if drift_report.rows == 0:
        return _nothing_compared(drift_report)
    quality, subject = drift_report.quality, drift_report.subject
    if not quality:
        return AssetCheckResult(
            passed=True,
            description=f"{subject} has no labels; quality not measured",
            metadata={"labelled": False, "model_version": drift_report.model_version},
        )
    # Like with like: the batch's value of the metric the champion scored on its test split.
    metric, champion = drift_report.quality_metric, drift_report.champion_test_quality
    lower_is_better = metric == "rmse"
    if lower_is_better:
        limit = champion * (1 + policy.quality_tolerance)
        passed, sign, bound = quality[metric] <= limit, "+", "limit"
    else:
        limit = champion * (1 - policy.quality_tolerance)
        passed, sign, bound = quality[metric] >= limit, "-", "minimum"
    label = metric.replace("_", " ")
    return AssetCheckResult(
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=f"{subject} {label} {quality[metric]:.6g}, {bound} {limit:.6g} (champion "
        f"v{drift_report.model_version} test {label} {champion:.6g} "
        f"{sign} {policy.quality_tolerance:.0%})",
        metadata={
            f"{subject}_{metric}": quality[metric],
            "limit": limit,
            "labelled": True,
            "model_version": drift_report.model_version,
        },
    )


def _nothing_compared(drift_report: DriftResult) -> AssetCheckResult:
    return AssetCheckResult(
        passed=True,
        description=f"no {drift_report.subject} rows to compare: nothing measured",
        metadata={"rows": 0},
    )


def build_scoring_assets(
    model: ModelScope,
) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    """predictions and drift_report of ``model`` with their checks, on its daily partitions."""
    with partitioned_checks():
        return _scoring_assets(model)


def _scoring_assets(
    model: ModelScope,
) -> tuple[list[AssetsDefinition], list[AssetChecksDefinition]]:
    assets = []
    checks = []
    assets.append(
        asset(
            key=model.key("predictions"),
            retry_policy=SERVER_RETRY,
            group_name=model.name,
            kinds={"mlflow", "parquet"},
            partitions_def=model.partitions,
            deps=model.keys("registered_model"),
            description="Batch inference of the day's incoming batch: load data, load the champion "
            "(models:/NAME@champion), run inference, save results as Parquet.",
        )(fail_fast(model.bind(predictions)))
    )
    checks.append(
        asset_check(
            name="one_prediction_per_row",
            retry_policy=SERVER_RETRY,
            asset=model.key("predictions"),
            partitions_def=model.partitions,
            blocking=True,
            description="Nothing received is dropped: the predictions and the rows set aside "
            "add up to the rows of the day's batch.",
        )(fail_fast(model.bind(one_prediction_per_row)))
    )
    checks.append(
        asset_check(
            name="no_missing_predictions",
            retry_policy=SERVER_RETRY,
            asset=model.key("predictions"),
            partitions_def=model.partitions,
            blocking=True,
            description="No prediction is NaN or infinite. Classification: every predicted "
            "class is one of the spec's, and each row's probabilities are in [0, 1] and sum to 1.",
        )(fail_fast(model.bind(no_missing_predictions)))
    )
    checks.append(
        asset_check(
            name="quarantine_share_within_limit",
            retry_policy=SERVER_RETRY,
            asset=model.key("predictions"),
            partitions_def=model.partitions,
            description="Rows of the day's batch set aside (a value out of range, an unseen "
            "category, a blank the model cannot score; each with its rule, beside the "
            "predictions) are at most MLOPS_MAX_QUARANTINE_SHARE of it (ERROR above it; WARN "
            "for any).",
        )(fail_fast(model.bind(quarantine_share_within_limit)))
    )
    checks.append(
        asset_check(
            name="predictions_in_plausible_range",
            retry_policy=SERVER_RETRY,
            asset=model.key("predictions"),
            partitions_def=model.partitions,
            description="Predictions stay within the champion's training target range widened by half "
            "its span on each side, and within the target's bounds in the spec (WARN: a sign of "
            "extrapolation, not of a broken model). Classification: a batch of 20 rows or more "
            "is not predicted as one single class (WARN: a sign the model collapsed).",
        )(fail_fast(model.bind(predictions_in_plausible_range)))
    )
    assets.append(
        asset(
            key=model.key("drift_report"),
            retry_policy=SERVER_RETRY,
            group_name=model.name,
            kinds={"evidently"},
            partitions_def=model.partitions,
            ins={"predictions": AssetIn(model.key("predictions"))},
            deps=model.keys("versioned_dataset"),
            description="Evidently report of the day's scored batch against the training split of the "
            "champion that scored it: data drift (and prediction drift for classification), and "
            "regression or classification quality when the batch has labels. "
            "HTML and JSON in the object store.",
        )(fail_fast(model.bind(drift_report)))
    )
    checks.append(
        asset_check(
            name="drift_share_below_threshold",
            retry_policy=SERVER_RETRY,
            asset=model.key("drift_report"),
            partitions_def=model.partitions,
            description="Share of drifted feature columns is under the policy threshold. WARN: drift "
            "alone is a reason to look, not to stop.",
        )(fail_fast(model.bind(drift_share_below_threshold)))
    )
    checks.append(
        asset_check(
            name="quality_not_degraded",
            retry_policy=SERVER_RETRY,
            asset=model.key("drift_report"),
            partitions_def=model.partitions,
            description="On a labelled batch, RMSE is at most the champion's test RMSE times "
            "(1 + tolerance); for classification, balanced accuracy at least the champion's test "
            "balanced accuracy times (1 - tolerance). ERROR: the model is getting answers wrong. "
            "Unlabelled batches pass.",
        )(fail_fast(model.bind(quality_not_degraded)))
    )
    return assets, checks
