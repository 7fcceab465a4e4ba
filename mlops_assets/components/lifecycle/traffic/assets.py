"""served_traffic: each day of what the served model answered, from its traffic log; and
traffic_drift_report, its drift and quality against the training data.

The served image writes its log to the object store (``traffic/<model>/date=<day>/``, see
:mod:`mlops_assets.model_server`); this asset reads one day of it into one versioned Parquet
table, and its checks judge the log itself: the rows carry the model's inputs, few requests
were refused, and few went unlogged.
"""

import hashlib
from collections import Counter

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    DataVersion,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    asset_check,
)

from mlops_assets.components.lifecycle.scope import ModelScope
from mlops_assets.components.lifecycle.scoring.assets import (
    compare_with_training,
    drift_share_below_threshold,
    quality_not_degraded,
    report_prefix,
)
from mlops_assets.components.lifecycle.settings import PolicySettings
from mlops_assets.lib.metadata import md_table
from mlops_assets.lib.retries import SERVER_RETRY, fail_fast
from mlops_assets.ml.dataset_store import frame_to_parquet, parquet_to_frame
from mlops_assets.ml.tabular import DatasetRejected, TableFile
from mlops_assets.ml.tasks import QUALITY_METRIC
from mlops_assets.ml.traffic import (
    TrafficUnreadable,
    join_labels,
    labels_day_prefix,
    read_labels,
    read_traffic,
)
from mlops_assets.model_server.record import traffic_day_prefix
from mlops_assets.partitions import partitioned_checks
from mlops_assets.records import DriftResult, ServedTraffic
from mlops_assets.resources.dataset_source import DatasetSourceResource, is_data_file
from mlops_assets.resources.mlflow_registry import MlflowResource
from mlops_assets.resources.object_store import ObjectStoreResource


def served_traffic(
    context: AssetExecutionContext,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
) -> MaterializeResult:
    day = context.partition_key
    prefix = traffic_day_prefix(mlflow.model_name, day)
    keys = [key for key in object_store.list_keys(prefix) if key.endswith(".jsonl")]
    if not keys:
        # A day nothing was served (or no served model writes to this store): an empty table.
        context.log.warning(
            f"no traffic logged for {day}: nothing under {object_store.uri(prefix)} (is a "
            "served model running with its traffic log on, writing to this object store?)"
        )
    try:
        traffic = read_traffic(
            ((key, object_store.get_bytes(key)) for key in keys), dataset_source.spec
        )
    except TrafficUnreadable as exc:
        raise Failure(allow_retries=False, description=f"traffic log unreadable: {exc}") from exc
    frame, labelled, unmatched = _with_labels(
        context, traffic.frame, day, dataset_source, object_store, mlflow
    )
    table = frame_to_parquet(frame)
    digest = hashlib.sha256(table).hexdigest()
    # Each version of the day's table stays: a later materialisation (more files, late
    # labels) writes beside it.
    key = f"served_traffic/{mlflow.model_name}/{day}/{digest[:16]}.parquet"
    object_store.put_bytes(key, table)
    versions = tuple(sorted(frame["model_version"].unique()))
    record = ServedTraffic(
        key=key,
        day=day,
        rows=len(frame),
        requests=traffic.requests,
        errors=traffic.errors,
        dropped=traffic.dropped,
        model_versions=versions,
        unexpected_columns=traffic.unexpected_columns,
        missing_columns=traffic.missing_columns,
        error_examples=traffic.error_examples,
        labelled_rows=labelled,
    )
    latency = frame.drop_duplicates("request_id")["latency_ms"]
    return MaterializeResult(
        value=record,
        data_version=DataVersion(digest[:16]),
        metadata={
            "rows": record.rows,
            "requests_answered": record.requests,
            "requests_refused": record.errors,
            "requests_not_logged": record.dropped,
            "files": traffic.files,
            "model_versions": ", ".join(versions) or "none",
            "labelled_rows": labelled,
            "labels_matching_no_row": unmatched,
            "latency_p50_ms": MetadataValue.float(
                float(latency.quantile(0.5)) if len(latency) else 0.0
            ),
            "latency_p99_ms": MetadataValue.float(
                float(latency.quantile(0.99)) if len(latency) else 0.0
            ),
            "refusals": md_table(["count and message"], [(e,) for e in traffic.error_examples])
            if traffic.error_examples
            else "none",
            "table": MetadataValue.url(object_store.uri(key)),
        },
    )


def _with_labels(
    context: AssetExecutionContext,
    frame: pd.DataFrame,
    day: str,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
) -> tuple[pd.DataFrame, int, int]:
    """The day's rows with the labels that have come for them (the target column), how many
    rows are labelled, and how many labels name no row of the day."""
    spec = dataset_source.spec
    prefix = labels_day_prefix(mlflow.model_name, day)
    keys = [key for key in object_store.list_keys(prefix) if is_data_file(key)]
    if not keys:
        return frame, 0, 0
    files = [TableFile(key, object_store.get_bytes(key)) for key in keys]
    try:
        labels = read_labels(files, spec)
    except DatasetRejected as exc:
        raise Failure(
            allow_retries=False,
            description=f"labels for {day} under {object_store.uri(prefix)} rejected:\n{exc}",
        ) from exc
    joined, unmatched = join_labels(frame, labels, spec)
    if unmatched:
        context.log.warning(
            f"{unmatched} of {len(labels)} labels under {object_store.uri(prefix)} name no "
            f"answered row of {day} (request_id and row must be as the server logged them)"
        )
    return joined, int(joined[spec.target.name].notna().sum()), unmatched


def traffic_matches_signature(served_traffic: ServedTraffic) -> AssetCheckResult:
    problems = [
        f"column '{c}' is not a model input ({n} rows have it)"
        for c, n in sorted(served_traffic.unexpected_columns.items())
    ] + [
        f"model input '{c}' is missing ({n} rows)"
        for c, n in sorted(served_traffic.missing_columns.items())
    ]
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        description="; ".join(problems)
        or f"all {served_traffic.rows} answered rows carry exactly the model's input columns",
        metadata={"rows": served_traffic.rows},
    )


def refused_share_below_threshold(
    served_traffic: ServedTraffic, policy: PolicySettings
) -> AssetCheckResult:
    share, limit = served_traffic.error_share, policy.traffic_max_error_share
    examples = "; ".join(served_traffic.error_examples[:3])
    return AssetCheckResult(
        passed=share <= limit,
        severity=AssetCheckSeverity.WARN,
        description=f"{served_traffic.errors} of {served_traffic.errors + served_traffic.requests} "
        f"requests refused ({share:.1%}, limit {limit:.1%})"
        + (f": {examples}" if examples else ""),
        metadata={"refused_share": MetadataValue.float(share)},
    )


def unlogged_share_below_threshold(
    served_traffic: ServedTraffic, policy: PolicySettings
) -> AssetCheckResult:
    share, limit = served_traffic.dropped_share, policy.traffic_max_dropped_share
    total = served_traffic.requests + served_traffic.errors + served_traffic.dropped
    return AssetCheckResult(
        passed=share <= limit,
        severity=AssetCheckSeverity.WARN,
        description=f"{served_traffic.dropped} of {total} requests answered but not logged "
        f"({share:.1%}, limit {limit:.1%})"
        + (": the server's log buffer was full (MLOPS_TRAFFIC_BUFFER)" if share > limit else ""),
        metadata={"unlogged_share": MetadataValue.float(share)},
    )


def traffic_drift_report(
    context: AssetExecutionContext,
    served_traffic: ServedTraffic,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
    mlflow: MlflowResource,
    policy: PolicySettings,
) -> MaterializeResult:
    spec = dataset_source.spec
    frame = parquet_to_frame(object_store.get_bytes(served_traffic.key))
    if frame.empty:
        context.log.warning(f"no traffic answered on {served_traffic.day}: nothing to compare")
        return MaterializeResult(
            value=DriftResult(
                json_key="",
                html_key="",
                drift_share=0.0,
                drifted_columns=0,
                quality=None,
                quality_metric=QUALITY_METRIC[spec.task],
                champion_test_quality=float("nan"),
                model_version="",
                subject="traffic",
                rows=0,
            ),
            metadata={"traffic_rows": 0},
        )
    # A rollout mid-day has two versions answer: the report is of the one that answered most.
    answered = Counter(frame["model_version"])
    version, rows = answered.most_common(1)[0]
    if rows < len(frame):
        others = ", ".join(f"v{v}: {n}" for v, n in sorted(answered.items()) if v != version)
        context.log.warning(
            f"{len(frame) - rows} rows answered by other versions ({others}) are left out: the "
            f"report compares the {rows} rows of v{version}, which answered most"
        )
    return compare_with_training(
        frame[frame["model_version"] == version],
        version,
        subject="traffic",
        prefix=report_prefix(
            "traffic_drift", mlflow.model_name, served_traffic.day, version, served_traffic.key
        ),
        spec=spec,
        object_store=object_store,
        mlflow=mlflow,
        policy=policy,
    )


def build_traffic_assets(model: ModelScope) -> Definitions:
    """served_traffic and traffic_drift_report of ``model`` with their checks, on its daily
    partitions."""
    with partitioned_checks():
        traffic = asset(
            key=model.key("served_traffic"),
            retry_policy=SERVER_RETRY,
            group_name=model.name,
            kinds={"parquet"},
            partitions_def=model.partitions,
            description="One day of the served model's traffic log (every request it answered "
            "or refused, written by the served image to traffic/<model>/date=<day>/ in the "
            "object store) as one versioned Parquet table: request id, time, model version, "
            "latency, the input row and the prediction as served.",
        )(fail_fast(model.bind(served_traffic)))
        checks = [
            asset_check(
                name="traffic_matches_signature",
                asset=model.key("served_traffic"),
                partitions_def=model.partitions,
                blocking=True,
                description="Every answered row carries exactly the model's input columns (the "
                "spec's features): a client sending other columns is answered with a model that "
                "ignores them or fills them in.",
            )(model.bind(traffic_matches_signature)),
            asset_check(
                name="refused_share_below_threshold",
                asset=model.key("served_traffic"),
                partitions_def=model.partitions,
                description="Refused requests (wrong columns, wrong types: 4xx; server errors: "
                "5xx) are at most MLOPS_TRAFFIC_MAX_ERROR_SHARE of the day's requests. WARN: "
                "clients are sending what the model does not take.",
            )(model.bind(refused_share_below_threshold)),
            asset_check(
                name="unlogged_share_below_threshold",
                asset=model.key("served_traffic"),
                partitions_def=model.partitions,
                description="Requests answered but not logged (the server's buffer was full) "
                "are at most MLOPS_TRAFFIC_MAX_DROPPED_SHARE of the day's requests. WARN: the "
                "table under-counts the day.",
            )(model.bind(unlogged_share_below_threshold)),
        ]
        drift = asset(
            key=model.key("traffic_drift_report"),
            retry_policy=SERVER_RETRY,
            group_name=model.name,
            kinds={"evidently"},
            partitions_def=model.partitions,
            ins={"served_traffic": AssetIn(model.key("served_traffic"))},
            deps=model.keys("versioned_dataset"),
            description="Evidently report of the day's served traffic against the training split "
            "of the version that answered it: drift of the live inputs (and of the predicted "
            "class for classification), and live quality once labels have come "
            f"({labels_day_prefix('<model>', '<day>')}). HTML and JSON in the object store.",
        )(fail_fast(model.bind(traffic_drift_report)))
        # drift_report's own checks: the report is the one parameter that is not a resource.
        checks += [
            asset_check(
                name="drift_share_below_threshold",
                retry_policy=SERVER_RETRY,
                asset=model.key("traffic_drift_report"),
                partitions_def=model.partitions,
                description="Share of drifted input columns of the live traffic is under the "
                "policy threshold (WARN, as for batches; the drift policy acts on it).",
            )(fail_fast(model.bind(drift_share_below_threshold))),
            asset_check(
                name="quality_not_degraded",
                retry_policy=SERVER_RETRY,
                asset=model.key("traffic_drift_report"),
                partitions_def=model.partitions,
                description="On the labelled rows of the day's traffic, the champion's test "
                "metric holds within the policy tolerance (ERROR; the drift policy may retrain or "
                "roll back). A day without labels passes.",
            )(fail_fast(model.bind(quality_not_degraded))),
        ]
    return Definitions(assets=[traffic, drift], asset_checks=checks)
