"""The traffic log's record: what one line of its JSON Lines files is, and where the files go.

The server writes it (:mod:`.traffic_log`); ``served_traffic`` reads it back
(``mlops_assets.ml.traffic``) with the kinds and fields declared here, once for both.

- ``answer``: one line per input row of an answered request: ``request_id``, ``row`` (its
  position in the request), ``time``, ``model_name``, ``model_version``, ``status``,
  ``latency_ms``, ``inputs`` (the row as the model got it), ``prediction`` (as served), and
  ``ignored_columns`` when the request had columns the model does not take;
- ``error``: one line per refused request (4xx, 5xx): the same fields but ``row`` (null),
  ``inputs`` and ``prediction``; ``error`` (what it was told) and ``body`` (its first 64 KiB);
- ``dropped``: requests answered but not logged (the journal was full): ``count``, ``time``,
  ``worker``, ``model_name``, ``model_version``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TRAFFIC_PREFIX = "traffic"
ANSWER, ERROR, DROPPED = "answer", "error", "dropped"  # a line's ``kind``
# The fields a reader may count on in a line of each kind.
REQUIRED_FIELDS = {
    ANSWER: ("request_id", "row", "time", "model_version", "inputs", "prediction"),
    ERROR: ("request_id", "time", "status"),
    DROPPED: ("count",),
}
ERROR_BODY_LIMIT = 64 * 1024  # of a refused request's body, kept in its log line
# A line of a traceback that names the exception raised (and its message).
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): .*$", re.MULTILINE)


@dataclass(frozen=True)
class Exchange:
    """One request and what it was answered: the rows the model was given and the response
    body of an answered request, or the error and the request's body of a refused one."""

    request_id: str
    received: float  # seconds since the epoch
    seconds: float
    status: int
    inputs: Any = None
    answer: str = ""
    error: str = ""
    body: bytes = b""
    ignored_columns: tuple[str, ...] = ()  # columns of the request the model does not take


def traffic_day_prefix(model_name: str, day: str) -> str:
    """Where one day's files of the traffic log go, below the store's root."""
    return f"{TRAFFIC_PREFIX}/{model_name}/date={day}/"


def traffic_key(model_name: str, day: str, stamp: str, worker: str, sequence: int) -> str:
    """Where one file of the traffic log goes, below the store's root."""
    return f"{traffic_day_prefix(model_name, day)}{stamp}-{worker}-{sequence:06d}.jsonl"


def exchange_lines(exchange: Exchange, model_name: str, model_version: str) -> list[dict[str, Any]]:
    """The log lines of one exchange: one per input row of an answered request (its
    ``inputs`` and its ``prediction`` as served), one for a refused request."""
    base = {
        "request_id": exchange.request_id,
        "time": iso(exchange.received),
        "model_name": model_name,
        "model_version": model_version,
        "status": exchange.status,
        "latency_ms": round(exchange.seconds * 1000, 3),
    }
    if exchange.status >= 400:
        return [
            {
                **base,
                "kind": ERROR,
                "row": None,
                "error": error_message(exchange.error),
                "body": exchange.body[:ERROR_BODY_LIMIT].decode("utf-8", errors="replace"),
            }
        ]
    if exchange.ignored_columns:
        base["ignored_columns"] = list(exchange.ignored_columns)
    rows = _rows(exchange.inputs)
    try:
        predictions = json.loads(exchange.answer).get("predictions")
    except (json.JSONDecodeError, AttributeError):
        predictions = None
    if not isinstance(predictions, list) or len(predictions) != len(rows):
        predictions = [None] * len(rows)  # an answer not split by row: the rows alone
    return [
        {**base, "kind": ANSWER, "row": i, "inputs": row, "prediction": prediction}
        for i, (row, prediction) in enumerate(zip(rows, predictions, strict=True))
    ]


def _rows(inputs: Any) -> list[dict[str, Any]]:
    """Input rows as records of plain values (missing values as None): a few microseconds a
    row, where pandas' own JSON writer takes tens."""
    import pandas as pd

    frame = inputs if isinstance(inputs, pd.DataFrame) else pd.DataFrame(inputs)
    columns = [str(c) for c in frame.columns]
    na, nat = pd.NA, pd.NaT

    def plain(value: Any) -> Any:
        if value is None or value is na or value is nat:
            return None
        return None if isinstance(value, float) and value != value else value

    return [
        dict(zip(columns, [plain(value) for value in values], strict=True))
        for values in frame.to_numpy(dtype=object).tolist()
    ]


def error_message(response: str) -> str:
    """What a refused request was told: MLflow's message, and the exception that ends its
    stack trace (where the message alone says only that the model failed)."""
    try:
        document = json.loads(response)
    except json.JSONDecodeError:
        return response[:ERROR_BODY_LIMIT]
    if not isinstance(document, dict) or "message" not in document:
        return response[:ERROR_BODY_LIMIT]
    message = str(document["message"])
    raised = EXCEPTION_LINE.findall(str(document.get("stack_trace") or ""))
    if raised:
        message += f" ({raised[-1][:500]})"
    return message[:ERROR_BODY_LIMIT]


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def dumps(line: dict[str, Any]) -> str:
    return json.dumps(line, separators=(",", ":"), default=plain)


def plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):  # timestamps and dates
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    return str(value)


def dropped_line(
    day: str, stamp: str, count: int, worker: str, model_name: str, model_version: str
) -> dict[str, Any]:
    """The line that counts ``count`` requests a worker could not log, in the segment of its
    journal begun on ``day`` at ``stamp`` (HHMMSS)."""
    clock = f"{stamp[:2]}:{stamp[2:4]}:{stamp[4:]}"
    return {
        "kind": DROPPED,
        "time": f"{day}T{clock}.000+00:00",
        "count": count,
        "worker": worker,
        "model_name": model_name,
        "model_version": model_version,
    }
