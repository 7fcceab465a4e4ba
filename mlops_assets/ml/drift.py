"""Drift and quality of a scored batch against the champion's training split (Evidently).

The report is data first: :class:`DriftSummary` holds the numbers a check
reads; the HTML is for a person. Evidently is imported inside the function
because importing it costs about 4 s.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tasks import (
    PREDICTION,
    classification_metrics,
    probability_columns,
    regression_metrics,
)


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

    When only some rows are labelled (live traffic, labels come later), drift is of every
    row, and ``quality`` is of the labelled rows, computed as the champion's test metrics are
    (``regression_metrics`` or ``classification_metrics``), without Evidently's quality preset
    in the HTML.

    Returns the summary, the report JSON and the report HTML.
    """
    if spec.task == "classification":
        return _classification_report(current, reference, spec, max_rows, column_drift_threshold)
    from evidently import DataDefinition, Dataset, Regression, Report
    from evidently.presets import DataDriftPreset, RegressionPreset

    features = spec.feature_columns
    target = spec.target.name
    current_sample, reference_sample, labelled = _samples(current, reference, spec, max_rows)
    # Evidently's quality preset when every compared row is labelled; with labels for some
    # rows only (live traffic), drift is of every row and quality of the labelled ones.
    preset = labelled is not None and len(labelled) == len(current_sample)

    def prepared(frame: pd.DataFrame) -> pd.DataFrame:
        columns = list(features)
        if preset:
            columns += [target, PREDICTION]
        out = frame[columns].copy()
        for name in spec.categorical_features:
            out[name] = out[name].astype(object)
        return out

    metrics: list[Any] = [DataDriftPreset(columns=features, drift_share=0.5)]
    regression = None
    if preset:
        metrics.append(RegressionPreset())
        regression = [Regression(target=target, prediction=PREDICTION)]
    definition = DataDefinition(
        numerical_columns=spec.numeric_features + ([target, PREDICTION] if preset else []),
        categorical_columns=spec.categorical_features,
        regression=regression,
    )
    with warnings.catch_warnings():
        # Evidently's regression preset plots R2 per bin of the target; a bin of one row
        # makes scikit-learn warn on every labelled batch (stderr of mlops-demo, each run's
        # log). Those plot values are not what the checks read.
        warnings.filterwarnings(
            "ignore", message=r"R\^2 score is not well-defined", category=UserWarning
        )
        snapshot = Report(metrics, include_tests=False).run(
            Dataset.from_pandas(prepared(current_sample), data_definition=definition),
            Dataset.from_pandas(prepared(reference_sample), data_definition=definition),
        )
    quality = None
    if labelled is not None and not preset:
        quality = regression_metrics(labelled[target], labelled[PREDICTION])
    return _finish(
        snapshot, current, reference, features, max_rows, column_drift_threshold, quality
    )


def _samples(
    current: pd.DataFrame, reference: pd.DataFrame, spec: DatasetSpec, max_rows: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]:
    """The bounded samples the report compares, and the current sample's labelled rows (None
    when it has none: quality is not measured)."""
    target = spec.target.name
    current_sample = sample(current, max_rows)
    if target not in current_sample.columns:
        return current_sample, sample(reference, max_rows), None
    labelled = current_sample[current_sample[target].notna()]
    return current_sample, sample(reference, max_rows), labelled if len(labelled) else None


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
    current_sample, reference_sample, labelled = _samples(current, reference, spec, max_rows)
    # As for regression: Evidently's preset when every row is labelled, else quality alone.
    preset = labelled is not None and len(labelled) == len(current_sample)
    columns = [*features, PREDICTION, *([target] if preset else [])]

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
    if labelled is not None:
        quality = classification_metrics(
            labelled[target].astype(str),
            labelled[probability_columns(spec)].to_numpy(dtype=float),
            spec.classes,
        )
    if preset:
        metrics.append(ClassificationPreset())
        if len(spec.classes) == 2:
            classification = [
                BinaryClassification(
                    target=target, prediction_labels=PREDICTION, pos_label=spec.classes[1]
                )
            ]
        else:
            classification = [MulticlassClassification(target=target, prediction_labels=PREDICTION)]
    definition = DataDefinition(
        numerical_columns=spec.numeric_features,
        categorical_columns=[*spec.categorical_features, PREDICTION] + ([target] if preset else []),
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
