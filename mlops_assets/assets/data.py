"""raw_data and versioned_dataset, with the checks that guard them."""

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
    multi_asset_check,
)

from mlops_assets.assets.metadata import md_table, redact_uri, violations_result
from mlops_assets.assets.retries import SERVER_RETRY
from mlops_assets.ml.dataset import clean, content_digest, leaked_rows, split, split_size_findings
from mlops_assets.ml.dataset_store import DatasetStore, sha256
from mlops_assets.ml.tabular import (
    RULE_GROUPS,
    DatasetRejected,
    TableFile,
    Violation,
    inspect_table,
    read_validated,
)
from mlops_assets.resources.dataset_source import DatasetSourceResource, SourceUnavailable
from mlops_assets.resources.object_store import ObjectStoreResource

RAW_CHECK_DESCRIPTIONS = {
    "parses_as_table": "Every file is UTF-8 CSV (or Parquet) that parses. Failing means the "
    "snapshot cannot be read; nothing downstream runs.",
    "has_data_rows": "Every file has a header and at least one data row.",
    "required_columns_present": "Every file has the target and every feature column of the spec.",
    "values_match_schema": "Numeric columns are numeric, whole and in range; categories are "
    "allowed; the missing share is under the limit. Failing blocks versioning.",
    "duplicate_share_within_limit": "Exact duplicate rows stay under the spec's share; above it "
    "the source is likely broken (a double export), not merely redundant.",
}


def snapshot_digest(files: list[TableFile]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{sha256(file.data)}\0".encode())
    return digest.hexdigest()


@asset(
    retry_policy=SERVER_RETRY,
    group_name="data",
    kinds={"csv", "parquet"},
    description="Immutable snapshot of the configured source in the object store, keyed by the "
    "hash of its content: the same data is stored once, whatever its source.",
)
def raw_data(
    context: AssetExecutionContext,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
) -> MaterializeResult:
    source = redact_uri(dataset_source.source_uri)
    try:
        files = dataset_source.read_source()
    except SourceUnavailable as exc:
        raise Failure(
            allow_retries=exc.transient, description=f"cannot read source {source}: {exc}"
        ) from exc
    if not files:
        raise Failure(
            allow_retries=False, description=f"source {source} holds no .csv or .parquet files"
        )
    digest = snapshot_digest(files)
    prefix = f"raw/{digest}"
    manifest_key = f"{prefix}/manifest.json"
    entries: list[dict[str, Any]] = [
        {
            "name": f.name,
            "key": f"{prefix}/files/{f.name}",
            "sha256": sha256(f.data),
            "bytes": len(f.data),
        }
        for f in files
    ]
    existed = object_store.exists(manifest_key)
    if not existed:
        for file, entry in zip(files, entries, strict=True):
            object_store.put_bytes(entry["key"], file.data)
        object_store.put_bytes(
            manifest_key,
            json.dumps({"source": source, "digest": digest, "files": entries}, indent=2).encode(),
        )
    context.log.info(
        f"snapshot {digest[:12]} of {source}: {len(files)} file(s), "
        + ("already stored" if existed else "stored")
    )
    handle = {"source": source, "digest": digest, "manifest_key": manifest_key, "files": entries}
    return MaterializeResult(
        value=handle,
        metadata={
            "source": source,
            "digest": digest,
            "already_stored": existed,
            "files": len(files),
            "bytes": sum(e["bytes"] for e in entries),
            "snapshot": MetadataValue.url(object_store.uri(manifest_key)),
            "file_list": md_table(
                ["file", "bytes", "sha256"],
                [(e["name"], e["bytes"], e["sha256"][:12]) for e in entries],
            ),
        },
        data_version=DataVersion(digest),
    )


def load_snapshot(handle: dict[str, Any], store: ObjectStoreResource) -> list[TableFile]:
    return [TableFile(e["name"], store.get_bytes(e["key"])) for e in handle["files"]]


@multi_asset_check(
    retry_policy=SERVER_RETRY,
    specs=[
        AssetCheckSpec(name, asset="raw_data", blocking=True, description=description)
        for name, description in RAW_CHECK_DESCRIPTIONS.items()
    ],
    ins={"raw_data": AssetIn("raw_data")},
)
def raw_data_contract(
    context: AssetCheckExecutionContext,
    raw_data: dict[str, Any],
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
) -> Iterator[AssetCheckResult]:
    """Reads the snapshot once and evaluates each rule group of the dataset contract.

    A group no file could be evaluated on (columns of a file that does not parse) yields no
    result, so the UI shows it as not executed instead of passed.
    """
    spec = dataset_source.spec
    grouped: dict[str, list[Violation] | None] = dict.fromkeys(RULE_GROUPS)
    for file in load_snapshot(raw_data, object_store):
        inspection = inspect_table(file, spec)
        for group, found in inspection.results.items():
            if found is not None:
                grouped[group] = (grouped[group] or []) + found
    for group, found in grouped.items():
        if found is None:
            context.log.info(f"check {group} not evaluated: an earlier rule failed")
            continue
        yield violations_result(group, "raw_data", found, f"{len(raw_data['files'])} file(s) pass")


@asset(
    retry_policy=SERVER_RETRY,
    group_name="data",
    kinds={"parquet"},
    ins={"raw_data": AssetIn("raw_data")},
    description="Cleaned, validated, de-duplicated train/val/test splits as Parquet under a "
    "content-addressed version with a manifest; tagged data-vX.Y.Z, with latest/previous refs.",
)
def versioned_dataset(
    context: AssetExecutionContext,
    raw_data: dict[str, Any],
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
) -> MaterializeResult:
    spec = dataset_source.spec
    try:
        frame = read_validated(load_snapshot(raw_data, object_store), spec)
    except DatasetRejected as exc:
        raise Failure(
            allow_retries=False,
            description=f"snapshot {raw_data['digest'][:12]} of {raw_data['source']} breaks the "
            f"dataset contract '{spec.name}'; no version was written.\n{exc}",
            metadata={"violations": len(exc.violations)},
        ) from exc
    cleaned, stats = clean(frame, spec)
    splits = split(cleaned, spec)
    digest = content_digest(splits, spec)
    store = DatasetStore(object_store, spec.name)
    published = store.publish(
        splits,
        digest,
        spec,
        source={"uri": raw_data["source"], "digest": raw_data["digest"]},
        cleaning=stats,
    )
    manifest = published.manifest
    context.log.info(
        f"{manifest['tag']} ({digest[:12]}) " + ("created" if published.created else "unchanged")
    )
    return MaterializeResult(
        value={"dataset": spec.name, "digest": digest, "tag": manifest["tag"]},
        metadata={
            "tag": manifest["tag"],
            "digest": digest,
            "new_version": published.created,
            "previous_latest": published.previous_latest or "",
            "rows": sum(len(p) for p in splits.values()),
            "train_rows": len(splits["train"]),
            "val_rows": len(splits["val"]),
            "test_rows": len(splits["test"]),
            "duplicates_dropped": stats.duplicates_dropped,
            "missing_target_dropped": stats.missing_target_dropped,
            "manifest": MetadataValue.url(
                object_store.uri(f"{store.prefix}/versions/{digest}/manifest.json")
            ),
            "preview": md_table(
                list(splits["train"].columns), splits["train"].head(5).itertuples(index=False)
            ),
        },
        data_version=DataVersion(digest),
    )


@multi_asset_check(
    retry_policy=SERVER_RETRY,
    specs=[
        AssetCheckSpec(
            "files_match_manifest",
            asset="versioned_dataset",
            blocking=True,
            description="Every Parquet file of the version is present with the sha256 its "
            "manifest records. Failing means the stored version is corrupt or was altered.",
        ),
        AssetCheckSpec(
            "no_train_test_leakage",
            asset="versioned_dataset",
            blocking=True,
            description="No val or test row has feature values identical to a train row (nor "
            "test to val). Failing means test metrics would overstate the model.",
        ),
        AssetCheckSpec(
            "split_sizes_as_configured",
            asset="versioned_dataset",
            blocking=True,
            description="Each split has at least the spec's minimum rows (ERROR) and its share "
            "is within 3 binomial standard deviations of the configured fraction (WARN).",
        ),
    ],
    ins={"versioned_dataset": AssetIn("versioned_dataset")},
)
def versioned_dataset_integrity(
    versioned_dataset: dict[str, Any],
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
) -> Iterator[AssetCheckResult]:
    spec = dataset_source.spec
    store = DatasetStore(object_store, spec.name)
    manifest = store.manifest(versioned_dataset["digest"])
    if manifest is None:
        yield AssetCheckResult(
            check_name="files_match_manifest",
            asset_key="versioned_dataset",
            passed=False,
            description=f"version {versioned_dataset['digest'][:12]} has no manifest in the store",
        )
        return
    problems = store.verify(manifest)
    yield AssetCheckResult(
        check_name="files_match_manifest",
        asset_key="versioned_dataset",
        passed=not problems,
        description="; ".join(problems) or f"{len(manifest['files'])} files match",
    )
    if problems:
        return
    splits = {name: store.load_split(manifest, name) for name in manifest["files"]}
    leaks = leaked_rows(splits, spec)
    yield AssetCheckResult(
        check_name="no_train_test_leakage",
        asset_key="versioned_dataset",
        passed=not any(leaks.values()),
        description=", ".join(f"{k}: {v} rows" for k, v in leaks.items() if v)
        or "no feature row is shared between splits",
        metadata=dict(leaks),
    )
    findings = split_size_findings(splits, spec)
    too_small = [f for f in findings if f.rows < spec.split.min_rows_per_split]
    off_share = [f for f in findings if not f.ok_share]
    lines = [
        f"{f.split}: {f.rows} rows ({f.share:.1%}, expected {f.expected_share:.0%} "
        f"± {f.tolerance:.1%})"
        for f in findings
    ]
    yield AssetCheckResult(
        check_name="split_sizes_as_configured",
        asset_key="versioned_dataset",
        passed=not too_small and not off_share,
        severity=AssetCheckSeverity.ERROR if too_small else AssetCheckSeverity.WARN,
        description=(
            f"splits below the minimum of {spec.split.min_rows_per_split} rows: "
            f"{[f.split for f in too_small]}; "
            if too_small
            else ""
        )
        + "; ".join(lines),
        metadata={f"{f.split}_rows": f.rows for f in findings},
    )
