"""The served model's traffic log read back: one day's JSON Lines files as one table.

The files are what :mod:`mlops_assets.ml.model_server` writes: per answered request one line per
input row (``kind: answer``: the row as the model got it and its prediction as served), one
line per refused request (``kind: error``), and ``kind: dropped`` lines counting requests the
server could not log.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tasks import answer_frame

TRAFFIC_COLUMNS = ("request_id", "row", "time", "model_version", "latency_ms")
_FIELDS = {
    "answer": ("request_id", "row", "time", "model_version", "inputs", "prediction"),
    "error": ("request_id", "time", "status"),
    "dropped": ("count",),
}


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
            absent = [f for f in _FIELDS.get(kind, ()) if f not in line]
            if absent:
                raise TrafficUnreadable(
                    f"{name}, line {number}: an {kind} record without {', '.join(absent)}"
                )
            if kind == "answer":
                answers.append(line)
            elif kind == "error":
                errors.append(line)
            elif kind == "dropped":
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
