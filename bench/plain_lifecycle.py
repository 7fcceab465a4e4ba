"""The yardstick for bench/cold_lifecycle.py: the lifecycle's computations as a plain script
a data scientist would write, with no project code, no Dagster and no checks. Its columns,
Pipeline, evaluation and reading of the batch are bench/peers/house_lifecycle.py's, the
module every peer's lifecycle calls too: the plain script and the peers train and score alike
by construction.

Read the labelled CSV and hash it, clean (normalise categories, drop duplicates and rows
without a target), split by a hash of the features, write the splits as Parquet, fit the
same HistGradientBoosting Pipeline, save it with skops and load it back (no tracking server
or registry: the yardstick is the computation), score the day's batch and write it as
Parquet, and an Evidently drift report of the batch against a sample of the train split
(HTML and JSON).

    .venv/bin/python bench/plain_lifecycle.py LABELLED.csv BATCH.csv OUT_DIR
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "peers"))

from house_lifecycle import CATEGORICAL, FEATURES, NUMERIC, TARGET, evaluate, read_batch
from house_lifecycle import train as train_pipeline

TRUSTED = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.compose._column_transformer._RemainderColsList",
    "numpy.dtype",
]


def main(labelled: Path, batch_path: Path, out: Path) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import pandas as pd
    import skops.io
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    out.mkdir(parents=True, exist_ok=True)
    raw = labelled.read_bytes()
    (out / f"raw-{hashlib.sha256(raw).hexdigest()[:16]}.csv").write_bytes(raw)
    frame = pd.read_csv(io.BytesIO(raw))
    for column in CATEGORICAL:
        frame[column] = frame[column].astype("string").str.strip().str.lower()
    frame = frame.dropna(subset=[TARGET]).drop_duplicates().reset_index(drop=True)
    position = pd.util.hash_pandas_object(frame[FEATURES], index=False) % 1_000_000
    part = np.where(position < 150_000, "test", np.where(position < 300_000, "val", "train"))
    splits = {name: frame[part == name] for name in ("train", "val", "test")}
    for name, rows in splits.items():
        rows.to_parquet(out / f"{name}.parquet")

    train = splits["train"]
    model = train_pipeline(train)
    rmse = evaluate(model, splits)

    skops.io.dump(model, out / "model.skops")
    served = skops.io.load(out / "model.skops", trusted=TRUSTED)

    batch = read_batch(batch_path)
    batch["prediction"] = served.predict(batch[FEATURES])
    batch.to_parquet(out / "predictions.parquet")

    reference = train.sample(n=min(len(train), 10_000), random_state=0)
    current = batch.sample(n=min(len(batch), 10_000), random_state=0)
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset(columns=FEATURES)]).run(
        Dataset.from_pandas(
            current[FEATURES].astype(dict.fromkeys(CATEGORICAL, object)), data_definition=definition
        ),
        Dataset.from_pandas(
            reference[FEATURES].astype(dict.fromkeys(CATEGORICAL, object)),
            data_definition=definition,
        ),
    )
    snapshot.save_html(str(out / "drift.html"))
    (out / "drift.json").write_text(snapshot.json())
    print(f"test rmse {rmse['test_rmse']:.1f}, {len(batch)} scored")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
