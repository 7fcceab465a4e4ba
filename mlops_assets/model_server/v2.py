"""The Open Inference Protocol (KServe's V2): a request's input tensors read as MLflow's
``dataframe_split`` table, MLflow's answer written as output tensors, and the model's
metadata."""

from __future__ import annotations

import json
from typing import Any

from . import signature
from .limits import read_json
from .record import plain

# Open Inference Protocol tensor types, and the Python values each takes.
V2_DATATYPES = {
    "BOOL": (bool,),
    **{
        t: (int,)
        for t in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
    },
    **{t: (int, float) for t in ("FP16", "FP32", "FP64")},
    "BYTES": (str,),
}


class V2RequestError(ValueError):
    """A V2 inference request this server cannot read as a table (and its ``id``, if any)."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def v2_to_dataframe_split(body: bytes) -> tuple[dict[str, Any], str | None]:
    """A V2 inference request whose input tensors are a table's columns (each of shape [n] or
    [n, 1], ``BYTES`` for text), as MLflow's ``dataframe_split`` document; and the request's
    ``id``, if it gave one. Raises :class:`V2RequestError` saying what is wrong, or
    :class:`RequestRefused` for JSON nested too deep to read."""
    try:
        document = read_json(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise V2RequestError(f"the request body is not JSON: {exc}") from None
    given = document.get("id") if isinstance(document, dict) else None
    given = given if isinstance(given, str) else None
    try:
        split = _v2_columns(document)
    except V2RequestError as exc:
        raise V2RequestError(str(exc), given) from None
    return split, given


def _v2_columns(document: Any) -> dict[str, Any]:
    """MLflow's ``dataframe_split`` of a V2 request's input tensors."""
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise V2RequestError("the request has no 'inputs' list of tensors")
    columns: list[str] = []
    values: list[list[Any]] = []
    for number, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise V2RequestError(f"input {number} is not a tensor object")
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        label = f"input '{name}'" if isinstance(name, str) else f"input {number}"
        if not isinstance(name, str) or not name:
            raise V2RequestError(f"{label} has no name")
        if datatype not in V2_DATATYPES:
            raise V2RequestError(
                f"{label} has datatype {datatype!r}; expected one of {', '.join(V2_DATATYPES)}"
            )
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and d >= 0 for d in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            raise V2RequestError(f"{label} has shape {shape!r}; a column is [rows] or [rows, 1]")
        data = _flat(tensor.get("data"))
        if len(data) != shape[0]:
            raise V2RequestError(
                f"{label} has {len(data)} values for shape {shape} ({shape[0]} expected)"
            )
        allowed = V2_DATATYPES[datatype]
        wrong = [v for v in data if v is not None and not _is_a(v, allowed)]
        if wrong:
            raise V2RequestError(f"{label} is {datatype} but holds {wrong[0]!r}")
        columns.append(name)
        values.append(data)
    if len({len(column) for column in values}) > 1:
        raise V2RequestError(
            "the input tensors have different numbers of rows: "
            + ", ".join(f"{c}: {len(v)}" for c, v in zip(columns, values, strict=True))
        )
    table = [list(row) for row in zip(*values, strict=True)]
    return {"dataframe_split": {"columns": columns, "data": table}}


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise V2RequestError("a tensor's 'data' must be a list")
    if any(isinstance(v, list) for v in data):
        return [v for row in data for v in (row if isinstance(row, list) else [row])]
    return data


def _is_a(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed)


def tensor_datatype(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "FP64"
    return "BYTES"


def v2_response(answer: str, model_name: str, model_version: str, request_id: str) -> str:
    """MLflow's ``{"predictions": ...}`` answer as a V2 inference response: one output tensor
    per answer column (a classifier's class and probabilities), or ``prediction``."""
    predictions = json.loads(answer)["predictions"]
    if isinstance(predictions, dict):  # a frame answered column-wise
        columns = {str(k): list(v) for k, v in predictions.items()}
    elif predictions and all(isinstance(p, dict) for p in predictions):
        names = list(dict.fromkeys(k for p in predictions for k in p))
        columns = {str(k): [p.get(k) for p in predictions] for k in names}
    else:
        columns = {
            "prediction": [p[0] if isinstance(p, list) and len(p) == 1 else p for p in predictions]
        }
    outputs = [
        {"name": name, "datatype": tensor_datatype(data), "shape": [len(data)], "data": data}
        for name, data in columns.items()
    ]
    return json.dumps(
        {
            "model_name": model_name,
            "model_version": model_version,
            "id": request_id,
            "outputs": outputs,
        },
        default=plain,
    )


# The V2 datatype of each MLflow column type (a signature's), for the model metadata.
MLFLOW_TO_V2 = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}


def v2_metadata(model_name: str, model_version: str, input_schema: Any) -> dict[str, Any]:
    """The V2 model metadata: one input tensor per column of the model's signature."""
    inputs = []
    for column in signature.columns(input_schema):
        datatype = MLFLOW_TO_V2.get(signature.type_name(column), "BYTES")
        inputs.append({"name": column.name, "datatype": datatype, "shape": [-1]})
    return {
        "name": model_name,
        "versions": [model_version] if model_version else [],
        "platform": "mlflow",
        "inputs": inputs,
        "outputs": [],
    }


# --- batching -----------------------------------------------------------------------------
