"""Draft a dataset spec from a data file, for a person to review (``mlops-spec infer``).

The draft accepts the file it was drafted from: numeric bounds are the observed range widened
by a margin (never below zero for a column that has no negative value), integer columns are
marked, categorical columns list the values seen, and a column's own null limit is set where
the file has more missing values than the dataset-wide limit. A text column with more distinct
values than ``max_categories`` (an identifier, free text) is left out and flagged, never turned
into a long list of allowed values.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.ml.spec import (
    TASKS,
    CategoricalColumn,
    DatasetSpec,
    NumericColumn,
    normalise_label,
)
from mlops_assets.ml.tabular import TableFile, read_frame

DEFAULT_MARGIN = 0.1
DEFAULT_MAX_CATEGORIES = 30
DATASET_NULL_SHARE = 0.05
FEW_VALUES = 5  # an integer column with this few values may be codes, not amounts


@dataclass(frozen=True)
class Draft:
    spec: DatasetSpec
    flagged: dict[str, str]  # column -> why it was left out, for the person reviewing
    notes: dict[str, str]  # column -> what to look at, though it is in the draft


def read_table(path: Path) -> pd.DataFrame:
    """The file read as the data contract reads it (read_frame), so the draft describes the
    values the checks will see."""
    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: write the data as .csv or .parquet to draft a spec from it")
    frame, violations = read_frame(TableFile(path.name, path.read_bytes()))
    if frame is None:
        raise ValueError("; ".join(v.message for v in violations))
    return frame


def infer_spec(
    frame: pd.DataFrame,
    target: str,
    name: str,
    margin: float = DEFAULT_MARGIN,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    task: str = "",
) -> Draft:
    """A draft spec for a model of ``target`` from the rows in ``frame``: ``task`` regression
    (a numeric target) or classification (the target's values are the classes). Without a
    task: classification when the target is text, else regression."""
    if target not in frame.columns:
        raise ValueError(f"target column '{target}' is not in the data: {list(frame.columns)}")
    if task and task not in TASKS:
        raise ValueError(f"task '{task}' is not one of {', '.join(TASKS)}")
    numeric_target = _as_numbers(frame[target])
    task = task or ("regression" if numeric_target is not None else "classification")
    if task == "regression" and numeric_target is None:
        raise ValueError(
            f"target column '{target}' has values that are not numbers; the spec's task is "
            "regression, which needs a numeric target (use --task classification for classes)"
        )
    numeric: list[NumericColumn] = []
    categorical: list[CategoricalColumn] = []
    flagged: dict[str, str] = {}
    notes: dict[str, str] = {}
    for column in frame.columns:
        if column == target:
            continue
        values = frame[column]
        share = _null_limit(values)
        numbers = _as_numbers(values)
        if values.notna().sum() == 0:
            flagged[column] = "every value is missing"
        elif numbers is None:
            labels = sorted({normalise_label(v) for v in values.dropna()})
            if len(labels) > max_categories:
                flagged[column] = (
                    f"{len(labels)} distinct values (more than {max_categories}): an identifier "
                    "or free text? Declare it yourself if the model should see it"
                )
            else:
                categorical.append(CategoricalColumn(column, tuple(labels), share))
        else:
            numeric.append(_numeric(column, numbers, margin, share))
            distinct = numbers.nunique()
            if numeric[-1].integer and distinct <= FEW_VALUES:
                notes[column] = (
                    f"only {distinct} distinct values: a category coded as numbers? It is "
                    "numeric in the draft; move it to categorical if the codes are not amounts"
                )
    target_column: NumericColumn | CategoricalColumn
    if task == "classification":
        target_column = _classes(target, frame[target], max_categories)
    else:
        assert numeric_target is not None  # checked above for regression
        target_column = _numeric(target, numeric_target, margin, _null_limit(numeric_target))
    spec = DatasetSpec(
        name=name,
        target=target_column,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        max_null_share=DATASET_NULL_SHARE,
    )
    return Draft(spec=spec, flagged=flagged, notes=notes)


def _classes(name: str, values: pd.Series, max_categories: int) -> CategoricalColumn:
    """The target's classes, as the data contract normalises them (whole numbers as 0, 1)."""
    present = values.dropna()
    numbers = _as_numbers(present)
    if numbers is not None and bool((numbers == numbers.round()).all()):
        present = numbers.astype("int64")
    classes = sorted({normalise_label(v) for v in present})
    if len(classes) < 2:
        raise ValueError(
            f"target column '{name}' has {len(classes)} class(es) {classes}: classification "
            "needs at least two"
        )
    if len(classes) > max_categories:
        raise ValueError(
            f"target column '{name}' has {len(classes)} distinct values (more than "
            f"{max_categories}): a regression target? Use --task regression, or raise "
            "--max-categories"
        )
    return CategoricalColumn(name, tuple(classes))


def _as_numbers(values: pd.Series) -> pd.Series | None:
    """The column as numbers when every present value is one (CSV values arrive as text)."""
    if pd.api.types.is_bool_dtype(values):
        return None
    numbers = pd.to_numeric(values, errors="coerce")
    return numbers if numbers.notna().sum() == values.notna().sum() else None


def _numeric(name: str, values: pd.Series, margin: float, share: float | None) -> NumericColumn:
    present = values.dropna().astype(float)
    low, high = float(present.min()), float(present.max())
    span = (high - low) or abs(high) or 1.0
    integer = bool((present == present.round()).all())
    lower = low - margin * span
    if low >= 0 > lower:
        lower = 0.0  # counts, prices, areas: a column without negatives stays non-negative
    upper = high + margin * span
    if integer:
        lower, upper = float(math.floor(lower)), float(math.ceil(upper))
    return NumericColumn(name, _round(lower, down=True), _round(upper, down=False), integer, share)


def _round(value: float, down: bool) -> float:
    """Three significant digits, rounded outwards so the bound still holds the data."""
    if value == 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(abs(value))) - 2)
    rounded = (math.floor if down else math.ceil)(value / step) * step
    return float(round(rounded, 10))


def _null_limit(values: pd.Series) -> float | None:
    """The column's own null limit when the file has more missing than the dataset allows."""
    share = float(values.isna().mean())
    if share <= DATASET_NULL_SHARE:
        return None
    return min(1.0, math.ceil(share * 1.2 * 100) / 100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlops-spec",
        description="Dataset specs: `infer` drafts one from a data file, for you to review.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    infer = commands.add_parser("infer", help="draft a spec from a .csv or .parquet file")
    infer.add_argument("data", type=Path, help="the labelled data, .csv or .parquet")
    infer.add_argument("--target", required=True, help="the column the model predicts")
    infer.add_argument("--name", help="dataset name (default: the file's name)")
    infer.add_argument(
        "--task", choices=TASKS,
        help="regression or classification (default: classification when the target is text)",
    )  # fmt: skip
    infer.add_argument(
        "--margin", type=float, default=DEFAULT_MARGIN,
        help="widen numeric ranges by this share of their span",
    )  # fmt: skip
    infer.add_argument(
        "--max-categories", type=int, default=DEFAULT_MAX_CATEGORIES,
        help="text columns with more distinct values are flagged, not listed",
    )  # fmt: skip
    infer.add_argument("-o", "--output", type=Path, help="write the spec here (default: stdout)")
    args = parser.parse_args(argv)
    try:
        frame = read_table(args.data)
        draft = infer_spec(
            frame,
            args.target,
            args.name or args.data.stem,
            args.margin,
            args.max_categories,
            args.task or "",
        )
    except (OSError, ValueError) as exc:
        print(f"mlops-spec: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(_readable(draft.spec.to_dict()), indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
        print(f"wrote the draft spec to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    print(
        f"drafted a {draft.spec.task} spec from {len(frame):,} rows: "
        f"{len(draft.spec.numeric)} numeric, "
        f"{len(draft.spec.categorical)} categorical columns; review the bounds and allowed "
        "values before you use it (MLOPS_DATASET_SPEC)",
        file=sys.stderr,
    )
    for column, reason in draft.flagged.items():
        print(f"left out '{column}': {reason}", file=sys.stderr)
    for column, note in draft.notes.items():
        print(f"look at '{column}': {note}", file=sys.stderr)
    return 0


def _readable(spec: dict[str, Any]) -> dict[str, Any]:
    """Without the keys that only repeat a default, so the draft reads like a hand-written one."""
    numeric_target = [spec["target"]] if "allowed" not in spec["target"] else []
    for column in [*numeric_target, *spec["numeric"]]:
        for key, default in (("min", None), ("max", None), ("integer", False)):
            if column.get(key) == default:
                del column[key]
    return spec


if __name__ == "__main__":
    raise SystemExit(main())
