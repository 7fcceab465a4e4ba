"""Clean, split and fingerprint a validated dataset.

Splits are assigned by a salted hash of each row's feature values, not by a
shuffled index: a row lands in the same split in every version (so a model is
never tested on rows an earlier version trained on), identical feature rows
can never straddle train and test, and the split needs no random state.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlops_assets.ml.spec import DatasetSpec

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class CleaningStats:
    rows_in: int
    duplicates_dropped: int  # rows whose key a later row repeats (0 without a key)
    missing_target_dropped: int

    @property
    def rows_out(self) -> int:
        return self.rows_in - self.duplicates_dropped - self.missing_target_dropped


def clean(frame: pd.DataFrame, spec: DatasetSpec) -> tuple[pd.DataFrame, CleaningStats]:
    """Drop rows without a target and, when the spec has a key, every row whose key a later
    row repeats (the record written again: the last is kept). Rows are never dropped for being
    equal to another: without a key they are observations (categories are already
    normalised)."""
    has_target = frame[spec.target.name].notna()
    labelled = frame[has_target]
    if spec.key:
        duplicated = labelled.duplicated(subset=list(spec.key), keep="last")
    else:
        duplicated = pd.Series(False, index=labelled.index)
    cleaned = labelled[~duplicated].reset_index(drop=True)
    stats = CleaningStats(
        rows_in=len(frame),
        duplicates_dropped=int(duplicated.sum()),
        missing_target_dropped=int((~has_target).sum()),
    )
    return cleaned, stats


def _hash_key(seed: int) -> str:
    return hashlib.sha256(str(seed).encode()).hexdigest()[:16]


def feature_hashes(frame: pd.DataFrame, spec: DatasetSpec, seed: int | None = None) -> np.ndarray:
    seed = spec.split.seed if seed is None else seed
    features = frame[spec.feature_columns]
    hashed = pd.util.hash_pandas_object(features, index=False, hash_key=_hash_key(seed))
    return hashed.to_numpy(dtype=np.uint64)


def split(frame: pd.DataFrame, spec: DatasetSpec) -> dict[str, pd.DataFrame]:
    """Assign each row to train/val/test by the hash of its features, in a canonical row order."""
    hashes = feature_hashes(frame, spec)
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    position = (hashes % np.uint64(1_000_000)).astype(np.float64) / 1_000_000
    test_cut = spec.split.test_fraction
    val_cut = test_cut + spec.split.val_fraction
    labels = np.where(position < test_cut, "test", np.where(position < val_cut, "val", "train"))
    result = {}
    for name in SPLITS:
        mask = labels == name
        order = np.argsort(row_hashes[mask], kind="stable")
        result[name] = frame[mask].iloc[order].reset_index(drop=True)
    return result


def content_digest(splits: dict[str, pd.DataFrame], spec: DatasetSpec) -> str:
    """Digest of the rows (order-independent), the schema and the processing settings."""
    digest = hashlib.sha256()
    digest.update(spec.schema_fingerprint().encode())
    digest.update(spec.processing_fingerprint().encode())
    for name in SPLITS:
        part = splits[name]
        digest.update(f"{name}:{len(part)}:{','.join(part.columns)}".encode())
        row_hashes = pd.util.hash_pandas_object(part, index=False).to_numpy(dtype=np.uint64)
        digest.update(np.sort(row_hashes).tobytes())
    return digest.hexdigest()


def leaked_rows(splits: dict[str, pd.DataFrame], spec: DatasetSpec) -> dict[str, int]:
    """Count rows of val/test whose exact feature values also occur in train (or test in val)."""
    hashes = {name: feature_hashes(part, spec) for name, part in splits.items()}
    leaks = {}
    for held_out, against in (("val", "train"), ("test", "train"), ("test", "val")):
        leaks[f"{held_out}_in_{against}"] = int(np.isin(hashes[held_out], hashes[against]).sum())
    return leaks


@dataclass(frozen=True)
class SplitSizeFinding:
    split: str
    rows: int
    share: float
    expected_share: float
    tolerance: float

    @property
    def ok_share(self) -> bool:
        return abs(self.share - self.expected_share) <= self.tolerance


def split_size_findings(
    splits: dict[str, pd.DataFrame], spec: DatasetSpec
) -> list[SplitSizeFinding]:
    """Each split's share against its target; tolerance is 3 binomial standard deviations
    (at least 2 percentage points), so small datasets are not failed for noise."""
    total = sum(len(p) for p in splits.values())
    expected = {
        "val": spec.split.val_fraction,
        "test": spec.split.test_fraction,
        "train": 1 - spec.split.val_fraction - spec.split.test_fraction,
    }
    findings = []
    for name in SPLITS:
        p = expected[name]
        tolerance = max(0.02, 3 * float(np.sqrt(p * (1 - p) / max(total, 1))))
        share = len(splits[name]) / total if total else 0.0
        findings.append(SplitSizeFinding(name, len(splits[name]), share, p, tolerance))
    return findings


def next_version_tag(previous_tag: str | None, schema_changed: bool, source_changed: bool) -> str:
    """Semantic data versions: major for a schema change, minor for new source data, patch for
    the same source data processed with new cleaning or split settings."""
    if previous_tag is None:
        return "data-v1.0.0"
    major, minor, patch = (int(p) for p in previous_tag.removeprefix("data-v").split("."))
    if schema_changed:
        return f"data-v{major + 1}.0.0"
    if source_changed:
        return f"data-v{major}.{minor + 1}.0"
    return f"data-v{major}.{minor}.{patch + 1}"
