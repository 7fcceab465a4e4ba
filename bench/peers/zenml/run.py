"""The house-price lifecycle as a ZenML pipeline of steps (ZenML's local orchestrator).

Data passes between steps as ZenML artifacts (DataFrames stored as Parquet by ZenML's pandas
materializer, the model pickled by its sklearn materializer). MLflow logging runs in steps
given the stack's MLflow experiment tracker; registration is ZenML's built-in
``mlflow_register_model_step`` and the alias is set through the stack's MLflow model registry.
The stack (tracker ``mlflow_tracker``, registry ``mlflow_registry``) is registered once by
peer.json's ``setup``. The computations are house_lifecycle's.
"""

from pathlib import Path
from typing import Annotated

import mlflow
import pandas as pd
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline
from zenml import get_step_context, pipeline, step
from zenml.client import Client
from zenml.integrations.mlflow.steps.mlflow_registry import mlflow_register_model_step
from zenml.model_registries.base_model_registry import (
    ModelRegistryModelMetadata,
    ModelVersionStage,
)

import house_lifecycle as hl

TRACKER = "mlflow_tracker"
# MLflow 3 saves sklearn models with skops, which loads only the types it is told to trust.
TRUSTED_TYPES = ["numpy.dtype", "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]


@step
def load_labelled() -> tuple[Annotated[pd.DataFrame, "raw"], Annotated[str, "dataset_sha256"]]:
    frame, sha256 = hl.read_raw("data/labelled.csv")
    return frame, sha256  # a tuple literal: ZenML's sign of two outputs


@step
def validate_labelled(raw: pd.DataFrame) -> Annotated[dict, "contract_counts"]:
    # No built-in data contract in ZenML: the shared check raises and so fails the step.
    return hl.validate(raw)


@step
def clean_labelled(raw: pd.DataFrame) -> Annotated[pd.DataFrame, "cleaned"]:
    return hl.clean(raw)


@step
def split_labelled(
    cleaned: pd.DataFrame,
) -> tuple[
    Annotated[pd.DataFrame, "train"],
    Annotated[pd.DataFrame, "val"],
    Annotated[pd.DataFrame, "test"],
]:
    splits = hl.split(cleaned)
    return splits["train"], splits["val"], splits["test"]


@step(experiment_tracker=TRACKER)
def train_model(train: pd.DataFrame, dataset_sha256: str) -> Annotated[Pipeline, "model"]:
    model = hl.train(train)
    example = train[hl.FEATURES].head(100)
    mlflow.log_params({"max_iter": 200, "train_rows": len(train), "dataset_sha256": dataset_sha256})
    mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, model.predict(example)),
        skops_trusted_types=TRUSTED_TYPES,
    )
    return model


@step(experiment_tracker=TRACKER)
def evaluate_model(
    model: Pipeline, val: pd.DataFrame, test: pd.DataFrame
) -> Annotated[dict, "metrics"]:
    metrics = hl.evaluate(model, {"val": val, "test": test})
    mlflow.log_metrics(metrics)
    return metrics


@step
def promote_champion() -> Annotated[str, "champion_version"]:
    """Point the alias at the version this run registered (the built-in step sets none)."""
    registry = Client().active_stack.model_registry
    run = ModelRegistryModelMetadata(
        zenml_pipeline_run_uuid=str(get_step_context().pipeline_run.id)
    )
    version = registry.list_model_versions(name=hl.MODEL_NAME, metadata=run)[0].version
    # With MLflow 3, ZenML's MLflow registry sets the alias "champion" for PRODUCTION.
    registry.update_model_version(hl.MODEL_NAME, version, stage=ModelVersionStage.PRODUCTION)
    return version


@step
def score_batch(model: Pipeline) -> Annotated[pd.DataFrame, "predictions"]:
    predictions = hl.score(model, hl.read_batch("data/batch.csv"))
    Path("out").mkdir(exist_ok=True)
    predictions.to_parquet("out/predictions.parquet")
    return predictions


@step
def drift_report(train: pd.DataFrame, predictions: pd.DataFrame) -> Annotated[dict, "drift"]:
    Path("out").mkdir(exist_ok=True)
    return hl.drift(train, predictions, "out/drift.html")


# No caching: steps read data/*.csv by path, which ZenML's cache key does not cover.
@pipeline(enable_cache=False)
def house_price_lifecycle() -> None:
    raw, dataset_sha256 = load_labelled()
    validate_labelled(raw)
    cleaned = clean_labelled(raw, after="validate_labelled")
    train, val, test = split_labelled(cleaned)
    model = train_model(train, dataset_sha256)
    evaluate_model(model, val, test)
    mlflow_register_model_step(model=model, name=hl.MODEL_NAME, after="evaluate_model")
    promote_champion(after="mlflow_register_model_step")
    predictions = score_batch(model, after="promote_champion")
    drift_report(train, predictions)


if __name__ == "__main__":
    house_price_lifecycle()
