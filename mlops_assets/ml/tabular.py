"""Read a tabular file and check it against a :class:`DatasetSpec`.

Every problem becomes a :class:`Violation` that names the file, the column,
the rows and the rule, so a person can open the file and find it. Rows are
numbered from 1 for the first data row (the header is not a row).

The rules are grouped in the order a file is read; each group is one asset
check on ``raw_data``. A group that cannot be evaluated because an earlier
one failed (no columns to check in a file that does not parse) is reported
as not evaluated rather than as passed or failed.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlops_assets.ml.spec import CategoricalColumn, DatasetSpec

NA_TOKENS = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"]
MAX_ROWS_LISTED = 10

PARSES = "parses_as_table"
HAS_ROWS = "has_data_rows"
REQUIRED_COLUMNS = "required_columns_present"
SCHEMA = "values_match_schema"
DUPLICATES = "duplicate_share_within_limit"
RULE_GROUPS: tuple[str, ...] = (PARSES, HAS_ROWS, REQUIRED_COLUMNS, SCHEMA, DUPLICATES)


@dataclass(frozen=True)
class TableFile:
    """One file of a source snapshot: its name (for messages) and its bytes."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Violation:
    file: str
    column: str | None
    rule: str
    detail: str
    rows: tuple[int, ...] = ()
    row_count: int = 0
    # Which rows break the rule, for a rule a single row can break (a value out of range, an
    # unseen category): a scoring batch sets those rows aside and scores the rest. None for a
    # rule of the whole file (a missing column, a share of missing values).
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def message(self) -> str:
        where = f"file '{self.file}'"
        if self.column is not None:
            where += f", column '{self.column}'"
        if self.rows:
            listed = ", ".join(str(r) for r in self.rows)
            more = self.row_count - len(self.rows)
            noun = "row" if self.row_count <= 1 and len(self.rows) == 1 else "rows"
            where += f", {noun} {listed}" + (f" and {more:,} more" if more > 0 else "")
        return f"{where}: {self.detail} (rule: {self.rule})"


@dataclass
class Inspection:
    """The outcome of reading one file: the typed frame (if it parsed) and each rule group's
    violations; a group maps to None when it could not be evaluated."""

    file: str
    frame: pd.DataFrame | None
    results: dict[str, list[Violation] | None] = field(default_factory=dict)
    # Columns of the file the spec does not declare: read past, never silently.
    ignored_columns: tuple[str, ...] = ()
    # Findings that do not reject the file (a person should look), by rule group.
    warnings: dict[str, list[Violation]] = field(default_factory=dict)

    @property
    def violations(self) -> list[Violation]:
        return [v for group in self.results.values() if group for v in group]

    @property
    def ok(self) -> bool:
        return self.frame is not None and not self.violations


@dataclass(frozen=True)
class ValidatedTable:
    """Every file of a source, validated and typed as one frame."""

    frame: pd.DataFrame
    # file name -> columns the spec does not declare, which are left out of ``frame``
    ignored_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def describe_ignored(self) -> str:
        return describe_ignored(self.ignored_columns)


def describe_ignored(ignored_columns: dict[str, tuple[str, ...]]) -> str:
    """``"file 'a.csv': 'id', 'note'; ..."``, or an empty string when nothing was ignored."""
    return "; ".join(
        f"file '{name}': " + ", ".join(repr(c) for c in columns)
        for name, columns in ignored_columns.items()
        if columns
    )


class DatasetRejected(ValueError):
    """Raised when input breaks the dataset contract; the message lists every violation."""

    def __init__(self, violations: Sequence[Violation]):
        self.violations = list(violations)
        lines = [v.message for v in self.violations[:20]]
        if len(self.violations) > 20:
            lines.append(f"... and {len(self.violations) - 20} more violations")
        super().__init__("input rejected:\n" + "\n".join(f"- {line}" for line in lines))


def row_numbers(mask: np.ndarray | pd.Series) -> tuple[tuple[int, ...], int]:
    """The first MAX_ROWS_LISTED data rows (from 1) where ``mask`` holds, and how many hold."""
    positions = np.flatnonzero(np.asarray(mask))
    return tuple(int(p) + 1 for p in positions[:MAX_ROWS_LISTED]), len(positions)


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``1 value``, ``3 values``: the count and the word as the count wants it."""
    return f"{count:,} {singular if count == 1 else plural_form or singular + 's'}"


def _row_violation(
    file: str,
    column: str,
    rule: str,
    mask: pd.Series,
    raw: pd.Series,
    what: str,
    what_plural: str | None = None,
) -> Violation:
    """A rule each row can break on its own: the rows where ``mask`` holds, their values as
    written in the file (``raw``), and the mask, for a batch to set them aside."""
    rows, count = row_numbers(mask)
    detail = f"{plural(count, what, what_plural)} (e.g. {_examples(raw[mask])})"
    return Violation(file, column, rule, detail, rows, count, np.asarray(mask, dtype=bool))


def _examples(values: Iterable[object], limit: int = 3) -> str:
    seen: list[str] = []
    for value in values:
        text = repr(str(value))
        if text not in seen:
            seen.append(text)
        if len(seen) == limit:
            break
    return ", ".join(seen)


def _utf8_violation(file: TableFile, error: UnicodeDecodeError) -> Violation:
    data = file.data
    line_start = data.rfind(b"\n", 0, error.start) + 1
    row = data.count(b"\n", 0, error.start)  # header is line 0 here, so this is the data row
    header = data[: data.find(b"\n")] if b"\n" in data else data
    column_index = data.count(b",", line_start, error.start)
    names = header.decode("utf-8", errors="replace").strip().split(",")
    column = names[column_index].strip() if row > 0 and column_index < len(names) else None
    byte = data[error.start : error.start + 1].hex()
    return Violation(
        file=file.name,
        column=column,
        rule="text must be UTF-8 encoded",
        detail=f"byte 0x{byte} at offset {error.start} is not valid UTF-8",
        rows=(row,) if row > 0 else (),
        row_count=1 if row > 0 else 0,
    )


# A field ending a number's leading digit group and the next field a group of exactly three
# digits: '1,200' written without quotes splits into '1' and '200'.
_LEADING_GROUP = re.compile(r"\s*[-+]?\d{1,3}")
_THOUSANDS_GROUP = re.compile(r"\d{3}(\.\d*)?\s*")
CSV_RULE = "must be well-formed CSV"


def _rejoin_thousands(fields: list[str], width: int) -> tuple[list[str], list[int]] | None:
    """The row with each number that most likely lost its thousands separator to the comma
    written whole (``1``, ``200`` and ``000`` back to ``1200000``), and the header positions
    of those numbers; None when rejoining them does not give the row the header's width."""
    extra = len(fields) - width
    row: list[str] = []
    columns: list[int] = []
    i = 0
    while i < len(fields):
        value = first = fields[i]
        joined = False
        while (
            extra > 0
            and i + 1 < len(fields)
            and _LEADING_GROUP.fullmatch(first)
            and _THOUSANDS_GROUP.fullmatch(fields[i + 1])
        ):
            value = value.strip() + fields[i + 1].strip()
            joined = True
            i += 1
            extra -= 1
        if joined:
            columns.append(len(row))
        row.append(value)
        i += 1
    return (row, columns) if extra == 0 else None


def _split_thousands(fields: list[str], width: int) -> list[int] | None:
    """Header positions whose value most likely lost its thousands separator to the comma,
    when re-joining those numbers gives the row the header's width; else None."""
    rejoined = _rejoin_thousands(fields, width)
    return rejoined[1] if rejoined and rejoined[1] else None


def _merge_thousands(fields: list[str], width: int) -> list[str] | None:
    """The row with each number :func:`_split_thousands` finds written whole, or None when
    that does not give the header's width."""
    rejoined = _rejoin_thousands(fields, width)
    return rejoined[0] if rejoined else None


def _read_past_thousands(file: TableFile) -> pd.DataFrame | None:
    """The file read as :func:`read_frame` reads it, with every number that lost its
    thousands separator to the comma written whole; None when some row is wider for another
    reason. Only so the rest of the contract can name every other bad value in one pass: the
    file itself stays rejected."""
    reader = csv.reader(io.StringIO(file.data.decode("utf-8")))
    header = next(reader, [])
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    for fields in reader:
        if len(fields) > len(header):
            merged = _merge_thousands(fields, len(header))
            if merged is None:
                return None
            fields = merged
        writer.writerow(fields)
    frame = pd.read_csv(
        io.StringIO(out.getvalue()), dtype=str, keep_default_na=False, na_values=NA_TOKENS
    )
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _field_count_violations(file: TableFile) -> list[Violation]:
    """Rows with more fields than the header, with the column each most likely breaks.

    Rows are data rows as elsewhere (blank lines are skipped, as the reader skips them); the
    detail names the first file line, since a person opens the file at a line.
    """
    reader = csv.reader(io.StringIO(file.data.decode("utf-8")))
    header = next(reader, [])
    names = [name.strip() for name in header]
    width = len(names)
    by_column: dict[str | None, list[tuple[int, int, int]]] = {}
    row = 0
    for fields in reader:
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        row += 1
        if len(fields) <= width:
            continue
        columns = _split_thousands(fields, width)
        for column in [names[c] for c in columns] if columns else [None]:
            by_column.setdefault(column, []).append((row, reader.line_num, len(fields)))
    violations = []
    for column, found in by_column.items():
        rows = tuple(r for r, _, _ in found[:MAX_ROWS_LISTED])
        _, first_line, first_width = found[0]
        rows_have = "1 row has" if len(found) == 1 else f"{len(found):,} rows have"
        where = (
            f"{rows_have} more fields than the header's {width} "
            f"(first: line {first_line} has {first_width})"
        )
        if column is None:
            detail = f"{where}; quote values that contain a comma"
        else:
            detail = (
                f"{where}; its values look like numbers with an unquoted thousands separator "
                "(e.g. 1,200): write 1200, or quote the value"
            )
        violations.append(Violation(file.name, column, CSV_RULE, detail, rows, len(found)))
    return violations


def read_frame(file: TableFile) -> tuple[pd.DataFrame | None, list[Violation]]:
    """One file as the contract reads it, before any spec applies: every CSV value a string
    (the NA tokens missing), column names trimmed; or None and why it cannot be read."""
    name = file.name
    if name.lower().endswith(".parquet"):
        try:
            return pd.read_parquet(io.BytesIO(file.data)), []
        except Exception as exc:
            return None, [Violation(name, None, "must be a readable Parquet file", str(exc))]
    try:
        file.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [_utf8_violation(file, exc)]
    if not file.data.strip():
        return pd.DataFrame(), []
    try:
        frame = pd.read_csv(
            io.BytesIO(file.data),
            dtype=str,
            keep_default_na=False,
            na_values=NA_TOKENS,
            encoding="utf-8",
        )
    except pd.errors.ParserError as exc:
        return None, _field_count_violations(file) or [
            Violation(name, None, CSV_RULE, str(exc).strip())
        ]
    if not isinstance(frame.index, pd.RangeIndex):
        # Every data row is wider than the header: pandas took the extra leading fields as
        # the index and shifted every value one column to the right. Never accept that.
        return None, _field_count_violations(file) or [
            Violation(name, None, CSV_RULE, "data rows have more fields than the header")
        ]
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame, []


def normalise_category(values: pd.Series) -> pd.Series:
    """Lower-case, trim and collapse inner whitespace; missing stays missing.

    The vectorised form of :func:`mlops_assets.ml.spec.normalise_label`, which normalises a
    spec's allowed values: the two must agree (a test holds them to it)."""
    text = values.astype("string")
    return text.str.strip().str.lower().str.replace(r"\s+", " ", regex=True)


def each_distinct(values: pd.Series, transform: Callable[[pd.Series], pd.Series]) -> pd.Series:
    """``transform`` (vectorised, row by row) applied once to each distinct value of
    ``values`` and spread back to every row; missing stays missing. A column of a million
    rows holds a handful of categories, or a few thousand numbers written as text, so the
    string work is done on those alone."""
    codes, distinct = pd.factorize(values)
    done = transform(pd.Series(distinct, dtype=object))
    array = (
        done.array if isinstance(done.dtype, pd.api.extensions.ExtensionDtype) else done.to_numpy()
    )
    spread = pd.api.extensions.take(array, codes, allow_fill=True)
    return pd.Series(spread, index=values.index, name=values.name)


def _parse_number(text: pd.Series) -> pd.Series:
    return pd.to_numeric(text.astype("string").str.strip(), errors="coerce").astype("float64")


def _check_values(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    file: str,
    require_target: bool,
    null_limits: bool = True,
) -> tuple[pd.DataFrame, list[Violation]]:
    """The declared columns typed (numbers, normalised categories, key columns as text), and
    every value that breaks a rule, named with the values as written in the file. With
    ``null_limits`` off (a batch to score, whose blanks the model imputes), no column's share
    of missing values is judged."""
    typed: dict[str, pd.Series] = {}
    violations: list[Violation] = []
    numeric_columns = list(spec.numeric)
    categorical_columns = list(spec.categorical)
    if spec.target.name in frame.columns:
        # A classification target is checked as a categorical column: its classes are allowed.
        if isinstance(spec.target, CategoricalColumn):
            categorical_columns.append(spec.target)
        else:
            numeric_columns.append(spec.target)

    for column in numeric_columns:
        raw = frame[column.name]
        if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
            values = raw.astype("float64")
        else:
            values = each_distinct(raw, _parse_number)
            bad = values.isna() & raw.notna()
            if bad.any():
                violations.append(
                    _row_violation(
                        file, column.name, "numeric column", bad, raw, "non-numeric value"
                    )
                )
        present = values.notna()
        if column.integer:
            fractional = present & (values.round() != values)
            if fractional.any():
                violations.append(
                    _row_violation(
                        file, column.name, "whole numbers only", fractional, raw, "fractional value"
                    )
                )
        for sign, bound, out in (
            (">=", column.min, present & (values < column.min) if column.min is not None else None),
            ("<=", column.max, present & (values > column.max) if column.max is not None else None),
        ):
            if out is not None and out.any():
                rule = f"values must be {sign} {bound:g}"
                violations.append(
                    _row_violation(
                        file,
                        column.name,
                        rule,
                        out,
                        raw,
                        "value out of range",
                        "values out of range",
                    )
                )
        typed[column.name] = values

    for category in categorical_columns:
        raw = frame[category.name]
        values = each_distinct(raw, normalise_category)
        spelling = category.spelling
        unseen = values.notna() & ~values.isin(set(spelling))
        if unseen.any():
            rule = f"values must be one of {{{', '.join(category.allowed)}}}"
            violations.append(
                _row_violation(
                    file, category.name, rule, unseen, raw, "unseen category", "unseen categories"
                )
            )
        if category is spec.target:  # classes as the spec writes them ('Adelie'), matched as
            # the data is compared; features stay normalised, as the served model takes them
            values = values.map(spelling)
            typed[category.name] = values.astype(pd.CategoricalDtype(sorted(spelling.values())))
        else:
            typed[category.name] = values.astype(pd.CategoricalDtype(sorted(spelling)))

    for name in spec.key_only_columns:  # an id: text as written, trimmed
        if name in frame.columns:
            typed[name] = frame[name].astype("string").str.strip()

    result = pd.DataFrame(typed, index=frame.index)
    ordered = [c for c in [*spec.required_columns, *spec.key_only_columns] if c in result.columns]
    result = result[ordered]

    checked_for_nulls = spec.feature_columns + ([spec.target.name] if require_target else [])
    for name in checked_for_nulls if null_limits else []:
        missing = result[name].isna()
        share = float(missing.mean()) if len(result) else 0.0
        limit = spec.null_limit(name)
        if share > limit:
            rows, count = row_numbers(missing)
            violations.append(
                Violation(
                    file,
                    name,
                    f"at most {limit:.0%} missing values",
                    f"{share:.1%} of values are missing ({count:,} of {len(result):,})",
                    rows,
                    count,
                )
            )
    return result, violations


def inspect_table(
    file: TableFile, spec: DatasetSpec, require_target: bool = True, null_limits: bool = True
) -> Inspection:
    """Parse ``file`` and evaluate every rule group of the dataset contract.

    Parameters
    ----------
    file
        The file's name (used in messages) and bytes; CSV unless the name ends in .parquet.
    spec
        The dataset contract.
    require_target
        Training data must carry the target; an incoming scoring batch need not.
    """
    frame, parse_violations = read_frame(file)
    if (
        frame is None
        and parse_violations
        and all(v.column and v.rule == CSV_RULE for v in parse_violations)
    ):
        # Numbers written with an unquoted thousands separator: name them, and every other
        # bad value too, so the file is fixed in one pass. The file stays rejected.
        readable = _read_past_thousands(file)
        if readable is not None:
            inspection = inspect_frame(
                file.name, readable, parse_violations, spec, require_target, null_limits
            )
            inspection.frame = None
            return inspection
    return inspect_frame(file.name, frame, parse_violations, spec, require_target, null_limits)


def inspect_frame(
    name: str,
    frame: pd.DataFrame | None,
    parse_violations: list[Violation],
    spec: DatasetSpec,
    require_target: bool = True,
    null_limits: bool = True,
) -> Inspection:
    """:func:`inspect_table` of a file :func:`read_frame` has read (as ``frame`` and its
    ``parse_violations``), for callers that look at the raw columns first."""
    inspection = Inspection(file=name, frame=None)
    results = inspection.results
    for group in RULE_GROUPS:
        results[group] = None

    results[PARSES] = parse_violations
    if frame is None:
        return inspection

    if frame.shape[1] == 0:
        results[HAS_ROWS] = [
            Violation(name, None, "file must not be empty", "the file has no header and no rows")
        ]
        return inspection
    if len(frame) == 0:
        results[HAS_ROWS] = [
            Violation(
                name,
                None,
                "file must have data rows",
                f"only a header ({len(frame.columns)} columns) and no data rows",
            )
        ]
        return inspection
    results[HAS_ROWS] = []

    required = (
        [*spec.required_columns, *spec.key_only_columns] if require_target else spec.feature_columns
    )
    missing = [c for c in required if c not in frame.columns]
    delimiter = _other_delimiter(frame) if missing else None
    if delimiter is not None:
        results[REQUIRED_COLUMNS] = [
            Violation(
                name,
                None,
                "columns separated by commas",
                f"the header reads as one column, {str(frame.columns[0])[:80]!r}: the file "
                f"looks {delimiter}-separated; write it with commas (or save it as Parquet)",
            )
        ]
        return inspection
    results[REQUIRED_COLUMNS] = [
        Violation(
            name,
            column,
            "required column",
            f"column is missing; the file has columns {list(frame.columns)}",
        )
        for column in missing
    ]
    if missing:
        return inspection

    known = set(spec.required_columns) | set(spec.key)
    inspection.ignored_columns = tuple(c for c in frame.columns if c not in known)
    typed, value_violations = _check_values(frame, spec, name, require_target, null_limits)
    results[SCHEMA] = value_violations

    results[DUPLICATES] = []
    if require_target:
        finding = duplicate_finding(typed, spec, name)
        if finding is not None and spec.key:
            results[DUPLICATES] = [finding]
        elif finding is not None:
            inspection.warnings[DUPLICATES] = [finding]
    inspection.frame = typed
    return inspection


DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def _other_delimiter(frame: pd.DataFrame) -> str | None:
    """The name of the delimiter a one-column file was most likely written with, if any."""
    if frame.shape[1] != 1:
        return None
    header = str(frame.columns[0])
    found = [(header.count(d), word) for d, word in DELIMITERS.items() if d in header]
    return max(found)[1] if found else None


def duplicate_finding(typed: pd.DataFrame, spec: DatasetSpec, file: str) -> Violation | None:
    """Rows that repeat another, when more than ``max_duplicate_share`` of them do.

    With a key, a row repeating another's key is a record written twice: over the share, the
    file is likely broken (a double export), and that rejects it. Without a key, rows are
    observations, and equal ones are legitimate (passengers of one class, age band and sex): a
    high share is only worth a look (the caller makes it a warning)."""
    if len(typed) == 0:
        return None
    if spec.key:
        repeated = typed.duplicated(subset=list(spec.key), keep="last").to_numpy()
        what = f"repeat the key ({', '.join(spec.key)}) of a later row"
        column: str | None = ", ".join(spec.key)
        rule = f"at most {spec.max_duplicate_share:.0%} of rows repeat a key"
    else:
        repeated = typed.duplicated(keep="first").to_numpy()
        what = "repeat an earlier row in every column the spec declares"
        column = None
        rule = (
            f"at most {spec.max_duplicate_share:.0%} of rows equal to another, or declare the "
            "spec's key if rows are records"
        )
    share = float(repeated.mean())
    if share <= spec.max_duplicate_share:
        return None
    rows, count = row_numbers(repeated)
    return Violation(
        file, column, rule, f"{share:.1%} of rows ({count:,} of {len(typed):,}) {what}", rows, count
    )


def read_validated(
    files: Sequence[TableFile], spec: DatasetSpec, require_target: bool = True
) -> ValidatedTable:
    """Read and validate every file; return one typed frame (and the columns it left out) or
    raise :class:`DatasetRejected`."""
    return validated(inspect_table(file, spec, require_target) for file in files)


def validated(inspections: Iterable[Inspection]) -> ValidatedTable:
    """The files' inspections as one typed frame (and the columns each left out), or
    :class:`DatasetRejected` with every violation."""
    frames: list[pd.DataFrame] = []
    violations: list[Violation] = []
    ignored: dict[str, tuple[str, ...]] = {}
    for inspection in inspections:
        violations.extend(inspection.violations)
        if inspection.frame is not None:
            frames.append(inspection.frame)
        if inspection.ignored_columns:
            ignored[inspection.file] = inspection.ignored_columns
    if violations:
        raise DatasetRejected(violations)
    if not frames:
        raise DatasetRejected(
            [Violation("<source>", None, "source must contain a file", "no data files found")]
        )
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return ValidatedTable(frame, ignored)


# A rule broken by more than this share of a batch's rows is the file's, not the rows': a column
# of another type or unit. The batch is refused rather than mostly set aside.
WRONG_COLUMN_SHARE = 0.5
QUARANTINE_COLUMNS = ("file", "row", "line", "rules", "values")


@dataclass(frozen=True)
class ScoringBatch:
    """A day's batch held to the contract row by row: the rows to score, and the rows set aside
    (the quarantine: each row's file, its number and line, every rule it broke, and its values
    as written, as JSON). ``scorable`` + quarantined = ``received``, always."""

    scorable: pd.DataFrame
    # Where each row to score comes from: its file and its row there (1 = first data row).
    origin: pd.DataFrame
    quarantine: pd.DataFrame
    received: int
    ignored_columns: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def blanks(self, columns: Sequence[str]) -> dict[str, int]:
        """Missing values per column among the rows to score (the model imputes them)."""
        counts = self.scorable[list(columns)].isna().sum()
        return {str(c): int(n) for c, n in counts.items() if n}

    def describe_ignored(self) -> str:
        return describe_ignored(self.ignored_columns)


def read_batch(files: Sequence[TableFile], spec: DatasetSpec) -> ScoringBatch:
    """Every file of a batch to score, held to the contract row by row.

    A problem of the file (it does not parse, has no rows, lacks a feature column, or a rule
    broken by more than :data:`WRONG_COLUMN_SHARE` of its rows: a column of another type)
    raises :class:`DatasetRejected`, and nothing is scored. A row that breaks a rule on its
    own (a value that is not a number, out of range, an unseen category) is set aside in the
    quarantine, and the rest are scored. Missing values are not judged: the model imputes them.
    """
    scorable: list[pd.DataFrame] = []
    origins: list[pd.DataFrame] = []
    quarantined: list[pd.DataFrame] = []
    rejected: list[Violation] = []
    ignored: dict[str, tuple[str, ...]] = {}
    received = 0
    for file in files:
        raw, parse_violations = read_frame(file)
        inspection = inspect_frame(
            file.name, raw, parse_violations, spec, require_target=False, null_limits=False
        )
        if inspection.frame is None or raw is None:
            rejected.extend(inspection.violations)
            continue
        rows = len(inspection.frame)
        of_rows = [v for v in inspection.violations if v.mask is not None]
        rejected.extend(v for v in inspection.violations if v.mask is None)
        for violation in of_rows:
            if violation.row_count > WRONG_COLUMN_SHARE * rows:
                rejected.append(_wrong_column(violation, rows))
        if inspection.ignored_columns:
            ignored[file.name] = inspection.ignored_columns
        received += rows
        set_aside = np.zeros(rows, dtype=bool)
        for violation in of_rows:
            set_aside |= violation.mask  # type: ignore[arg-type]
        scorable.append(inspection.frame[~set_aside])
        kept = np.flatnonzero(~set_aside)
        origins.append(pd.DataFrame({"file": file.name, "row": kept + 1}))
        if set_aside.any():
            quarantined.append(_quarantine(file, raw, set_aside, of_rows))
    if rejected:
        raise DatasetRejected(rejected)
    if not scorable:
        raise DatasetRejected(
            [Violation("<source>", None, "source must contain a file", "no data files found")]
        )
    return ScoringBatch(
        scorable=pd.concat(scorable, ignore_index=True),
        origin=pd.concat(origins, ignore_index=True),
        quarantine=pd.concat(quarantined, ignore_index=True)
        if quarantined
        else pd.DataFrame({c: pd.Series(dtype=object) for c in QUARANTINE_COLUMNS}),
        received=received,
        ignored_columns=ignored,
    )


def _wrong_column(violation: Violation, rows: int) -> Violation:
    return Violation(
        violation.file,
        violation.column,
        violation.rule,
        f"{violation.detail}: {violation.row_count:,} of {rows:,} rows, more than "
        f"{WRONG_COLUMN_SHARE:.0%}, so the column itself is wrong (another type or unit?), not "
        "some rows; nothing was scored",
        violation.rows,
        violation.row_count,
    )


def _quarantine(
    file: TableFile, raw: pd.DataFrame, set_aside: np.ndarray, broken: list[Violation]
) -> pd.DataFrame:
    """The rows of ``file`` set aside: each with its number, its line in the file, every rule
    it broke (column: rule) and its values as written."""
    positions = np.flatnonzero(set_aside)
    rules = [
        "; ".join(
            f"column '{v.column}': {v.rule}"
            for v in broken
            if v.mask is not None and v.mask[position]
        )
        for position in positions
    ]
    return _quarantine_rows(file, raw, positions, rules)


def quarantine_rows(
    files: Sequence[TableFile], origin: pd.DataFrame, rules: Sequence[str]
) -> pd.DataFrame:
    """Quarantine records for rows the contract passed but the model could not score: each
    row of ``origin`` (file, row) with its rule, its line and its values as written."""
    parts = []
    by_name = {file.name: file for file in files}
    for name, rows in origin.assign(rule=list(rules)).groupby("file", sort=False):
        raw, _ = read_frame(by_name[str(name)])
        assert raw is not None  # it was read once already
        positions = rows["row"].to_numpy() - 1
        parts.append(_quarantine_rows(by_name[str(name)], raw, positions, list(rows["rule"])))
    return pd.concat(parts, ignore_index=True)


def _quarantine_rows(
    file: TableFile, raw: pd.DataFrame, positions: np.ndarray, rules: list[str]
) -> pd.DataFrame:
    lines = _csv_lines(file, positions)
    values = raw.iloc[positions].astype(object).where(raw.iloc[positions].notna(), None)
    return pd.DataFrame(
        {
            "file": file.name,
            "row": positions + 1,
            "line": lines,
            "rules": rules,
            "values": [json.dumps(record, default=str) for record in values.to_dict("records")],
        }
    )


def _csv_lines(file: TableFile, positions: np.ndarray) -> list[int | None]:
    """The line of the file each data row at ``positions`` starts on (blank lines skipped, as
    the reader skips them; a quoted value may span lines); None for a Parquet file."""
    if file.name.lower().endswith(".parquet"):
        return [None] * len(positions)
    wanted = set(int(p) for p in positions)
    found: dict[int, int] = {}
    reader = csv.reader(io.StringIO(file.data.decode("utf-8")))
    next(reader, None)
    row, line = -1, reader.line_num + 1
    for fields in reader:
        if fields and not (len(fields) == 1 and not fields[0].strip()):
            row += 1
            if row in wanted:
                found[row] = line
        line = reader.line_num + 1
    return [found.get(int(p)) for p in positions]


class KeptInspections:
    """Inspections one step keeps for a later step of the same process to take instead of
    parsing the same bytes again: the raw data contract inspects a snapshot's files, and
    versioned_dataset, the next step of the run (one process under the in_process executor),
    takes them. At a million rows the parse is a third of the data steps' time.

    Only a file that passes every rule is kept; each is taken once; at most ``limit`` are
    kept, the oldest dropped first. A step in another process finds nothing and inspects
    the file itself, so the result never depends on what was kept."""

    def __init__(self, limit: int = 4) -> None:
        self.limit = limit
        self._kept: dict[str, Inspection] = {}

    @staticmethod
    def key(sha256: str, spec: DatasetSpec, require_target: bool = True) -> str:
        """The file (by content), the contract it was held to, and whether it needed a
        target."""
        contract = hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode())
        return f"{sha256}:{contract.hexdigest()}:{require_target}"

    def keep(self, key: str, inspection: Inspection) -> None:
        if not inspection.ok:
            return
        self._kept.pop(key, None)
        self._kept[key] = inspection
        while len(self._kept) > self.limit:
            del self._kept[next(iter(self._kept))]

    def take(self, key: str) -> Inspection | None:
        return self._kept.pop(key, None)


KEPT_INSPECTIONS = KeptInspections()
