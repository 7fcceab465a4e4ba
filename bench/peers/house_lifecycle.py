"""The house-price lifecycle's computations, shared by every peer in bench/peers/.

Each peer (ZenML, Kedro with kedro-mlflow, Metaflow) wires these functions as its own docs
recommend: its steps, nodes or flow steps, its own way of passing data between them and its
own MLflow integration. The computations are those of bench/plain_lifecycle.py, plus what the
plain script leaves out and the project does: the data contract (the house-price spec's
columns, ranges and categories) and logging and registering the model in MLflow with an
alias. Whatever a peer spends beyond these functions is the peer's own.

Imports only pandas, numpy, scikit-learn, Evidently (and MLflow in ``register``), so it runs
in each peer's venv.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

CATEGORICAL = [
    "mainroad",
    "guestroom",
    "basement",
    "hotwaterheating",
    "airconditioning",
    "prefarea",
    "furnishingstatus",
]
NUMERIC = ["area", "bedrooms", "bathrooms", "stories", "parking"]
FEATURES = NUMERIC + CATEGORICAL
TARGET = "price"
# The project's house-price spec (mlops_assets/ml/spec.py): each numeric column's range and
# whether it holds whole numbers, each categorical column's categories.
RANGES = {
    "area": (100, 100_000, False),
    "bedrooms": (0, 20, True),
    "bathrooms": (0, 10, True),
    "stories": (1, 10, True),
    "parking": (0, 10, True),
}
YES_NO = ("yes", "no")
CATEGORIES = dict.fromkeys(CATEGORICAL[:-1], YES_NO) | {
    "furnishingstatus": ("furnished", "semi-furnished", "unfurnished")
}
MODEL_NAME = "house-price-regressor"
ALIAS = "champion"


def read_raw(path: str | Path) -> tuple[Any, str]:
    """The CSV as a frame, and the SHA-256 of its bytes (the dataset's version)."""
    import pandas as pd

    raw = Path(path).read_bytes()
    return pd.read_csv(io.BytesIO(raw)), hashlib.sha256(raw).hexdigest()


def validate(frame: Any, source: str = "labelled.csv") -> dict[str, int]:
    """The contract: raises ValueError naming the column, rows and rule; else counts."""
    import pandas as pd

    missing = [c for c in [*FEATURES, TARGET] if c not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}")
    for column, (low, high, integer) in RANGES.items():
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame.index[
            frame[column].notna()
            & (values.isna() | (values < low) | (values > high) | (integer & (values % 1 != 0)))
        ]
        if len(bad):
            raise ValueError(
                f"{source}: column {column!r}, rows {list(bad[:5])}: not a "
                f"{'whole ' if integer else ''}number in [{low}, {high}]"
            )
    for column, allowed in CATEGORIES.items():
        values = frame[column].astype("string").str.strip().str.lower()
        bad = frame.index[values.notna() & ~values.isin(allowed)]
        if len(bad):
            raise ValueError(f"{source}: column {column!r}, rows {list(bad[:5])}: not in {allowed}")
    target = pd.to_numeric(frame[TARGET], errors="coerce")
    bad = frame.index[frame[TARGET].notna() & (target.isna() | (target < 0))]
    if len(bad):
        raise ValueError(f"{source}: column {TARGET!r}, rows {list(bad[:5])}: not a number >= 0")
    return {"rows": len(frame), "missing_target": int(frame[TARGET].isna().sum())}


def clean(frame: Any) -> Any:
    """Normalise categories, drop rows without a target and duplicates."""
    frame = frame.copy()
    for column in CATEGORICAL:
        frame[column] = frame[column].astype("string").str.strip().str.lower()
    return frame.dropna(subset=[TARGET]).drop_duplicates().reset_index(drop=True)


def split(frame: Any) -> dict[str, Any]:
    """Train, validation and test by a hash of the features (stable under appended rows)."""
    import numpy as np
    import pandas as pd

    position = pd.util.hash_pandas_object(frame[FEATURES], index=False) % 1_000_000
    part = np.where(position < 150_000, "test", np.where(position < 300_000, "val", "train"))
    return {name: frame[part == name].reset_index(drop=True) for name in ("train", "val", "test")}


def train(frame: Any) -> Any:
    """The same HistGradientBoosting Pipeline as the project's and the plain script's."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
    categorical = Pipeline(
        [
            ("impute", SimpleImputer(strategy="most_frequent")),
            ("encode", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    model = Pipeline(
        [
            (
                "preprocess",
                ColumnTransformer(
                    [("numeric", numeric, NUMERIC), ("categorical", categorical, CATEGORICAL)]
                ),
            ),
            ("regressor", HistGradientBoostingRegressor(max_iter=200, random_state=0)),
        ]
    )
    return model.fit(frame[FEATURES], frame[TARGET])


def evaluate(model: Any, splits: dict[str, Any]) -> dict[str, float]:
    """RMSE on the validation and test splits."""
    import numpy as np
    from sklearn.metrics import mean_squared_error

    return {
        f"{name}_rmse": float(
            np.sqrt(mean_squared_error(rows[TARGET], model.predict(rows[FEATURES])))
        )
        for name, rows in splits.items()
        if name != "train"
    }


def register(model_uri: str, name: str = MODEL_NAME, alias: str = ALIAS) -> str:
    """Register a logged model and point ``alias`` at the new version; its number."""
    import mlflow
    from mlflow import MlflowClient

    version = mlflow.register_model(model_uri, name)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def read_batch(path: str | Path) -> Any:
    """The day's batch, its categories normalised as in training."""
    import pandas as pd

    batch = pd.read_csv(path)
    for column in CATEGORICAL:
        batch[column] = batch[column].astype("string").str.strip().str.lower().astype(object)
    return batch


def score(model: Any, batch: Any) -> Any:
    """The batch with a ``prediction`` column."""
    batch = batch.copy()
    batch["prediction"] = model.predict(batch[FEATURES])
    return batch


def drift(
    reference: Any, current: Any, html: str | Path, sample_rows: int = 10_000
) -> dict[str, Any]:
    """Evidently's data drift of ``current`` against ``reference``, on samples; its summary."""
    import json

    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    reference = reference.sample(n=min(len(reference), sample_rows), random_state=0)
    current = current.sample(n=min(len(current), sample_rows), random_state=0)
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    as_object = dict.fromkeys(CATEGORICAL, object)
    snapshot = Report([DataDriftPreset(columns=FEATURES)]).run(
        Dataset.from_pandas(current[FEATURES].astype(as_object), data_definition=definition),
        Dataset.from_pandas(reference[FEATURES].astype(as_object), data_definition=definition),
    )
    snapshot.save_html(str(html))
    summary = json.loads(snapshot.json())
    drifted: dict[str, Any] = next(
        (
            m["value"]
            for m in summary["metrics"]
            if m["config"].get("type", "").endswith("DriftedColumnsCount")
        ),
        {},
    )
    return {"drifted_columns": drifted.get("count"), "drifted_share": drifted.get("share")}
