"""What ``/docs`` and ``/openapi.json`` say a request and an answer are: the model's own input
columns and types (its MLflow signature), and the shape of its answer, for the protocol served.

A column's JSON type comes from its MLflow type (``double`` is a number, ``long`` an integer,
``string`` a string...); a column the signature does not require may be null. The request's
example is the model's own input example (saved with it), so "Try it out" on the page sends a
request the model answers.
"""

from __future__ import annotations

import math
from typing import Any

from . import signature
from .v2 import MLFLOW_TO_V2, V2_DATATYPES, tensor_datatype

# The JSON Schema of each MLflow column type.
_JSON_TYPES: dict[str, dict[str, Any]] = {
    "boolean": {"type": "boolean"},
    "integer": {"type": "integer"},
    "long": {"type": "integer"},
    "float": {"type": "number"},
    "double": {"type": "number"},
    "string": {"type": "string"},
    "binary": {"type": "string", "contentEncoding": "base64"},
    "datetime": {"type": "string", "format": "date-time"},
}
EXAMPLE_ROWS = 2  # of the input example, in the page's example request


def _column_schema(spec: Any) -> dict[str, Any]:
    schema = dict(_JSON_TYPES.get(signature.type_name(spec), {}))
    if not getattr(spec, "required", True) and "type" in schema:
        schema["type"] = [schema["type"], "null"]
    return schema


def input_columns(input_schema: Any) -> list[tuple[str, dict[str, Any], bool]]:
    """(name, JSON Schema, required) of each named input column of the signature."""
    if input_schema is None or not input_schema.has_input_names():
        return []
    return [
        (str(spec.name), _column_schema(spec), bool(getattr(spec, "required", True)))
        for spec in input_schema.inputs
    ]


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)
    value = item() if callable(item) else value
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def example_rows(example: Any) -> tuple[list[str], list[list[Any]]] | None:
    """The first rows of the model's input example (a table), as columns and plain values."""
    columns = getattr(example, "columns", None)
    if columns is None or len(example) == 0:
        return None
    head = example.head(EXAMPLE_ROWS)
    rows = [[_plain(v) for v in row] for row in head.itertuples(index=False, name=None)]
    return [str(c) for c in columns], rows


def answer_schema(output_schema: Any) -> dict[str, Any]:
    """One row's answer: an object of the output columns (a classifier's class and its
    probabilities), or a single value."""
    columns = input_columns(output_schema)
    if columns:
        return {
            "type": "object",
            "properties": {name: schema for name, schema, _ in columns},
        }
    specs = signature.columns(output_schema)
    kind = signature.type_name(specs[0], "") if specs else ""
    if "float" in kind or "double" in kind:
        return {"type": "number"}
    if "int" in kind:
        return {"type": "integer"}
    return _JSON_TYPES.get(kind, {})


def mlflow_request(input_schema: Any, example: Any) -> dict[str, Any]:
    """The OpenAPI request body of ``POST /invocations``: MLflow's ``dataframe_split`` or
    ``dataframe_records`` of the signature's columns."""
    columns = input_columns(input_schema)
    names = [name for name, _, _ in columns]
    record = {
        "type": "object",
        "properties": {name: schema for name, schema, _ in columns},
        "required": [name for name, _, required in columns if required],
    }
    split = {
        "type": "object",
        "title": "dataframe_split",
        "required": ["dataframe_split"],
        "properties": {
            "dataframe_split": {
                "type": "object",
                "required": ["columns", "data"],
                "properties": {
                    "columns": {"type": "array", "items": {"type": "string", "enum": names}},
                    "data": {
                        "type": "array",
                        "description": "rows: one value per column, in the order of `columns`",
                        "items": {"type": "array"},
                    },
                },
            }
        },
    }
    records = {
        "type": "object",
        "title": "dataframe_records",
        "required": ["dataframe_records"],
        "properties": {"dataframe_records": {"type": "array", "items": record}},
    }
    media: dict[str, Any] = {"schema": {"oneOf": [split, records]} if columns else {}}
    rows = example_rows(example)
    if rows is not None:
        media["example"] = {"dataframe_split": {"columns": rows[0], "data": rows[1]}}
    return {"required": True, "content": {"application/json": media}}


def mlflow_answer(output_schema: Any) -> dict[str, Any]:
    """The OpenAPI responses of ``POST /invocations``."""
    answer = {
        "type": "object",
        "required": ["predictions"],
        "properties": {
            "predictions": {
                "type": "array",
                "description": "one answer per row, in the order sent",
                "items": answer_schema(output_schema),
            }
        },
    }
    return {
        "200": _json("the model's answers", answer),
        "400": _json("the request cannot be scored; `message` says why", _MLFLOW_ERROR),
        "413": _json("the body is over MLOPS_SERVING_MAX_BODY_BYTES", _MLFLOW_ERROR),
    }


_MLFLOW_ERROR = {
    "type": "object",
    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
}
_V2_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _tensor(names: list[str] | None, description: str) -> dict[str, Any]:
    name: dict[str, Any] = {"type": "string"}
    if names:
        name["enum"] = names
    return {
        "type": "object",
        "required": ["name", "datatype", "shape", "data"],
        "description": description,
        "properties": {
            "name": name,
            "datatype": {"type": "string", "enum": list(V2_DATATYPES)},
            "shape": {"type": "array", "items": {"type": "integer"}, "minItems": 1},
            "data": {"type": "array"},
        },
    }


def v2_request(input_schema: Any, example: Any) -> dict[str, Any]:
    """The OpenAPI request body of V2's ``infer``: one input tensor per column, of shape
    [rows] (or [rows, 1])."""
    columns = input_columns(input_schema)
    names = [name for name, _, _ in columns]
    types = ", ".join(
        f"`{spec.name}` {MLFLOW_TO_V2.get(signature.type_name(spec), 'BYTES')}"
        for spec in (signature.columns(input_schema) if names else [])
    )
    schema = {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string", "description": "echoed in the answer"},
            "inputs": {
                "type": "array",
                "items": _tensor(names, f"one column of the table: {types}" if types else ""),
            },
        },
    }
    media: dict[str, Any] = {"schema": schema}
    rows = example_rows(example)
    if rows is not None:
        header, values = rows
        media["example"] = {
            "inputs": [
                {
                    "name": name,
                    "datatype": tensor_datatype([row[i] for row in values]),
                    "shape": [len(values)],
                    "data": [row[i] for row in values],
                }
                for i, name in enumerate(header)
            ]
        }
    return {"required": True, "content": {"application/json": media}}


def v2_answer(output_schema: Any) -> dict[str, Any]:
    """The OpenAPI responses of V2's ``infer``: one output tensor per answer column."""
    columns = input_columns(output_schema)
    names = [name for name, _, _ in columns] or ["prediction"]
    answer = {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": _tensor(names, "one answer column")},
        },
    }
    return {
        "200": _json("the model's answers, one output tensor per answer column", answer),
        "400": _json("the request cannot be scored; `error` says why", _V2_ERROR),
        "404": _json("no such model or version is served here", _V2_ERROR),
        "413": _json("the body is over MLOPS_SERVING_MAX_BODY_BYTES", _V2_ERROR),
    }
