"""Another dataset runs through the whole graph by configuration alone: a spec file and URIs."""

import json

import numpy as np
import pandas as pd

from mlops_assets.ml.sample_data import to_csv_bytes
from mlops_assets_tests.conftest import (
    PARTITION,
    check_evaluations,
    materialized,
    stored_predictions,
)

BIKE_SPEC = {
    "name": "bike_rentals",
    "target": {"name": "rentals", "min": 0},
    "numeric": [
        {"name": "temperature", "min": -30, "max": 50},
        {"name": "humidity", "min": 0, "max": 100},
        {"name": "hour", "min": 0, "max": 23, "integer": True},
    ],
    "categorical": [
        {"name": "season", "allowed": ["winter", "spring", "summer", "autumn"]},
        {"name": "holiday", "allowed": ["yes", "no"]},
    ],
}


def bike_rows(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    season = rng.choice(["Winter", "spring", "SUMMER ", "autumn"], rows)  # messy case on purpose
    temperature = rng.normal(15, 8, rows).round(1)
    humidity = rng.uniform(20, 95, rows).round()
    hour = rng.integers(0, 24, rows)
    holiday = rng.choice(["yes", "no"], rows, p=[0.05, 0.95])
    peak = np.where((hour >= 7) & (hour <= 9) | (hour >= 16) & (hour <= 18), 120, 0)
    rentals = np.clip(
        40
        + 6 * temperature
        - 0.4 * humidity
        + peak
        - 30 * (holiday == "yes")
        + rng.normal(0, 12, rows),
        0,
        None,
    ).round()
    return pd.DataFrame(
        {
            "season": season,
            "temperature": temperature,
            "humidity": humidity,
            "hour": hour,
            "holiday": holiday,
            "rentals": rentals,
        }
    )


def test_bike_rentals_by_configuration_only(lifecycle, monkeypatch, tmp_path):
    spec = tmp_path / "bike_rentals.json"
    spec.write_text(json.dumps(BIKE_SPEC))
    (tmp_path / "labelled.csv").write_bytes(to_csv_bytes(bike_rows(1500, 1)))
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / f"{PARTITION}.csv").write_bytes(to_csv_bytes(bike_rows(300, 2)))
    monkeypatch.setenv("MLOPS_DATASET_SPEC", str(spec))
    monkeypatch.setenv("MLOPS_SOURCE_URI", str(tmp_path / "labelled.csv"))
    monkeypatch.setenv("MLOPS_INCOMING_URI", str(incoming / "{date}.csv"))
    monkeypatch.setenv("MLOPS_MODEL_NAME", "bike-rentals")
    monkeypatch.setenv("MLOPS_EXPERIMENT", "bikes")

    result = lifecycle.run()

    assert result.success
    assert all(e.passed for e in check_evaluations(result).values())
    assert materialized(result)["versioned_dataset"]["tag"].value == "data-v1.0.0"
    assert (lifecycle.home / "store/datasets/bike_rentals/refs/latest.json").exists()
    scored = pd.read_parquet(stored_predictions(lifecycle.home, "bike-rentals")[-1])
    assert len(scored) == 300
    assert set(scored["season"].astype(str)) <= {"winter", "spring", "summer", "autumn"}
