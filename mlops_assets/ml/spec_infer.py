"""Draft a dataset spec from a data file, for a person to review (``mlops-spec infer``).

The draft accepts the file it was drafted from, and is meant to accept the next period's and
the next source's data of the same kind:

- numeric bounds are the observed range widened by a margin (never below zero for a column
  that has no negative value), integer columns are marked, categorical columns list the values
  seen;
- columns that count time are not bounded by the period the file covers (see
  :func:`time_rule`): years and counters are left open upward, cycles (a month, an hour, a day
  of the week) are bounded by their natural range, and dates written as text are left out;
- a column that identifies records is proposed as the spec's ``key`` (see :func:`key_rule`),
  not made a feature;
- a column with blanks gets its own null limit with headroom for sampling noise (see
  :func:`null_limit`).

A text column with more distinct values than ``max_categories`` (free text) is left out and
flagged, never turned into a long list of allowed values.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import binom

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
# A column's null limit is the share of blanks a sample at the observed rate stays under with
# this probability (see null_limit).
NULL_QUANTILE = 0.999
# A counter is recognised from this many values on (two rising values say nothing).
MIN_COUNTER_VALUES = 3

# Words of a column's name (see name_words) that say it identifies something.
IDENTIFIER_WORDS = frozenset(
    {"id", "ids", "key", "uuid", "guid", "code", "number", "no", "num", "nr", "identifier"}
)
# Years: whole numbers within YEARS whatever the name, or within NAMED_YEARS when the name says
# year ("year" anywhere in it, or the word yr, yrs or yyyy).
YEARS = (1900, 2100)
NAMED_YEARS = (1000, 2999)
YEAR_WORDS = frozenset({"yr", "yrs", "yyyy"})
# Written like an ISO date: 2024-01-31, 2024-01, optionally a time and a zone.
ISO_DATE = re.compile(
    r"\d{4}-\d{2}(-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?)?"
)
# Pandas writes its index as a first column without a name, read back as 'Unnamed: 0'.
ROW_NUMBER_NAME = re.compile(r"unnamed: \d+|index")


@dataclass(frozen=True)
class Cycle:
    """A quantity that repeats (a month, an hour): bounded by its natural range, never by the
    part of the cycle a file happens to cover."""

    what: str
    # Names that say it: a phrase in the name with separators removed ('day_of_week' ->
    # 'dayofweek'), or one of its words (see name_words).
    phrases: tuple[str, ...]
    words: frozenset[str]
    # Its natural ranges; where the values fit several (weekdays 1..6 fit 0..6 and 1..7), the
    # draft takes their union and says so.
    ranges: tuple[tuple[int, int], ...]


# In order: compound names first, so 'day_of_week' is a weekday, not a day of the month.
CYCLES = (
    Cycle("a day of the week", ("dayofweek", "weekday"), frozenset({"dow", "wday"}),
          ((0, 6), (1, 7))),
    Cycle("a day of the month", ("dayofmonth",), frozenset({"day", "dom", "mday"}), ((1, 31),)),
    Cycle("a day of the year", ("dayofyear",), frozenset({"doy", "yday"}), ((1, 366),)),
    # 0..53: ISO weeks start at 1, strftime's %U and %W at 0.
    Cycle("a week of the year", ("weekofyear", "isoweek"), frozenset({"week", "wk"}),
          ((0, 53),)),
    Cycle("a month", ("monthofyear",), frozenset({"month", "mnth", "mth", "mo"}), ((1, 12),)),
    Cycle("a quarter", (), frozenset({"quarter", "qtr"}), ((1, 4),)),
    Cycle("an hour", ("hourofday",), frozenset({"hour", "hr"}), ((0, 23),)),
    Cycle("a minute", (), frozenset({"minute"}), ((0, 59),)),
)  # fmt: skip


@dataclass(frozen=True)
class TimeRule:
    """How a numeric column that counts time is bounded: ``bounds`` (a cycle's natural range)
    or open upward (``bounds`` None), and why, for the person reviewing."""

    why: str
    bounds: tuple[int, int] | None = None


@dataclass(frozen=True)
class Draft:
    spec: DatasetSpec
    flagged: dict[str, str]  # column -> why it was left out, for the person reviewing
    notes: dict[str, str]  # column -> what to look at, though it is in the draft
    key_note: str = ""  # the key proposed and why, or why none was


def read_table(path: Path) -> pd.DataFrame:
    """The file read as the data contract reads it (read_frame), so the draft describes the
    values the checks will see."""
    if path.suffix not in (".csv", ".parquet"):
        raise ValueError(f"{path}: write the data as .csv or .parquet to draft a spec from it")
    frame, violations = read_frame(TableFile(path.name, path.read_bytes()))
    if frame is None:
        raise ValueError("; ".join(v.message for v in violations))
    return frame


def default_name(data: Path, target: str) -> str:
    """A dataset name told apart by the file and the target: ``<stem>_<target>`` in lower case,
    every run of characters outside [a-z0-9] one underscore ('train.csv', 'Survived' ->
    'train_survived')."""
    name = re.sub(r"[^a-z0-9]+", "_", f"{data.stem}_{target}".lower()).strip("_")
    return name or "dataset"


def infer_spec(
    frame: pd.DataFrame,
    target: str,
    name: str,
    margin: float = DEFAULT_MARGIN,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    task: str = "",
    expected_rows: int | None = None,
) -> Draft:
    """A draft spec named ``name`` for a model of ``target`` from the rows in ``frame``.

    Parameters
    ----------
    task
        regression (a numeric target) or classification (the target's values are the
        classes); empty: classification when the target is text, else regression.
    expected_rows
        Rows of the smallest labelled source the spec will judge, for the null limits' headroom
        (see :func:`null_limit`); None: as many as ``frame`` has.
    """
    if target not in frame.columns:
        raise ValueError(f"target column '{target}' is not in the data: {list(frame.columns)}")
    if task and task not in TASKS:
        raise ValueError(f"task '{task}' is not one of {', '.join(TASKS)}")
    if expected_rows is not None and expected_rows < 1:
        raise ValueError(f"expected rows must be at least 1, not {expected_rows}")
    numeric_target = _as_numbers(frame[target])
    task = task or ("regression" if numeric_target is not None else "classification")
    if task == "regression" and numeric_target is None:
        raise ValueError(
            f"target column '{target}' has values that are not numbers; the spec's task is "
            "regression, which needs a numeric target (use --task classification for classes)"
        )
    rows = expected_rows or len(frame)
    numeric: list[NumericColumn] = []
    categorical: list[CategoricalColumn] = []
    flagged: dict[str, str] = {}
    notes: dict[str, str] = {}
    features = [c for c in frame.columns if c != target]
    key, key_note, other_identifiers = _key(frame, features, max_categories)
    for column in features:
        if column == key:
            continue
        values = frame[column]
        share = null_limit(values, rows)
        numbers = _as_numbers(values)
        date_note = _date(values) if numbers is None else ""
        if values.notna().sum() == 0:
            flagged[column] = "every value is missing"
        elif column in other_identifiers:
            flagged[column] = other_identifiers[column]
        elif date_note:
            flagged[column] = date_note
        elif _row_number(column, numbers):
            flagged[column] = "a row number saved with the file (an index?), not a property"
        elif numbers is None:
            labels = sorted({normalise_label(v) for v in values.dropna()})
            if len(labels) > max_categories:
                flagged[column] = (
                    f"{len(labels)} distinct values (more than {max_categories}): free text? "
                    "Declare it yourself if the model should see it"
                )
            else:
                categorical.append(CategoricalColumn(column, tuple(labels), share))
        else:
            drafted = _numeric(column, numbers, margin, share)
            rule = time_rule(column, numbers)
            if rule is not None:
                drafted = _bounded_in_time(drafted, rule)
                notes[column] = rule.why
            elif drafted.integer and _reads_as_identifier(column):
                notes[column] = (
                    "named like an identifier, but its values repeat: numeric in the draft; if "
                    "it names an entity (a store, a customer) rather than an amount, leave it "
                    "out or make it categorical"
                )
            elif drafted.integer and numbers.nunique() <= FEW_VALUES:
                notes[column] = (
                    f"only {numbers.nunique()} distinct values: a category coded as numbers? It "
                    "is numeric in the draft; move it to categorical if the codes are not amounts"
                )
            numeric.append(drafted)
    target_column: NumericColumn | CategoricalColumn
    target_share = null_limit(frame[target], rows)
    if task == "classification":
        target_column = _classes(target, frame[target], max_categories, target_share)
    else:
        assert numeric_target is not None  # checked above for regression
        target_column = _numeric(target, numeric_target, margin, target_share)
    spec = DatasetSpec(
        name=name,
        target=target_column,
        numeric=tuple(numeric),
        categorical=tuple(categorical),
        max_null_share=DATASET_NULL_SHARE,
        key=(key,) if key else (),
    )
    return Draft(spec=spec, flagged=flagged, notes=notes, key_note=key_note)


def name_words(name: str) -> list[str]:
    """The words of a column name, lower case: 'PassengerId' -> passenger, id; 'customer_ID'
    -> customer, id; 'GarageYrBlt' -> garage, yr, blt."""
    return [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)]


def _reads_as_identifier(name: str) -> bool:
    return bool(IDENTIFIER_WORDS.intersection(name_words(name)))


def key_rule(values: pd.Series, name: str, max_categories: int) -> str:
    """Why ``values`` (column ``name``) identifies the rows, or '' when it does not.

    A column is a key when every value is present and no two are equal (as numbers, or as text
    trimmed), and either

    - its name reads as an identifier (one of its words is id, key, uuid, guid, code, number,
      no, num or nr: 'PassengerId', 'customer_id', 'ticket_no') and its values are whole
      numbers or text; or
    - its values are text, none a number, none a date, none with a space inside (a code, not
      words), and there are more of them than ``max_categories`` (too many to be categories).

    A unique continuous measurement (a price to the cent) is never a key: it has fractions, or
    it has no identifier's name.
    """
    if len(values) == 0 or values.isna().any():
        return ""
    numbers = _as_numbers(values)
    if numbers is not None:
        whole = bool((numbers == numbers.round()).all())
        if whole and numbers.is_unique and _reads_as_identifier(name):
            return "every value present and distinct, whole numbers, a name that reads as an id"
        return ""
    text = values.astype(str).str.strip()
    if not text.is_unique or _date(values):  # a time, not an identity: left out (see _date)
        return ""
    if _reads_as_identifier(name):
        return "every value present and distinct, a name that reads as an id"
    spaced = bool(text.str.contains(r"\s", regex=True).any())
    numeric = bool(pd.to_numeric(text, errors="coerce").notna().any())
    if len(text) > max_categories and not spaced and not numeric:
        return (
            f"every value present and distinct, text written as codes (no spaces), more than "
            f"{max_categories} of them"
        )
    return ""


def _key(
    frame: pd.DataFrame, columns: list[str], max_categories: int
) -> tuple[str, str, dict[str, str]]:
    """The key proposed (one column, or ''), the line that says so, and the other columns that
    identify rows as well (left out: a record's identity is not a property to learn from)."""
    reasons = {c: key_rule(frame[c], c, max_categories) for c in columns}
    candidates = [c for c in columns if reasons[c]]
    if not candidates:
        return (
            "",
            "no key proposed: no column has a distinct value in every row and an identifier's "
            "name (id, key, code, number, no) or text codes. Equal rows will be kept as "
            'separate observations; declare "key" in the spec if rows are records',
            {},
        )
    # An identifier's name says more than distinct text does; then the leftmost.
    key = sorted(candidates, key=lambda c: not _reads_as_identifier(c))[0]
    others = {
        c: f"identifies rows as well ({reasons[c]}); the key proposed is '{key}'"
        for c in candidates
        if c != key
    }
    note = (
        f"key proposed: '{key}' ({reasons[key]}). It identifies records and is not a feature: "
        "rows repeating a key are one record written again (the last is kept). Remove "
        '"key" from the spec if rows are observations'
    )
    return key, note, others


def _row_number(name: str, numbers: pd.Series | None) -> bool:
    """A saved row index ('Unnamed: 0', 'index'): distinct whole numbers."""
    if numbers is None or not ROW_NUMBER_NAME.fullmatch(name.strip().lower()):
        return False
    present = numbers.dropna()
    return bool(present.is_unique and (present == present.round()).all())


def _date(values: pd.Series) -> str:
    """Why the column is a date or a timestamp, or ''. Parquet's date types, or text in which
    every value is written like an ISO date (2024-01-31, 2024-01, 2024-01-31T08:00:00Z) and is
    one."""
    present = values.dropna()
    if len(present) == 0:
        return ""
    if pd.api.types.is_datetime64_any_dtype(values):
        first, last = present.min(), present.max()
    elif pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values):
        distinct = pd.Series(present.astype(str).str.strip().unique())
        if not distinct.str.fullmatch(ISO_DATE).all():
            return ""
        parsed = pd.to_datetime(distinct, errors="coerce", format="ISO8601", utc=True)
        if parsed.isna().any():
            return ""
        first, last = distinct[parsed.argmin()], distinct[parsed.argmax()]
    else:
        return ""
    return (
        f"a date ({first} .. {last}): its values are not categories, and the next period "
        "brings new ones. Derive features from it yourself (a year, a month, a day of the "
        "week as numbers)"
    )


def time_rule(name: str, numbers: pd.Series) -> TimeRule | None:
    """How column ``name`` counts time, from its name and its values; None if it does not.

    In this order:

    - a cycle (:data:`CYCLES`): the name says it (a month: 'month', 'MoSold'; an hour:
      'peak_hour') and every value is a whole number within its natural range: bounded by
      that range (month 1..12, day of month 1..31, hour 0..23, weekday 0..6 or 1..7 as the data
      shows). A column named month holding 200..400 is not a month;
    - a year: whole numbers all within 1900..2100, or all within 1000..2999 when the name says
      year ('year', 'YearBuilt', 'yr', 'GarageYrBlt'): open upward;
    - a counter: whole numbers strictly increasing in file order (at least
      :data:`MIN_COUNTER_VALUES` of them): open upward.
    """
    present = numbers.dropna()
    if len(present) == 0 or not bool((present == present.round()).all()):
        return None
    low, high = int(present.min()), int(present.max())
    listed = name_words(name)
    words, joined = set(listed), "".join(listed)
    for cycle in CYCLES:
        if not (any(p in joined for p in cycle.phrases) or cycle.words & words):
            continue
        fits = [(a, b) for a, b in cycle.ranges if a <= low and high <= b]
        if not fits:
            break  # named like one, but its values are not: a year or a counter, perhaps
        bounds = (min(a for a, _ in fits), max(b for _, b in fits))
        why = (
            f"{cycle.what} (its name, and whole numbers {low}..{high}): bounded by its natural "
            f"range {bounds[0]}..{bounds[1]}, not by the values this file covers"
        )
        if len(fits) > 1:
            ranges = " or ".join(f"{a}..{b}" for a, b in fits)
            why += f"; the values fit {ranges}, so both are allowed: keep the one your data uses"
        return TimeRule(why, bounds)
    named_year = "year" in name.lower() or bool(YEAR_WORDS & words)
    within = NAMED_YEARS if named_year else YEARS  # the first holds the second
    if within[0] <= low and high <= within[1]:
        said = "its name, and " if named_year else ""
        return TimeRule(
            f"years ({said}whole numbers {low}..{high}): open upward (no max), so the next "
            "period's data is accepted"
        )
    if len(present) >= MIN_COUNTER_VALUES and bool((present.diff().dropna() > 0).all()):
        return TimeRule(
            f"a counter (whole numbers strictly increasing in file order, {low}..{high}): open "
            "upward (no max), so later rows are accepted"
        )
    return None


def _bounded_in_time(column: NumericColumn, rule: TimeRule) -> NumericColumn:
    if rule.bounds is None:
        return replace(column, max=None)
    return replace(column, min=float(rule.bounds[0]), max=float(rule.bounds[1]), integer=True)


def _classes(
    name: str, values: pd.Series, max_categories: int, share: float | None = None
) -> CategoricalColumn:
    """The target's classes as the data writes them ('Adelie'; whole numbers as 0, 1): for
    each class as the contract compares it, its most frequent spelling (the first seen, on a
    tie)."""
    present = values.dropna()
    numbers = _as_numbers(present)
    if numbers is not None and bool((numbers == numbers.round()).all()):
        present = numbers.astype("int64")
    written = present.astype(str).str.split().str.join(" ")
    spelled = written.groupby(written.map(normalise_label), sort=False).agg(
        lambda same: same.value_counts(sort=False).idxmax()  # the first spelling on a tie
    )
    classes = [str(spelled[label]) for label in sorted(spelled.index)]
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
    return CategoricalColumn(name, tuple(classes), share)


def _as_numbers(values: pd.Series) -> pd.Series | None:
    """The column as numbers when every present value is one (CSV values arrive as text)."""
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
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


def null_limit(values: pd.Series, expected_rows: int) -> float | None:
    """The column's own limit on missing values, or None for the dataset-wide one.

    The share of blanks a source of ``expected_rows`` rows shows when each value is blank at
    the rate this file shows (p) is Binomial(expected_rows, p) / expected_rows. Its
    :data:`NULL_QUANTILE` (99.9%) quantile, rounded up to a whole percent and never below p,
    is the limit: a source with the same underlying rate fails it on sampling noise at most
    once in a thousand, and a source with many more blanks still fails. The smaller the
    source, the wider the noise, so give the rows of the smallest source the spec will judge.

    A column without blanks, or whose bound is within the dataset-wide
    :data:`DATASET_NULL_SHARE`, keeps the dataset-wide limit: a column's own limit below it
    would hold a column with a few blanks stricter than one without any.
    """
    share = float(values.isna().mean()) if len(values) else 0.0
    if share == 0:
        return None
    bound = float(binom.ppf(NULL_QUANTILE, expected_rows, share)) / expected_rows
    # Rounded to a millionth first, so 0.15 is 15%, not 16% for a float's last digit.
    limit = math.ceil(round(max(bound, share) * 100, 6)) / 100
    return min(1.0, limit) if limit > DATASET_NULL_SHARE else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlops-spec",
        description="Dataset specs: `infer` drafts one from a data file, for you to review.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    infer = commands.add_parser("infer", help="draft a spec from a .csv or .parquet file")
    infer.add_argument("data", type=Path, help="the labelled data, .csv or .parquet")
    infer.add_argument("--target", required=True, help="the column the model predicts")
    infer.add_argument(
        "--name",
        help="dataset name; versions, tags and refs are per name (default: <file stem>_<target>)",
    )
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
    infer.add_argument(
        "--expected-rows", type=int,
        help="rows of the smallest labelled source the spec will judge: null limits leave "
        "room for the sampling noise of that many rows (default: this file's rows)",
    )  # fmt: skip
    infer.add_argument("-o", "--output", type=Path, help="write the spec here (default: stdout)")
    args = parser.parse_args(argv)
    name = args.name or default_name(args.data, args.target)
    try:
        frame = read_table(args.data)
        draft = infer_spec(
            frame,
            args.target,
            name,
            args.margin,
            args.max_categories,
            args.task or "",
            args.expected_rows,
        )
    except (OSError, ValueError) as exc:
        print(f"mlops-spec: {exc}", file=sys.stderr)
        return 2
    text = draft_text(draft)
    if args.output:
        args.output.write_text(text)
        print(f"wrote the draft spec to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    if args.name:
        print(f"dataset name: '{name}' (--name)", file=sys.stderr)
    else:
        print(
            f"dataset name: '{name}', from the file's name and the target. Dataset versions, "
            "tags and refs are kept per name, so two unrelated datasets must not share one: "
            "give --name to choose it",
            file=sys.stderr,
        )
    print(
        f"drafted a {draft.spec.task} spec from {len(frame):,} rows: "
        f"{len(draft.spec.numeric)} numeric, "
        f"{len(draft.spec.categorical)} categorical columns; review the bounds and allowed "
        "values before you use it (MLOPS_DATASET_SPEC)",
        file=sys.stderr,
    )
    print(draft.key_note, file=sys.stderr)
    for column, reason in draft.flagged.items():
        print(f"left out '{column}': {reason}", file=sys.stderr)
    for column, note in draft.notes.items():
        print(f"look at '{column}': {note}", file=sys.stderr)
    return 0


def draft_text(draft: Draft) -> str:
    """The draft as the JSON file a person reviews."""
    return json.dumps(_readable(draft.spec.to_dict()), indent=2) + "\n"


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
