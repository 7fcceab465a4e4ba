"""served_traffic: each day of what the served model answered, from its traffic log.

The served image writes its log to the object store (``traffic/<model>/date=<day>/``, see
:mod:`mlops_assets.ml.model_server`); this asset reads one day of it into one versioned Parquet
table, and its checks judge the log itself: the rows carry the model's inputs, few requests
were refused, and few went unlogged.
"""

import hashlib

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    DataVersion,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset,
    asset_check,
    definitions,
)

from mlops_assets.lib.metadata import md_table
from mlops_assets.lib.retries import SERVER_RETRY
from mlops_assets.ml.dataset_store import frame_to_parquet
from mlops_assets.ml.model_server import traffic_day_prefix
from mlops_assets.ml.traffic import TrafficUnreadable, read_traffic
from mlops_assets.partitions import daily_partitions, partitioned_checks
from mlops_assets.records import ServedTraffic
from mlops_assets.resources.dataset_source import DatasetSourceResource
from mlops_assets.resources.mlflow_registry import MlflowResource
from mlops_assets.resources.object_store import ObjectStoreResource
from mlops_assets.resources.policy import LifecyclePolicy


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
    table = frame_to_parquet(traffic.frame)
    digest = hashlib.sha256(table).hexdigest()
    # Each version of the day's table stays: a later materialisation (more files, late
    # labels) writes beside it.
    key = f"served_traffic/{mlflow.model_name}/{day}/{digest[:16]}.parquet"
    object_store.put_bytes(key, table)
    versions = tuple(sorted(traffic.frame["model_version"].unique()))
    record = ServedTraffic(
        key=key,
        day=day,
        rows=len(traffic.frame),
        requests=traffic.requests,
        errors=traffic.errors,
        dropped=traffic.dropped,
        model_versions=versions,
        unexpected_columns=traffic.unexpected_columns,
        missing_columns=traffic.missing_columns,
        error_examples=traffic.error_examples,
    )
    latency = traffic.frame.drop_duplicates("request_id")["latency_ms"]
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
    served_traffic: ServedTraffic, policy: LifecyclePolicy
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
    served_traffic: ServedTraffic, policy: LifecyclePolicy
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


def build_traffic_assets(partitions: PartitionsDefinition) -> Definitions:
    """served_traffic and its checks on ``partitions`` (built when the definitions are)."""
    with partitioned_checks():
        traffic = asset(
            name="served_traffic",
            retry_policy=SERVER_RETRY,
            group_name="serving",
            kinds={"parquet"},
            partitions_def=partitions,
            description="One day of the served model's traffic log (every request it answered "
            "or refused, written by the served image to traffic/<model>/date=<day>/ in the "
            "object store) as one versioned Parquet table: request id, time, model version, "
            "latency, the input row and the prediction as served.",
        )(served_traffic)
        checks = [
            asset_check(
                name="traffic_matches_signature",
                asset="served_traffic",
                partitions_def=partitions,
                blocking=True,
                description="Every answered row carries exactly the model's input columns (the "
                "spec's features): a client sending other columns is answered with a model that "
                "ignores them or fills them in.",
            )(traffic_matches_signature),
            asset_check(
                name="refused_share_below_threshold",
                asset="served_traffic",
                partitions_def=partitions,
                description="Refused requests (wrong columns, wrong types: 4xx; server errors: "
                "5xx) are at most MLOPS_TRAFFIC_MAX_ERROR_SHARE of the day's requests. WARN: "
                "clients are sending what the model does not take.",
            )(refused_share_below_threshold),
            asset_check(
                name="unlogged_share_below_threshold",
                asset="served_traffic",
                partitions_def=partitions,
                description="Requests answered but not logged (the server's buffer was full) "
                "are at most MLOPS_TRAFFIC_MAX_DROPPED_SHARE of the day's requests. WARN: the "
                "table under-counts the day.",
            )(unlogged_share_below_threshold),
        ]
    return Definitions(assets=[traffic], asset_checks=checks)


@definitions
def traffic_defs() -> Definitions:
    """served_traffic on the daily partitions, built when the code location loads."""
    return build_traffic_assets(daily_partitions())
