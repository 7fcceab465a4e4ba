"""What each asset hands to the assets and checks downstream: one small frozen record each.

The IO manager stores these between runs, so they hold handles (keys, digests, ids, a few
numbers), never data. A field is read by name, so a typo fails type checking instead of
raising KeyError in a run.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SnapshotFile:
    name: str
    key: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Snapshot:
    """raw_data: the source's files as stored, keyed by the hash of their content."""

    source: str
    digest: str
    manifest_key: str
    files: tuple[SnapshotFile, ...]

    def manifest_json(self) -> bytes:
        document = {
            "source": self.source,
            "digest": self.digest,
            "files": [asdict(f) for f in self.files],
        }
        return json.dumps(document, indent=2).encode()


@dataclass(frozen=True)
class DatasetVersion:
    """versioned_dataset: the published version (its manifest holds the rest)."""

    dataset: str
    digest: str
    tag: str


@dataclass(frozen=True)
class TrainedModel:
    """trained_model: the MLflow run whose model was logged, and its test metrics."""

    run_id: str
    model_uri: str
    metrics: dict[str, float]
    dataset_digest: str
    dataset_tag: str
    # What it was trained from (ml.train.training_fingerprint), and whether training was forced
    # although an earlier run had trained the same: registration registers one version per
    # fingerprint unless forced.
    fingerprint: str = ""
    forced: bool = False


@dataclass(frozen=True)
class Registration:
    """registered_model: the version registered for the run and what the gate did."""

    model_name: str
    version: str
    champion_before: str | None
    champion_after: str | None
    metric: str
    challenger_score: float
    champion_score_before: float | None
    dataset_digest: str


def champion_data_version(version: str | None) -> str:
    """registered_model's data version: which version is champion. The served image and the
    deployment follow it (an automation condition on its change), whether a materialisation,
    an approval or a rollback moved it."""
    return f"champion-v{version}" if version else "no-champion"


@dataclass(frozen=True)
class ScoredBatch:
    """predictions: one day's scored batch as Parquet in the object store."""

    key: str
    rows: int
    input_rows: int
    model_version: str
    batch_uri: str
    train_target_min: float | None
    train_target_max: float | None
    # The spec's classes (classification): allowed predictions, one probability column each.
    classes: tuple[str, ...] = ()
    # Rows set aside (beside the predictions, with their rule): rows + quarantined = input_rows.
    quarantined: int = 0
    quarantine_key: str | None = None
    quarantine_rules: dict[str, int] = field(default_factory=dict)  # rule -> rows
    quarantine_examples: tuple[str, ...] = ()  # "file 'a.csv', row 7 (line 8): rule"


@dataclass(frozen=True)
class ServedTraffic:
    """served_traffic: one day of the served model's answered rows as Parquet, and what its
    checks judge."""

    key: str
    day: str
    rows: int
    requests: int
    errors: int
    dropped: int
    model_versions: tuple[str, ...]
    unexpected_columns: dict[str, int] = field(default_factory=dict)
    missing_columns: dict[str, int] = field(default_factory=dict)
    error_examples: tuple[str, ...] = ()
    labelled_rows: int = 0  # rows whose late label has come (the table's target column)

    @property
    def error_share(self) -> float:
        total = self.requests + self.errors
        return self.errors / total if total else 0.0

    @property
    def dropped_share(self) -> float:
        total = self.requests + self.errors + self.dropped
        return self.dropped / total if total else 0.0


@dataclass(frozen=True)
class DriftResult:
    """drift_report: the report's keys and what the checks judge."""

    json_key: str
    html_key: str
    drift_share: float
    drifted_columns: int
    quality: dict[str, float] | None
    # The metric the quality check compares (rmse, or balanced_accuracy for classification),
    # and the champion's value of it on its test split.
    quality_metric: str
    champion_test_quality: float
    model_version: str
    # What was answered: "batch" (predictions) or "traffic" (served_traffic); and how many of
    # its rows (0: nothing to compare, the checks pass saying so).
    subject: str = "batch"
    rows: int | None = None


@dataclass(frozen=True)
class ServedImage:
    """served_image: the champion's image, in a registry (digest) or an OCI archive."""

    model_name: str
    model_version: str
    run_id: str
    repository: str
    tag: str
    base_image: str
    fingerprint: str
    builder: str
    digest: str
    reference: str
    archive_key: str | None = None
    size_bytes: int | None = None
    build_seconds: float = 0.0
    built_at: str = ""
    dagster_run_id: str = ""

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.tag}"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> ServedImage:
        known = {name for name in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in document.items() if k in known})


@dataclass(frozen=True)
class Deployment:
    """model_deployment: what was applied to the cluster once the rollout was ready."""

    model_name: str
    model_version: str
    image: str
    kind: str
    namespace: str
    name: str
    replicas: int
    url: str
    status: str
    manifests: list[dict[str, Any]] = field(default_factory=list)
    applied_at: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()
