"""Dataset specification: what a tabular dataset must look like, and the task it is for.

The task is ``regression`` (a numeric target; the default) or ``classification`` (binary or
multiclass: the target is a categorical column whose ``allowed`` values are the classes).

A spec is plain data (JSON-serialisable) so another dataset can be used by
configuration alone: point ``MLOPS_DATASET_SPEC`` at a JSON file of the same
shape as :data:`HOUSE_PRICES` and ``MLOPS_SOURCE_URI`` at the data.

Categorical values are compared after :func:`normalise_label` (trimmed, lower
case, inner whitespace collapsed) on both sides: the data's values and the
spec's allowed values, so a spec may be written in the data's own case.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def normalise_label(value: object) -> str:
    """A category as the data is compared: trimmed, lower case, inner whitespace collapsed."""
    return " ".join(str(value).lower().split())


def _check_share(owner: str, share: float | None) -> None:
    if share is not None and not 0 <= share <= 1:
        raise ValueError(f"{owner}: max_null_share {share} must be between 0 and 1")


@dataclass(frozen=True)
class NumericColumn:
    name: str
    min: float | None = None
    max: float | None = None
    integer: bool = False
    # This column's limit on missing values; None means the dataset's max_null_share.
    max_null_share: float | None = None

    def __post_init__(self) -> None:
        _check_share(f"column '{self.name}'", self.max_null_share)

    def schema(self) -> dict[str, Any]:
        return {"name": self.name, "min": self.min, "max": self.max, "integer": self.integer}


@dataclass(frozen=True)
class CategoricalColumn:
    name: str
    allowed: tuple[str, ...]
    max_null_share: float | None = None

    def __post_init__(self) -> None:
        _check_share(f"column '{self.name}'", self.max_null_share)
        if isinstance(self.allowed, str):  # ("a") is a string, not a one-value tuple
            object.__setattr__(self, "allowed", (self.allowed,))
        # Kept as written (a class is 'Adelie', not 'adelie'), one spelling per value as the
        # data is compared: 'Yes' in a spec matches 'yes', ' YES ' and 'Yes' in a file.
        spelled: dict[str, str] = {}
        for value in self.allowed:
            spelled.setdefault(normalise_label(value), " ".join(str(value).split()))
        object.__setattr__(self, "allowed", tuple(spelled.values()))

    @property
    def spelling(self) -> dict[str, str]:
        """Each allowed value as the data is compared (normalised) -> as the spec writes it."""
        return {normalise_label(v): v for v in self.allowed}

    def schema(self) -> dict[str, Any]:
        # Normalised: a spec that only writes its values in another case keeps its digests.
        return {"name": self.name, "allowed": sorted(self.spelling)}


@dataclass(frozen=True)
class SplitSpec:
    """Fractions of rows for validation and test; the rest is train."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    min_rows_per_split: int = 5


TASKS = ("regression", "classification")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    # regression: a NumericColumn; classification: a CategoricalColumn, its allowed values the
    # classes (see task).
    target: NumericColumn | CategoricalColumn
    numeric: tuple[NumericColumn, ...]
    categorical: tuple[CategoricalColumn, ...]
    max_null_share: float = 0.05
    max_duplicate_share: float = 0.2
    split: SplitSpec = field(default_factory=SplitSpec)
    # The columns that identify a record (an id, or an id and a date). With a key, rows that
    # repeat a key are one record written again: the last is kept, and max_duplicate_share
    # bounds them. Without one, rows are observations: two equal rows are two observations,
    # and none is dropped for being equal to another.
    key: tuple[str, ...] = ()

    @property
    def task(self) -> str:
        """``classification`` when the target is categorical, else ``regression``."""
        return "classification" if isinstance(self.target, CategoricalColumn) else "regression"

    @property
    def classes(self) -> tuple[str, ...]:
        """The target's classes (classification), in the spec's order; () for regression."""
        return self.target.allowed if isinstance(self.target, CategoricalColumn) else ()

    def __post_init__(self) -> None:
        if self.task == "classification" and len(self.classes) < 2:
            raise ValueError(
                f"dataset spec '{self.name}': a classification target needs at least two "
                f"classes; '{self.target.name}' allows {list(self.classes)}"
            )
        if isinstance(self.key, str):  # ("id") is a string, not a one-column key
            object.__setattr__(self, "key", (self.key,))
        object.__setattr__(self, "key", tuple(self.key))
        names = [self.target.name, *self.feature_columns]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"dataset spec '{self.name}': columns declared twice: {duplicated}")
        if not self.feature_columns:
            raise ValueError(f"dataset spec '{self.name}': no feature columns declared")
        for column in self.categorical:
            if not column.allowed:
                raise ValueError(
                    f"dataset spec '{self.name}': categorical column '{column.name}' "
                    "has no allowed values"
                )
        _check_share(f"dataset spec '{self.name}'", self.max_null_share)
        split = self.split
        if not (0 < split.val_fraction < 1 and 0 < split.test_fraction < 1) or (
            split.val_fraction + split.test_fraction >= 1
        ):
            raise ValueError(
                f"dataset spec '{self.name}': split fractions val={split.val_fraction} "
                f"test={split.test_fraction} must be in (0, 1) and sum below 1"
            )

    @property
    def numeric_features(self) -> list[str]:
        return [c.name for c in self.numeric]

    @property
    def categorical_features(self) -> list[str]:
        return [c.name for c in self.categorical]

    @property
    def feature_columns(self) -> list[str]:
        return self.numeric_features + self.categorical_features

    @property
    def required_columns(self) -> list[str]:
        return [*self.feature_columns, self.target.name]

    @property
    def key_only_columns(self) -> list[str]:
        """Key columns that are neither features nor the target (an id): carried as text, so
        that records can be told apart, and left out of the model's input."""
        declared = set(self.required_columns)
        return [c for c in self.key if c not in declared]

    def _columns(self) -> list[NumericColumn | CategoricalColumn]:
        return [self.target, *self.numeric, *self.categorical]

    def null_limit(self, column: str) -> float:
        """The largest share of missing values ``column`` may have: its own limit, if the spec
        gives one, else the dataset's ``max_null_share``."""
        for declared in self._columns():
            if declared.name == column and declared.max_null_share is not None:
                return declared.max_null_share
        return self.max_null_share

    def schema_fingerprint(self) -> str:
        """Digest of the columns, types and allowed values: a change is a new major version."""
        schema: dict[str, Any] = {
            "target": self.target.schema(),
            "numeric": [c.schema() for c in self.numeric],
            "categorical": [c.schema() for c in self.categorical],
        }
        if self.task != "regression":  # regression specs keep the digests they always had
            schema["task"] = self.task
        if self.key:  # likewise, specs without a key
            schema["key"] = list(self.key)
        return _digest(schema)

    def processing_fingerprint(self) -> str:
        """Digest of the cleaning and split settings: a change is a new patch version."""
        processing: dict[str, Any] = {
            "split": asdict(self.split),
            "max_null_share": self.max_null_share,
            "max_duplicate_share": self.max_duplicate_share,
        }
        # Only specs that set a column's own limit carry it, so earlier digests stay valid.
        column_limits = {
            c.name: c.max_null_share for c in self._columns() if c.max_null_share is not None
        }
        if column_limits:
            processing["column_max_null_share"] = column_limits
        return _digest(processing)

    def to_dict(self) -> dict[str, Any]:
        def column(c: NumericColumn | CategoricalColumn) -> dict[str, Any]:
            data = asdict(c)
            if isinstance(c, CategoricalColumn):
                data["allowed"] = list(c.allowed)
            if c.max_null_share is None:
                del data["max_null_share"]
            return data

        data = {"task": self.task, **asdict(self)}
        if self.key:
            data["key"] = list(self.key)
        else:
            del data["key"]
        data["target"] = column(self.target)
        data["numeric"] = [column(c) for c in self.numeric]
        data["categorical"] = [column(c) for c in self.categorical]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> DatasetSpec:
        try:
            task = data.get("task", "regression")
            if task not in TASKS:
                raise ValueError(f"task '{task}' is not one of {', '.join(TASKS)}")
            return cls(
                name=str(data["name"]),
                target=_target(data["target"], task),
                numeric=tuple(NumericColumn(**c) for c in data.get("numeric", [])),
                categorical=tuple(_categorical(c) for c in data.get("categorical", [])),
                max_null_share=float(data.get("max_null_share", 0.05)),
                max_duplicate_share=float(data.get("max_duplicate_share", 0.2)),
                split=SplitSpec(**data.get("split", {})),
                key=_key(data.get("key", ())),
            )
        except KeyError as exc:
            raise ValueError(f"dataset spec {source} is malformed: missing key {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"dataset spec {source} is malformed: {exc}") from exc


def _key(value: Any) -> tuple[str, ...]:
    """A spec's ``key``: a column name, or a list of them."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"key must be a column name or a list of them, not {value!r}")
    return tuple(value)


def _target(target: Any, task: str) -> NumericColumn | CategoricalColumn:
    """The target column as ``task`` reads it: numeric, or categorical with its classes."""
    if task == "regression":
        return NumericColumn(**target) if isinstance(target, dict) else NumericColumn(target)
    if not isinstance(target, dict) or "allowed" not in target:
        raise ValueError(
            "a classification target is an object with its classes: "
            '{"name": "...", "allowed": ["class a", "class b"]}'
        )
    return _categorical(target)


def _categorical(column: dict[str, Any]) -> CategoricalColumn:
    return CategoricalColumn(
        name=column["name"],
        allowed=tuple(str(v) for v in column["allowed"]),
        max_null_share=column.get("max_null_share"),
    )


def load_spec(path: str | None) -> DatasetSpec:
    """Load a spec from a JSON file, or return the house-price default when ``path`` is empty."""
    if not path:
        return HOUSE_PRICES
    spec_path = Path(path)
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"dataset spec file {spec_path} does not exist") from exc
    except json.JSONDecodeError as exc:
        raise ValueError(f"dataset spec file {spec_path} is not valid JSON: {exc}") from exc
    return DatasetSpec.from_dict(data, source=str(spec_path))


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


YES_NO = ("yes", "no")

HOUSE_PRICES = DatasetSpec(
    name="house_prices",
    target=NumericColumn("price", min=0),
    numeric=(
        NumericColumn("area", min=100, max=100_000),
        NumericColumn("bedrooms", min=0, max=20, integer=True),
        NumericColumn("bathrooms", min=0, max=10, integer=True),
        NumericColumn("stories", min=1, max=10, integer=True),
        NumericColumn("parking", min=0, max=10, integer=True),
    ),
    categorical=(
        CategoricalColumn("mainroad", YES_NO),
        CategoricalColumn("guestroom", YES_NO),
        CategoricalColumn("basement", YES_NO),
        CategoricalColumn("hotwaterheating", YES_NO),
        CategoricalColumn("airconditioning", YES_NO),
        CategoricalColumn("prefarea", YES_NO),
        CategoricalColumn("furnishingstatus", ("furnished", "semi-furnished", "unfurnished")),
    ),
)
