"""Reading published dataset versions from an asset: the one place where a version that a
model or a run names, but the store lacks, becomes a Failure (no retry can bring it back)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from dagster import Failure

from mlops_assets.ml.dataset_store import DatasetStore, DatasetVersionMissing
from mlops_assets.ml.spec import DatasetSpec
from mlops_assets.resources.object_store import ObjectStoreResource


def dataset_manifest(
    digest: str, spec: DatasetSpec, object_store: ObjectStoreResource
) -> dict[str, Any]:
    try:
        return DatasetStore(object_store, spec.name).require_manifest(digest)
    except DatasetVersionMissing as exc:
        raise Failure(allow_retries=False, description=str(exc)) from exc


def dataset_splits(
    digest: str, spec: DatasetSpec, object_store: ObjectStoreResource
) -> dict[str, pd.DataFrame]:
    manifest = dataset_manifest(digest, spec, object_store)
    return DatasetStore(object_store, spec.name).load_splits(manifest)
