"""Drift and quality of a scored batch against the champion's training split (Evidently).

The report is data first: :class:`DriftSummary` holds the numbers a check
reads; the HTML is for a person. Evidently is imported inside the function
because importing it costs about 4 s.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tasks import PREDICTION, classification_metrics, probability_columns


@dataclass(frozen=True)
class ColumnDrift:
    """Evidently picks the test by column type and size: a p-value (drift when below the
    threshold) or a distance (drift when at or above it)."""

    method: str
    score: float
    threshold: float

    @property
    def drifted(self) -> bool:
        if "p_value" in self.method:
            return self.score < self.threshold
        return self.score >= self.threshold


@dataclass
class DriftSummary:
    drift_share: float
    drifted_columns: int
    columns_checked: int
    columns: dict[str, ColumnDrift]
    current_rows: int
    reference_rows: int
    sampled: bool
    quality: dict[str, float] | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def sample(frame: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """At most ``max_rows`` rows, reproducibly; drift tests on a sample keep cost bounded."""
    if len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed)


def drift_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    spec: DatasetSpec,
    max_rows: int,
    column_drift_threshold: float = 0.05,
) -> tuple[DriftSummary, str, str]:
    """Run Evidently's data drift preset, plus regression quality when the batch has labels.

    For classification, the drift of the predicted class is reported too (a column of its
    own, not counted in the feature drift share), and a labelled batch gets Evidently's
    classification preset; its ``quality`` is computed by
    :func:`mlops_assets.ml.tasks.classification_metrics`, as the champion's test metrics
    were, so the quality check compares like with like.

    Both frames carry the champion's predictions in a ``prediction`` column: on the batch,
    and on the reference (its training split) so the report sets the batch's quality beside
    the quality the model had on the data it learned from.

    Returns the summary, the report JSON and the report HTML.
    """
    if spec.task == "classification":
        return _classification_report(current, reference, spec, max_rows, column_drift_threshold)
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import DataDriftPreset, RegressionPreset

    features = spec.feature_columns
    target = spec.target.name
    current_sample, reference_sample, has_labels = _samples(current, reference, spec, max_rows)

    def prepared(frame: pd.DataFrame, with_prediction: bool) -> pd.DataFrame:
        columns = list(features)
        if has_labels:
            columns.append(target)
        if with_prediction:
            columns.append(PREDICTION)
        out = frame[columns].copy()
        for name in spec.categorical_features:
            out[name] = out[name].astype(object)
        return out

    metrics: list[Any] = [DataDriftPreset(columns=features, drift_share=0.5)]
    regression = None
    if has_labels:
        metrics.append(RegressionPreset())
        regression = [Regression(target=target, prediction=PREDICTION)]
    current_for_report = prepared(current_sample, with_prediction=has_labels)
    reference_for_report = prepared(reference_sample, with_prediction=has_labels)

    definition = DataDefinition(
        numerical_columns=spec.numeric_features + ([target, PREDICTION] if has_labels else []),
        categorical_columns=spec.categorical_features,
        regression=regression,
    )
    snapshot = Report(metrics, include_tests=False).run(
        Dataset.from_pandas(current_for_report, data_definition=definition),
        Dataset.from_pandas(reference_for_report, data_definition=definition),
    )
    return _finish(snapshot, current, reference, features, max_rows, column_drift_threshold)


def _samples(
    current: pd.DataFrame, reference: pd.DataFrame, spec: DatasetSpec, max_rows: int
) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """The bounded samples the report compares, and whether the batch has labels (then only
    its labelled rows are compared)."""
    target = spec.target.name
    has_labels = target in current.columns and bool(current[target].notna().any())
    current_sample = sample(current, max_rows)
    if has_labels:
        current_sample = current_sample[current_sample[target].notna()]
    return current_sample, sample(reference, max_rows), has_labels


def _finish(
    snapshot: Any,
    current: pd.DataFrame,
    reference: pd.DataFrame,
    features: list[str],
    max_rows: int,
    threshold: float,
    quality: dict[str, float] | None = None,
) -> tuple[DriftSummary, str, str]:
    report = snapshot.dict()
    summary = summarise(report, features, threshold)
    if quality is not None:
        summary.quality = quality
    summary.current_rows = len(current)
    summary.reference_rows = len(reference)
    summary.sampled = len(current) > max_rows or len(reference) > max_rows
    with tempfile.TemporaryDirectory() as tmp:
        html_path = Path(tmp) / "report.html"
        snapshot.save_html(str(html_path))
        html = html_path.read_text(encoding="utf-8")
    return summary, json.dumps(report, default=str), html


def _classification_report(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    spec: DatasetSpec,
    max_rows: int,
    threshold: float,
) -> tuple[DriftSummary, str, str]:
    from evidently import (
        BinaryClassification,
        DataDefinition,
        Dataset,
        MulticlassClassification,
        Report,
    )
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationPreset, DataDriftPreset

    features = spec.feature_columns
    target = spec.target.name
    current_sample, reference_sample, has_labels = _samples(current, reference, spec, max_rows)
    columns = [*features, PREDICTION, *([target] if has_labels else [])]

    def prepared(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame[columns].copy()
        for name in [*spec.categorical_features, PREDICTION, target]:
            if name in out.columns:
                out[name] = out[name].astype(str).astype(object)
        return out

    metrics: list[Any] = [
        DataDriftPreset(columns=features, drift_share=0.5),
        ValueDrift(column=PREDICTION),
    ]
    classification: list[Any] | None = None
    quality = None
    if has_labels:
        metrics.append(ClassificationPreset())
        if len(spec.classes) == 2:
            classification = [
                BinaryClassification(
                    target=target, prediction_labels=PREDICTION, pos_label=spec.classes[1]
                )
            ]
        else:
            classification = [MulticlassClassification(target=target, prediction_labels=PREDICTION)]
        quality = classification_metrics(
            current_sample[target].astype(str),
            current_sample[probability_columns(spec)].to_numpy(dtype=float),
            spec.classes,
        )
    definition = DataDefinition(
        numerical_columns=spec.numeric_features,
        categorical_columns=[*spec.categorical_features, PREDICTION]
        + ([target] if has_labels else []),
        classification=classification,
    )
    snapshot = Report(metrics, include_tests=False).run(
        Dataset.from_pandas(prepared(current_sample), data_definition=definition),
        Dataset.from_pandas(prepared(reference_sample), data_definition=definition),
    )
    return _finish(snapshot, current, reference, features, max_rows, threshold, quality)


def summarise(report: dict[str, Any], features: list[str], threshold: float) -> DriftSummary:
    columns: dict[str, ColumnDrift] = {}
    drifted = None
    quality: dict[str, float] = {}
    for metric in report["metrics"]:
        kind = metric["config"].get("type", "")
        value = metric["value"]
        if kind.endswith("DriftedColumnsCount"):
            drifted = value
        elif kind.endswith("ValueDrift"):
            config = metric["config"]
            columns[config["column"]] = ColumnDrift(
                method=str(config.get("method", "")),
                score=float(value),
                threshold=float(config.get("threshold", 0.0)),
            )
        elif kind.endswith(":RMSE"):
            quality["rmse"] = float(value)
        elif kind.endswith(":MAE"):
            quality["mae"] = float(value["mean"])
        elif kind.endswith(":R2Score"):
            quality["r2"] = float(value)
    if drifted is None:
        raise ValueError("Evidently report has no DriftedColumnsCount metric")
    return DriftSummary(
        drift_share=float(drifted["share"]),
        drifted_columns=int(drifted["count"]),
        columns_checked=len(features),
        columns=columns,
        current_rows=0,
        reference_rows=0,
        sampled=False,
        quality=quality or None,
        raw=report,
    )
