"""What a request may be: its body's size, its JSON's depth, its rows (ragged, all null), and
how a refusal is worded (as MLflow words an error)."""

from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from .logs import MOST_NAMED, named, rows_named

# Deeper JSON is refused unread: the parser recurses once a level. A table's request is 4 or 5
# levels deep (dataframe_split: 4; V2 with [rows, 1] tensors: 5).
MAX_JSON_DEPTH = 32
JSON = "application/json"
IGNORED_COLUMNS_HEADER = "x-ignored-columns"


def too_large(limit: int) -> str:
    """What a request whose body is over ``limit`` bytes is answered (413), as MLflow words an
    error."""
    message = (
        f"the request body is larger than {limit:,} bytes, the most this server reads "
        "(MLOPS_SERVING_MAX_BODY_BYTES): send its rows in several requests"
    )
    return json.dumps({"error_code": "RESOURCE_LIMIT_EXCEEDED", "message": message})


def bad_request(message: str) -> str:
    """A 400's body, as MLflow words an error."""
    return json.dumps({"error_code": "BAD_REQUEST", "message": message})


class RequestRefused(ValueError):
    """A request refused before the model sees it (answered 400), and why."""


# A JSON string, escapes and all (the loop unrolled: a tight loop for the regex engine).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_beyond(body: bytes, limit: int) -> int:
    """How deep the JSON text ``body`` nests arrays and objects, when that is deeper than
    ``limit``; else 0. Read without parsing: a body with no more opening brackets than
    ``limit`` cannot be deeper (a single row's request, in well under a microsecond); any other
    is measured by its brackets outside strings (in C and numpy: ~2 ms for 1 MB of table)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return 0
    import numpy as np

    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    # "[" and "{" have bit 1 set, "]" and "}" do not: one level in, one out.
    steps = (np.frombuffer(brackets, np.uint8) & 2).astype(np.int8) - 1
    depth = int(np.cumsum(steps, dtype=np.int32).max()) if len(steps) else 0
    return depth if depth > limit else 0


def read_json(body: bytes) -> Any:
    """``body`` parsed as JSON. Raises :class:`RequestRefused` for JSON nested deeper than
    :data:`MAX_JSON_DEPTH` (unparsed) or that the parser cannot hold, and JSONDecodeError or
    UnicodeDecodeError for a body that is not JSON."""
    depth = nesting_beyond(body, MAX_JSON_DEPTH)
    if depth:
        raise RequestRefused(
            f"the request's JSON is nested {depth} levels deep; this server reads at most "
            f"{MAX_JSON_DEPTH} (a table's request is 4 or 5)"
        )
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except (ValueError, RecursionError) as exc:  # such as an integer of over 4,300 digits
        raise RequestRefused(f"the request's JSON cannot be read: {exc}") from None


def refuse_ragged_rows(document: dict[str, Any]) -> None:
    """Raise :class:`RequestRefused` when a ``dataframe_split`` request has a row with more or
    fewer values than it has columns: pandas fills a short row with nulls, and it was scored."""
    split = document.get("dataframe_split")
    columns = split.get("columns") if isinstance(split, dict) else None
    rows = split.get("data") if isinstance(split, dict) else None
    if not isinstance(columns, list) or not isinstance(rows, list):
        return
    try:
        lengths = list(map(len, rows))
    except TypeError:  # a row that is not a list: MLflow's own error says so
        return
    if lengths.count(len(columns)) == len(lengths):
        return
    wrong = [row for row, length in enumerate(lengths) if length != len(columns)]
    verb = "has" if len(wrong) == 1 else "have"
    raise RequestRefused(
        f"{rows_named(wrong)} {verb} {named([lengths[row] for row in wrong])} values for "
        f"{len(columns)} columns: a row needs one value for each column (null for a missing one)"
    )


def rows_without_values(frame: Any) -> list[int]:
    """The positions of the rows of the table ``frame`` whose every value is missing (on its
    values as one array: 4 us for a row of numbers, where ``frame.isna()`` takes 12)."""
    import numpy as np
    import pandas as pd

    return np.flatnonzero(pd.isna(frame.to_numpy()).all(axis=1)).tolist()


def json_document(body: bytes, content_type: str) -> Any:
    """The JSON object a request of JSON ``content_type`` holds; any other body as it is, for
    MLflow's function to read or to say what is wrong with it."""
    if content_type.partition(";")[0].strip() != JSON:
        return body
    try:
        document = read_json(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body
    if not isinstance(document, dict):
        return body
    refuse_ragged_rows(document)
    return document


def ignored_columns_header(columns: tuple[str, ...]) -> bytes:
    """Columns as a header's value: comma-separated, each percent-encoded where it must be (a
    comma, a space, a character not ASCII); the first :data:`MOST_NAMED` and how many more."""
    listed = ",".join(urllib.parse.quote(column, safe="") for column in columns[:MOST_NAMED])
    more = len(columns) - MOST_NAMED
    return (listed if more <= 0 else f"{listed} (+{more} more)").encode()
