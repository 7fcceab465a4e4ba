"""The served model's traffic log read back: one day's JSON Lines files as one table.

The files are what the served model's app writes (:mod:`mlops_assets.model_server.record`): per answered request one line per
input row (``kind: answer``: the row as the model got it and its prediction as served), one
line per refused request (``kind: error``), and ``kind: dropped`` lines counting requests the
server could not log.

Labels come later, from whoever learns the true outcome: files under
``traffic_labels/<model>/date=<day>/`` keyed by the request id (and the row, for a request of
several rows) are joined to the day's rows by :func:`join_labels`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from mlops_assets.ml.spec import DatasetSpec, NumericColumn
from mlops_assets.ml.tabular import (
    MAX_ROWS_LISTED,
    DatasetRejected,
    TableFile,
    Violation,
    inspect_frame,
    plural,
    read_frame,
    row_numbers,
)
from mlops_assets.ml.tasks import answer_frame
from mlops_assets.model_server.record import ANSWER, DROPPED, ERROR, REQUIRED_FIELDS

TRAFFIC_COLUMNS = ("request_id", "row", "time", "model_version", "latency_ms")


REQUEST_ID, ROW = "request_id", "row"
LABELS_PREFIX = "traffic_labels"


def labels_day_prefix(model_name: str, day: str) -> str:
    """Where the labels of one day's traffic go: any .csv or .parquet file beneath."""
    return f"{LABELS_PREFIX}/{model_name}/date={day}/"


class TrafficUnreadable(ValueError):
    """A traffic log file holds a line that is not a log record."""


@dataclass(frozen=True)
class TrafficDay:
    """One day of served traffic: the answered rows, and what the checks judge."""

    frame: pd.DataFrame  # TRAFFIC_COLUMNS, the spec's features, the answer columns
    files: int
    requests: int  # answered
    errors: int  # refused (4xx, 5xx)
    dropped: int  # answered but not logged: the server's buffer was full
    error_examples: tuple[str, ...] = ()
    unexpected_columns: dict[str, int] = field(default_factory=dict)  # column -> rows with it
    missing_columns: dict[str, int] = field(default_factory=dict)  # column -> rows without it


def read_traffic(files: Iterable[tuple[str, bytes]], spec: DatasetSpec) -> TrafficDay:
    """``files`` (name, content) as one :class:`TrafficDay` for the model of ``spec``."""
    answers: list[dict] = []
    errors: list[dict] = []
    dropped = 0
    count = 0
    for name, content in files:
        count += 1
        for number, text in enumerate(content.decode("utf-8").splitlines(), 1):
            if not text.strip():
                continue
            try:
                line = json.loads(text)
                kind = line["kind"]
            except (json.JSONDecodeError, TypeError, KeyError) as exc:
                raise TrafficUnreadable(
                    f"{name}, line {number}: not a traffic log record ({exc}): {text[:200]!r}"
                ) from None
            absent = [f for f in REQUIRED_FIELDS.get(kind, ()) if f not in line]
            if absent:
                raise TrafficUnreadable(
                    f"{name}, line {number}: an {kind} record without {', '.join(absent)}"
                )
            if kind == ANSWER:
                answers.append(line)
            elif kind == ERROR:
                errors.append(line)
            elif kind == DROPPED:
                dropped += int(line["count"])
    requests = len({line["request_id"] for line in answers})
    frame, unexpected, missing = _table(answers, spec)
    examples = Counter(
        f"HTTP {line['status']}: {str(line.get('error', ''))[:300]}" for line in errors
    )
    return TrafficDay(
        frame=frame,
        files=count,
        requests=requests,
        errors=len(errors),
        dropped=dropped,
        error_examples=tuple(f"{n}x {text}" for text, n in examples.most_common(5)),
        unexpected_columns=unexpected,
        missing_columns=missing,
    )


def _table(
    answers: list[dict], spec: DatasetSpec
) -> tuple[pd.DataFrame, dict[str, int], dict[str, int]]:
    """The answered rows as a table, and the input columns not in the signature (rows with a
    value) or absent from it."""
    features = spec.feature_columns
    if not answers:
        return pd.DataFrame(columns=[*TRAFFIC_COLUMNS, *features]), {}, {}
    inputs = pd.DataFrame.from_records([line.get("inputs") or {} for line in answers])
    unexpected = {str(c): int(inputs[c].notna().sum()) for c in inputs.columns if c not in features}
    missing = {c: len(inputs) for c in features if c not in inputs.columns}
    meta = pd.DataFrame({c: [line.get(c) for line in answers] for c in TRAFFIC_COLUMNS})
    meta["time"] = pd.to_datetime(meta["time"], utc=True, format="ISO8601")
    meta["model_version"] = meta["model_version"].astype(str)
    predictions = [line.get("prediction") for line in answers]
    if spec.task == "classification":
        records = [p if isinstance(p, dict) else {} for p in predictions]
        answered = answer_frame(pd.DataFrame.from_records(records), spec)
    else:
        answered = answer_frame(pd.Series(predictions, dtype="float64").to_numpy(), spec)
    table = pd.concat(
        [meta, inputs.reindex(columns=features), answered.set_index(meta.index)], axis=1
    )
    return table.sort_values(["time", "request_id", "row"], ignore_index=True), unexpected, missing


def read_labels(files: Iterable[TableFile], spec: DatasetSpec) -> pd.DataFrame:
    """Late labels: each file has ``request_id``, the target and, for requests of several rows,
    ``row`` (0 when absent: a one-row request). The target is held to the spec's contract
    (type, bounds, classes; none missing) and each request row is labelled once.

    Returns one frame of ``request_id``, ``row`` and the target, typed as the spec types it, or
    raises :class:`~mlops_assets.ml.tabular.DatasetRejected` naming file, column, rows and rule.
    """
    contract = DatasetSpec(
        name=f"{spec.name} labels",
        target=replace(spec.target, max_null_share=0.0),
        numeric=(NumericColumn(ROW, min=0, integer=True, max_null_share=0.0),),
        categorical=(),
        max_duplicate_share=1.0,  # a repeated key is checked below, across files too
    )
    violations: list[Violation] = []
    frames: list[pd.DataFrame] = []
    for file in files:
        raw, parse_violations = read_frame(file)
        columns = list(raw.columns) if raw is not None else []
        absent = [c for c in (REQUEST_ID, spec.target.name) if columns and c not in columns]
        violations.extend(
            Violation(
                file.name,
                column,
                "required column",
                f"column is missing; the file has columns {columns}",
            )
            for column in absent
        )
        if absent:
            continue
        if raw is not None and len(raw) and ROW not in columns:
            raw = raw.assign(**{ROW: 0})
        inspection = inspect_frame(file.name, raw, parse_violations, contract)
        violations.extend(inspection.violations)
        if raw is None or inspection.frame is None:
            continue
        ids = raw[REQUEST_ID].astype("string").str.strip()
        blank = (ids.isna() | (ids == "")).to_numpy()
        if blank.any():
            rows, count = row_numbers(blank)
            violations.append(
                Violation(
                    file.name,
                    REQUEST_ID,
                    "request id must not be empty",
                    f"{plural(count, 'row')} without a request id",
                    rows,
                    count,
                )
            )
            continue
        frame = inspection.frame.assign(**{REQUEST_ID: ids.astype(str).to_numpy()})
        frame[ROW] = frame[ROW].astype("int64")
        frames.append(frame.assign(_file=file.name, _line=np.arange(1, len(frame) + 1)))
    target = spec.target.name
    labels = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame({REQUEST_ID: [], ROW: [], target: [], "_file": [], "_line": []})
    )
    again = labels[labels.duplicated([REQUEST_ID, ROW], keep="first")]
    violations.extend(
        Violation(
            name,
            f"{REQUEST_ID}, {ROW}",
            "one label per answered row",
            f"{plural(len(rows), 'row')} {'labels' if len(rows) == 1 else 'label'} a request "
            "row labelled before (e.g. request "
            f"'{rows[REQUEST_ID].iloc[0]}' row {rows[ROW].iloc[0]})",
            tuple(int(n) for n in rows["_line"].iloc[:MAX_ROWS_LISTED]),
            len(rows),
        )
        for name, rows in again.groupby("_file", sort=True)
    )
    if violations:
        raise DatasetRejected(violations)
    return labels[[REQUEST_ID, ROW, target]]


def join_labels(
    frame: pd.DataFrame, labels: pd.DataFrame, spec: DatasetSpec
) -> tuple[pd.DataFrame, int]:
    """The day's rows with the target column (missing where no label came), and how many
    labels name no answered row of the day."""
    target = spec.target.name
    if frame.empty:
        return frame.assign(**{target: pd.Series(dtype=labels[target].dtype)}), len(labels)
    keys = frame[[REQUEST_ID, ROW]].astype({REQUEST_ID: str, ROW: "int64"})
    joined = frame.join(
        keys.merge(labels, on=[REQUEST_ID, ROW], how="left", validate="one_to_one")[
            [target]
        ].set_index(frame.index)
    )
    matched = int(joined[target].notna().sum())
    return joined, len(labels) - matched
