"""The model server's fixtures: a real MLflow model of scikit-learn's diabetes data, the app
copied alone as the image copies it, and servers started from it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.ml.serving import write_server
from mlops_assets_tests.model_server.served import Served


@pytest.fixture(scope="module")
def diabetes_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow model (signature and input example) of a scikit-learn pipeline fitted on
    scikit-learn's diabetes data."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_diabetes(as_frame=True)
    model = make_pipeline(StandardScaler(), Ridge()).fit(data.data, data.target)
    path = tmp_path_factory.mktemp("served") / "model"
    signature = infer_signature(data.data, model.predict(data.data))
    mlflow.sklearn.save_model(model, path, signature=signature, input_example=data.data.head(2))
    return path


@pytest.fixture(scope="module")
def server_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the app as the image build copies it: the package ``model_server``."""
    folder = tmp_path_factory.mktemp("image-app")
    write_server(folder)
    return folder


@pytest.fixture
def serve(diabetes_model: Path, server_folder: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(**env: str) -> Served:
        served = Served(diabetes_model, tmp_path, env, server_folder)
        started.append(served)
        served.start()
        return served

    yield start
    for served in started:
        served.process.stop()
