"""The few functions that adapt house_lifecycle to Kedro's nodes and catalog; the other nodes
call house_lifecycle's functions directly."""

import mlflow
from mlflow.models import infer_signature, set_signature

import house_lifecycle as hl


def contract(frame) -> None:
    """The catalog validator of ``raw``: raises on a breach (Kedro takes a returned value for
    the data, so the counts are dropped)."""
    hl.validate(frame, "data/labelled.csv")


def evaluate(model, val, test) -> dict[str, float]:
    return hl.evaluate(model, {"val": val, "test": test})


def register(model, train, name: str, alias: str) -> str:
    """Give the model just logged by the ``regressor`` dataset the signature inferred from the
    train features (the dataset takes none from data), register it and set the alias."""
    model_uri = mlflow.last_logged_model().model_uri
    example = train[hl.FEATURES].head(5)
    set_signature(model_uri, infer_signature(example, model.predict(example)))
    return hl.register(model_uri, name, alias)


def score(model, batch_path: str, champion_version: str):
    """Read and score the day's batch. ``champion_version`` only orders this node after the
    registration: Kedro orders nodes by their data alone."""
    return hl.score(model, hl.read_batch(batch_path))
