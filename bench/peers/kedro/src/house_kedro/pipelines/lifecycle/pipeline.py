"""Nodes in the lifecycle's order; Kedro runs them by their data dependencies."""

from kedro.pipeline import Node, Pipeline

import house_lifecycle as hl

from . import nodes


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            # 1-2: read and hash; the catalog validates `raw` on save (the contract).
            Node(hl.read_raw, "params:labelled_path", ["raw", "dataset_sha256"], name="read_raw"),
            Node(hl.clean, "raw", "cleaned", name="clean"),
            # 4-5: the splits are ParquetDatasets (out/<split>.parquet).
            Node(hl.split, "cleaned", {s: s for s in ("train", "val", "test")}, name="split"),
            # 6-7: the model is logged by kedro-mlflow's MlflowModelTrackingDataset.
            Node(hl.train, "train", "regressor", name="train"),
            Node(
                nodes.evaluate,
                ["regressor", "val", "test"],
                {"val_rmse": "val_rmse", "test_rmse": "test_rmse"},
                name="evaluate",
            ),
            Node(
                nodes.register,
                ["regressor", "train", "params:model_name", "params:alias"],
                "champion_version",
                name="register",
            ),
            # 8-9: predictions is a ParquetDataset (out/predictions.parquet).
            Node(
                nodes.score,
                ["regressor", "params:batch_path", "champion_version"],
                "predictions",
                name="score",
            ),
            Node(
                hl.drift,
                ["train", "predictions", "params:drift_html"],
                {"drifted_columns": "drifted_columns", "drifted_share": "drifted_share"},
                name="drift",
            ),
        ]
    )
