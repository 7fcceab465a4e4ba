"""raw_data and versioned_dataset, with the checks that guard them."""

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetOut,
    AssetsDefinition,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from mlops_assets.components.lifecycle.scope import ModelScope
from mlops_assets.lib.exclusive import dataset_lease, exclusive
from mlops_assets.lib.metadata import md_table, redact_uri, violations_result
from mlops_assets.lib.retries import SERVER_RETRY, fail_fast
from mlops_assets.ml.dataset import clean, content_digest, leaked_rows, split, split_size_findings
from mlops_assets.ml.dataset_store import DatasetStore, sha256
from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tabular import (
    KEPT_INSPECTIONS,
    REQUIRED_COLUMNS,
    RULE_GROUPS,
    DatasetRejected,
    Inspection,
    KeptInspections,
    TableFile,
    Violation,
    describe_ignored,
    inspect_table,
    plural,
    validated,
)
from mlops_assets.records import DatasetVersion, Snapshot, SnapshotFile
from mlops_assets.resources.dataset_source import DatasetSourceResource, SourceUnavailable
from mlops_assets.resources.object_store import ObjectStoreResource

RAW_CHECK_DESCRIPTIONS = {
    "parses_as_table": "Every file is UTF-8 CSV (or Parquet) that parses. Failing means the "
    "snapshot cannot be read; nothing downstream runs.",
    "has_data_rows": "Every file has a header and at least one data row.",
    "required_columns_present": "Every file has the target and every feature column of the spec.",
    "values_match_schema": "Numeric columns are numeric, whole and in range; categories are "
    "allowed; the missing share is under the limit. Failing blocks versioning.",
    "duplicate_share_within_limit": "With a record key in the spec: rows repeating a key stay "
    "under the spec's share; above it the source is likely broken (a double export), and it is "
    "rejected. Without a key, equal rows are observations and are kept: above the share this "
    "only warns.",
}


def snapshot_digest(files: list[TableFile]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{sha256(file.data)}\0".encode())
    return digest.hexdigest()


def raw_checks(asset: AssetKey) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(name, asset=asset, blocking=True, description=description)
        for name, description in RAW_CHECK_DESCRIPTIONS.items()
    ]


def contract_results(
    inspections: list[Inspection],
    files: int,
    spec: DatasetSpec,
    context: AssetExecutionContext,
    asset: AssetKey,
) -> list[AssetCheckResult]:
    """Each rule group of the dataset contract, judged on every file. A group no file could be
    evaluated on (columns of a file that does not parse) gets no result, so the UI shows it as
    not executed instead of passed."""
    grouped: dict[str, list[Violation] | None] = dict.fromkeys(RULE_GROUPS)
    warned: dict[str, list[Violation]] = {}
    ignored_columns: dict[str, tuple[str, ...]] = {}
    for inspection in inspections:
        for group, found in inspection.results.items():
            if found is not None:
                grouped[group] = (grouped[group] or []) + found
        for group, found in inspection.warnings.items():
            warned[group] = warned.get(group, []) + found
        ignored_columns[inspection.file] = inspection.ignored_columns
    ignored = describe_ignored(ignored_columns)
    if ignored:
        context.log.warning(f"columns not in the spec '{spec.name}' are ignored: {ignored}")
    results = []
    for group, found in grouped.items():
        if found is None:
            context.log.info(f"check {group} not evaluated: an earlier rule failed")
            continue
        passed = f"{files} file(s) pass"
        if group == REQUIRED_COLUMNS and ignored:
            passed += f"; columns not in the spec are ignored: {ignored}"
        if not found and warned.get(group):  # worth a look, but it rejects nothing
            found, severity = warned[group], AssetCheckSeverity.WARN
        else:
            severity = AssetCheckSeverity.ERROR
        results.append(violations_result(group, asset, found, passed, severity))
    return results


def store_snapshot(snapshot: Snapshot, files: list[TableFile], store: ObjectStoreResource) -> bool:
    """Write a snapshot's files, then its manifest (a snapshot exists once it has one); returns
    whether it was stored before. A write that fails removes what this call wrote, so a full
    disk is not kept full by half a snapshot."""
    if store.exists(snapshot.manifest_key):
        return True
    written: list[str] = []
    try:
        for file, entry in zip(files, snapshot.files, strict=True):
            store.put_bytes(entry.key, file.data)
            written.append(entry.key)
        store.put_bytes(snapshot.manifest_key, snapshot.manifest_json())
    except BaseException:
        for key in written:
            with contextlib.suppress(Exception):
                store.delete(key)
        raise
    return False


def raw_data(
    context: AssetExecutionContext,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
    scope: ModelScope,
) -> Iterator[MaterializeResult | AssetCheckResult]:
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
    spec = dataset_source.spec
    inspections = []
    for file in files:
        inspection = inspect_table(file, spec)
        # versioned_dataset, the next step of this process, takes it instead of parsing again.
        KEPT_INSPECTIONS.keep(KeptInspections.key(sha256(file.data), spec), inspection)
        inspections.append(inspection)
    # The contract is judged whole, whichever checks were selected: a subset run never
    # stores a source that breaks it. Only the selected checks report.
    results = contract_results(inspections, len(files), spec, context, scope.key("raw_data"))
    shown, unreported = selected_results(context, results)
    rejected = failed_blocking(results)
    if rejected:
        context.log.error(
            f"source {source} breaks the dataset contract '{spec.name}' ({', '.join(rejected)} "
            "failed): nothing was stored and no version will be made from it\n"
            + "\n".join(v.message for i in inspections for v in i.violations[:10])
        )
        yield from shown
        if unreported:
            raise Failure(
                allow_retries=False,
                description=f"source {source} breaks the dataset contract '{spec.name}': "
                f"{', '.join(unreported)} failed (not selected in this run): "
                + "; ".join(v.message for i in inspections for v in i.violations[:3]),
            )
        return
    if not context.selected_asset_keys:  # only its checks were asked for
        yield from shown
        return
    digest = snapshot_digest(files)
    prefix = f"raw/{digest}"
    snapshot = Snapshot(
        source=source,
        digest=digest,
        manifest_key=f"{prefix}/manifest.json",
        files=tuple(
            SnapshotFile(
                name=f.name,
                key=f"{prefix}/files/{f.name}",
                sha256=sha256(f.data),
                bytes=len(f.data),
            )
            for f in files
        ),
    )
    existed = store_snapshot(snapshot, files, object_store)
    context.log.info(
        f"snapshot {digest[:12]} of {source}: {len(files)} file(s), "
        + ("already stored" if existed else "stored")
    )
    yield MaterializeResult(
        value=snapshot,
        metadata={
            "source": source,
            "digest": digest,
            "already_stored": existed,
            "files": len(files),
            "bytes": sum(e.bytes for e in snapshot.files),
            "snapshot": MetadataValue.url(object_store.uri(snapshot.manifest_key)),
            "file_list": md_table(
                ["file", "bytes", "sha256"],
                [(e.name, e.bytes, e.sha256[:12]) for e in snapshot.files],
            ),
        },
        data_version=DataVersion(digest),
        check_results=shown,
    )


def inspect_snapshot(
    snapshot: Snapshot, store: ObjectStoreResource, spec: DatasetSpec
) -> list[Inspection]:
    """Each file of ``snapshot`` held to ``spec``: taken from what raw_data kept in this
    process (KeptInspections), else read from the store and inspected."""
    inspections = []
    for entry in snapshot.files:
        inspection = KEPT_INSPECTIONS.take(KeptInspections.key(entry.sha256, spec))
        if inspection is None:
            inspection = inspect_table(TableFile(entry.name, store.get_bytes(entry.key)), spec)
        inspections.append(inspection)
    return inspections


def version_checks(asset: AssetKey) -> list[AssetCheckSpec]:
    return [spec._replace(asset_key=asset) for spec in VERSION_CHECKS]


VERSION_CHECKS = [
    AssetCheckSpec(
        "files_match_manifest",
        asset="versioned_dataset",
        blocking=True,
        description="Every Parquet file of the version is in the store with the sha256 its "
        "manifest records, read back before the version is published. Failing means the store "
        "lost or altered a file; the version is not published.",
    ),
    AssetCheckSpec(
        "no_train_test_leakage",
        asset="versioned_dataset",
        blocking=True,
        description="No val or test row has feature values identical to a train row (nor test "
        "to val). Failing means test metrics would overstate the model; the version is not "
        "published.",
    ),
    AssetCheckSpec(
        "split_sizes_as_configured",
        asset="versioned_dataset",
        blocking=True,
        description="Each split has at least the spec's minimum rows (ERROR: the version is not "
        "published) and its share is within 3 binomial standard deviations of the configured "
        "fraction (WARN).",
    ),
]


def split_checks(splits: dict[str, Any], spec: DatasetSpec, source: str) -> list[AssetCheckResult]:
    """no_train_test_leakage and split_sizes_as_configured, on the splits in memory;
    ``source`` names where the rows came from (its files), for a person to act on."""
    leaks = leaked_rows(splits, spec)
    findings = split_size_findings(splits, spec)
    too_small = [f for f in findings if f.rows < spec.split.min_rows_per_split]
    off_share = [f for f in findings if not f.ok_share]
    total = sum(f.rows for f in findings)
    lines = [
        f"{f.split} has {plural(f.rows, 'row')} ({f.share:.0%} of {total:,}; "
        f"{f.expected_share:.0%} expected, within {f.tolerance:.0%} at this size)"
        for f in findings
    ]
    return [
        AssetCheckResult(
            check_name="no_train_test_leakage",
            passed=not any(leaks.values()),
            description=", ".join(f"{k}: {v} rows" for k, v in leaks.items() if v)
            or "no feature row is shared between splits",
            metadata=dict(leaks),
        ),
        AssetCheckResult(
            check_name="split_sizes_as_configured",
            passed=not too_small and not off_share,
            severity=AssetCheckSeverity.ERROR if too_small else AssetCheckSeverity.WARN,
            description=(
                f"{source} has too few rows to split: "
                f"{', '.join(f.split for f in too_small)} would have fewer than the minimum of "
                f"{spec.split.min_rows_per_split} rows per split (split.min_rows_per_split); "
                "add rows, or lower the minimum in the spec. "
                if too_small
                else ""
            )
            + "; ".join(lines),
            metadata={f"{f.split}_rows": f.rows for f in findings},
        ),
    ]


def selected_results(
    context: AssetExecutionContext, results: list[AssetCheckResult]
) -> tuple[list[AssetCheckResult], list[str]]:
    """The results of the checks this run selected (the others are judged, not reported),
    and the names of the unselected ones that failed blocking: a subset run says those in
    its own failure, so it never stores what they reject."""
    selected = {key.name for key in context.selected_asset_check_keys}
    shown = [r for r in results if r.check_name in selected]
    return shown, [name for name in failed_blocking(results) if name not in selected]


def failed_blocking(results: list[AssetCheckResult]) -> list[str]:
    """Names of the results that must stop publication: failed with ERROR severity."""
    return [
        str(r.check_name)
        for r in results
        if not r.passed and r.severity == AssetCheckSeverity.ERROR
    ]


def versioned_dataset(
    context: AssetExecutionContext,
    raw_data: Snapshot,
    dataset_source: DatasetSourceResource,
    object_store: ObjectStoreResource,
) -> Iterator[MaterializeResult | AssetCheckResult]:
    spec = dataset_source.spec
    try:
        table = validated(inspect_snapshot(raw_data, object_store, spec))
    except DatasetRejected as exc:
        raise Failure(
            allow_retries=False,
            description=f"snapshot {raw_data.digest[:12]} of {raw_data.source} breaks the "
            f"dataset contract '{spec.name}'; no version was written.\n{exc}",
            metadata={"violations": len(exc.violations)},
        ) from exc
    ignored = table.describe_ignored()
    if ignored:
        context.log.warning(f"columns not in the spec '{spec.name}' are left out: {ignored}")
    cleaned, stats = clean(table.frame, spec)
    splits = split(cleaned, spec)
    digest = content_digest(splits, spec)

    # Evaluate every check that can reject the version before a tag or ref moves.
    files = ", ".join(f"'{f.name}'" for f in raw_data.files)
    results = split_checks(splits, spec, f"source {raw_data.source} (file {files})")
    store = DatasetStore(object_store, spec.name)
    if not failed_blocking(results):
        staged = store.stage(
            splits,
            digest,
            spec,
            source={"uri": raw_data.source, "digest": raw_data.digest},
            cleaning=stats,
        )
        problems = store.verify(staged.manifest)
        results.append(
            AssetCheckResult(
                check_name="files_match_manifest",
                passed=not problems,
                description="; ".join(problems) or f"{len(staged.manifest['files'])} files match",
            )
        )
    rejected = failed_blocking(results)
    shown, unreported = selected_results(context, results)
    if rejected:
        latest = store.ref("latest")
        why = (
            f"version {digest[:12]} of '{spec.name}' is not published: {', '.join(rejected)} "
            "failed. No tag or ref moved; latest is still "
            + (f"{latest['tag']} ({latest['digest'][:12]})" if latest else "unset")
        )
        context.log.error(why)
        yield from shown
        if unreported:  # a subset run: say it here
            raise Failure(allow_retries=False, description=why)
        return
    if not context.selected_asset_keys:  # only its checks were asked
        yield from shown
        return

    # One publication at a time per dataset, so that no tag is given twice and the refs move
    # in order; one a stopped run left half done is finished first.
    with exclusive(context, object_store, dataset_lease(spec.name)) as lease:
        lease.ensure_held()
        published = store.publish(staged)
    if published.finished:
        context.log.warning(published.finished)
    manifest = published.manifest
    context.log.info(
        f"{manifest['tag']} ({digest[:12]}) " + ("created" if published.created else "unchanged")
    )
    yield MaterializeResult(
        value=DatasetVersion(dataset=spec.name, digest=digest, tag=manifest["tag"]),
        metadata={
            "tag": manifest["tag"],
            "digest": digest,
            "new_version": published.created,
            "previous_latest": published.previous_latest or "",
            "rows": sum(len(p) for p in splits.values()),
            "train_rows": len(splits["train"]),
            "val_rows": len(splits["val"]),
            "test_rows": len(splits["test"]),
            "key_duplicates_dropped": stats.duplicates_dropped,
            "missing_target_dropped": stats.missing_target_dropped,
            "ignored_columns": ignored or "none",
            "manifest": MetadataValue.url(
                object_store.uri(f"{store.prefix}/versions/{digest}/manifest.json")
            ),
            "preview": md_table(
                list(splits["train"].columns), splits["train"].head(5).itertuples(index=False)
            ),
        },
        data_version=DataVersion(digest),
        check_results=shown,
    )


def build_data_assets(model: ModelScope) -> list[AssetsDefinition]:
    """raw_data and versioned_dataset of ``model``, with their checks."""
    return [
        multi_asset(
            name=model.step("raw_data"),
            outs={
                "raw_data": AssetOut(
                    key=model.key("raw_data"),
                    group_name=model.name,
                    kinds={"csv", "parquet"},
                    # A source that breaks the contract is not stored and not materialised: the
                    # snapshot the last accepted source made stays the asset's value, and nothing
                    # downstream runs.
                    is_required=False,
                    description="Immutable snapshot of the configured source in the object store, "
                    "keyed by the hash of its content: the same data is stored once, whatever its "
                    "source. The source is held to the dataset contract before anything is stored.",
                )
            },
            check_specs=raw_checks(model.key("raw_data")),
            # A rule group that could not be evaluated (the values of a file that does not parse)
            # yields no result: the check is skipped, not failed and not a missing output.
            can_subset=True,
            retry_policy=SERVER_RETRY,
        )(fail_fast(model.bind(raw_data))),
        multi_asset(
            name=model.step("versioned_dataset"),
            outs={
                "versioned_dataset": AssetOut(
                    key=model.key("versioned_dataset"),
                    group_name=model.name,
                    kinds={"parquet"},
                    # No materialisation when a blocking check fails: the last published version
                    # stays the asset's value, and nothing downstream runs.
                    is_required=False,
                    description="Cleaned, validated, de-duplicated train/val/test splits as Parquet "
                    "under a content-addressed version with a manifest; tagged data-vX.Y.Z, with "
                    "latest/previous refs. Its checks run before anything is published.",
                )
            },
            ins={"raw_data": AssetIn(model.key("raw_data"))},
            check_specs=version_checks(model.key("versioned_dataset")),
            # files_match_manifest cannot be evaluated on a version whose splits were rejected: it
            # is skipped, not a missing output.
            can_subset=True,
            retry_policy=SERVER_RETRY,
        )(fail_fast(model.bind(versioned_dataset))),
    ]
