"""Scoring registered versions on a dataset version's test split: the comparison that
registered_model's gate makes, and that approving a challenger by hand is held to."""

from __future__ import annotations

from typing import Any

from mlops_assets.lib.datasets import dataset_splits
from mlops_assets.ml.estimator import model_input, target_values
from mlops_assets.ml.promotion import Comparison
from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.ml.tasks import answer, score
from mlops_assets.resources.mlflow_registry import MlflowResource
from mlops_assets.resources.object_store import ObjectStoreResource

DATASET_DIGEST_TAG = "mlops.dataset_digest"  # on a registered version: what it was trained on
DATASET_TAG_TAG = "mlops.dataset_tag"


def score_on_test(model: Any, test: Any, spec: DatasetSpec, metric: str) -> float:
    answers = answer(model, model_input(test, spec), spec)
    return score(target_values(test, spec), answers, spec)[metric]


def dataset_label(tag: str, digest: str) -> str:
    """How a dataset version is named in decisions and the history: ``data-v1.0.0
    (1a2b3c4d5e6f)``."""
    return f"{tag or 'untagged'} ({digest[:12]})"


def compare_on_test(
    mlflow: MlflowResource,
    spec: DatasetSpec,
    object_store: ObjectStoreResource,
    metric: str,
    challenger: str,
    champion: str,
) -> Comparison | None:
    """Both versions scored on the test split of the dataset version ``challenger`` was
    trained on, as registered_model compared them; None when ``challenger`` names no dataset
    version (registered elsewhere), so nothing can be compared."""
    tags = mlflow.model_version(challenger).tags
    digest = tags.get(DATASET_DIGEST_TAG, "")
    if not digest:
        return None
    test = dataset_splits(digest, spec, object_store)["test"]
    return Comparison(
        metric=metric,
        challenger_version=challenger,
        challenger_score=score_on_test(mlflow.load_model(challenger), test, spec, metric),
        champion_version=champion,
        champion_score=score_on_test(mlflow.load_model(champion), test, spec, metric),
        dataset=dataset_label(tags.get(DATASET_TAG_TAG, ""), digest),
    )
