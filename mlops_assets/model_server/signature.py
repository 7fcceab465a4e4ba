"""The model's MLflow signature, read as MLflow's schema objects give it: its columns and each
column's MLflow type name (``double``, ``long``, ``string``...; a tensor's numpy type name)."""

from __future__ import annotations

from typing import Any


def columns(schema: Any) -> list[Any]:
    """The column (or tensor) specs of an input or output schema; none without a schema."""
    return list(getattr(schema, "inputs", None) or [])


def type_name(spec: Any, default: str = "string") -> str:
    """The MLflow type name of a column spec (``default`` when it has none)."""
    return str(getattr(getattr(spec, "type", None), "name", default))
