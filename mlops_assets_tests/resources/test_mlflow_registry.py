"""MlflowResource helpers that need no tracking server."""

import numpy as np
import pandas as pd
import pytest
from mlflow.types.utils import _infer_schema

from mlops_assets.resources.mlflow_registry import dataset_schema


# MLflow's own inference hints that an integer column ("rooms") cannot hold missing values.
@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer column:UserWarning")
def test_dataset_schema_is_the_schema_mlflow_infers_from_every_value():
    rows = 5_000
    frame = pd.DataFrame(
        {
            "area": np.linspace(1.0, 2.0, rows),
            "rooms": np.arange(rows, dtype="int64"),
            "furnished": pd.Categorical(["yes", "no"] * (rows // 2)),
            "label": ["a", "b"] * (rows // 2),
        }
    )
    # Missing values only far beyond the sampled first rows: the column is not required.
    frame.loc[4_321, "area"] = np.nan
    frame.loc[4_999, "furnished"] = np.nan
    frame.loc[3_000, "label"] = None

    fast = dataset_schema(frame, sample_rows=100)

    assert fast == _infer_schema(frame)
    assert {c.name: c.required for c in fast.inputs} == {
        "area": False,
        "rooms": True,
        "furnished": False,
        "label": False,
    }
