"""Dataset specification: what a tabular regression dataset must look like.

A spec is plain data (JSON-serialisable) so another dataset can be used by
configuration alone: point ``MLOPS_DATASET_SPEC`` at a JSON file of the same
shape as :data:`HOUSE_PRICES` and ``MLOPS_SOURCE_URI`` at the data.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class NumericColumn:
    name: str
    min: float | None = None
    max: float | None = None
    integer: bool = False


@dataclass(frozen=True)
class CategoricalColumn:
    name: str
    allowed: tuple[str, ...]


@dataclass(frozen=True)
class SplitSpec:
    """Fractions of rows for validation and test; the rest is train."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 42
    min_rows_per_split: int = 5


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    target: NumericColumn
    numeric: tuple[NumericColumn, ...]
    categorical: tuple[CategoricalColumn, ...]
    max_null_share: float = 0.05
    max_duplicate_share: float = 0.2
    split: SplitSpec = field(default_factory=SplitSpec)

    def __post_init__(self) -> None:
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

    def schema_fingerprint(self) -> str:
        """Digest of the columns, types and allowed values: a change is a new major version."""
        schema = {
            "target": asdict(self.target),
            "numeric": [asdict(c) for c in self.numeric],
            "categorical": [
                {"name": c.name, "allowed": sorted(c.allowed)} for c in self.categorical
            ],
        }
        return _digest(schema)

    def processing_fingerprint(self) -> str:
        """Digest of the cleaning and split settings: a change is a new patch version."""
        return _digest(
            {
                "split": asdict(self.split),
                "max_null_share": self.max_null_share,
                "max_duplicate_share": self.max_duplicate_share,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["numeric"] = [asdict(c) for c in self.numeric]
        data["categorical"] = [
            {"name": c.name, "allowed": list(c.allowed)} for c in self.categorical
        ]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> DatasetSpec:
        try:
            target = data["target"]
            return cls(
                name=str(data["name"]),
                target=NumericColumn(**target)
                if isinstance(target, dict)
                else NumericColumn(target),
                numeric=tuple(NumericColumn(**c) for c in data.get("numeric", [])),
                categorical=tuple(
                    CategoricalColumn(name=c["name"], allowed=tuple(str(v) for v in c["allowed"]))
                    for c in data.get("categorical", [])
                ),
                max_null_share=float(data.get("max_null_share", 0.05)),
                max_duplicate_share=float(data.get("max_duplicate_share", 0.2)),
                split=SplitSpec(**data.get("split", {})),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"dataset spec {source} is malformed: {exc!r}") from exc


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
