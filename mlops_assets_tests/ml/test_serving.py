"""The served image's recipe and contract, without building anything."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlops_assets.model_server
from mlops_assets.ml.serving import (
    DockerfileNotUnderstood,
    UnexpectedResponse,
    build_fingerprint,
    compare_answers,
    harden_dockerfile,
    invocation_payload,
    parse_answers,
    parse_predictions,
    server_files,
    write_server,
)


def mlflow_dockerfile(tmp_path: Path, base_image: str) -> str:
    """The Dockerfile the installed MLflow writes, so an upstream change shows up here."""
    from mlflow.models.docker_utils import generate_dockerfile

    generate_dockerfile(
        output_dir=str(tmp_path),
        base_image=base_image,
        model_install_steps="COPY model_dir/model /opt/ml/model\n",
        entrypoint="from mlflow.models import container as C; C._serve('local')",
        env_manager="local",
    )
    return (tmp_path / "Dockerfile").read_text()


def test_hardened_dockerfile_serves_without_nginx_as_an_unprivileged_user(tmp_path: Path) -> None:
    original = mlflow_dockerfile(tmp_path, "python:3.11.7-slim")
    assert "nginx" in original  # MLflow installs it for python: bases; we do not need it

    hardened = harden_dockerfile(original, {"org.mlops-assets.model-version": "3"})

    assert "nginx" not in hardened
    lines = hardened.splitlines()
    entrypoint = next(i for i, line in enumerate(lines) if line.startswith("ENTRYPOINT"))
    user = next(i for i, line in enumerate(lines) if line.startswith("USER "))
    assert lines[user] == "USER 10001"
    assert user < entrypoint  # the server process itself runs as that user
    assert "ENV DISABLE_NGINX=true UVICORN_HOST=0.0.0.0" in lines
    assert "EXPOSE 8000" in lines
    assert 'LABEL org.mlops-assets.model-version="3"' in lines
    # The entry point is the project's model server, copied in as it is, and it names the
    # model and version of the labels.
    assert lines[entrypoint] == 'ENTRYPOINT ["python", "-m", "model_server"]'
    assert lines.index("COPY model_server /opt/mlops/model_server") < user
    assert "ENV PYTHONPATH=/opt/mlops" in lines
    # ... every module of the package as it is, and nothing else of the project.
    written = tmp_path / "context"
    write_server(written)
    package = Path(mlops_assets.model_server.__file__).parent
    assert {p.name for p in (written / "model_server").iterdir()} == {
        p.name for p in package.glob("*.py")
    }
    assert server_files()["app.py"] == (package / "app.py").read_text()
    assert (
        'ENV MLOPS_MODEL_NAME="" MLOPS_MODEL_VERSION="3" '
        'MLOPS_TRAFFIC_STORE="/var/lib/mlops/store"' in lines
    )
    # uvicorn's fast loop and parser, pinned, installed before the server's user takes over
    (install,) = [i for i, line in enumerate(lines) if "uvloop==" in line]
    assert lines[install].startswith("RUN python -m pip install --no-cache-dir uvicorn==")
    assert "httptools==" in lines[install]
    assert "boto3==" in lines[install]
    assert "prometheus_client==" in lines[install]
    assert "fastapi-swagger==" in lines[install]
    assert install < user


def test_a_ca_bundle_is_trusted_by_pip_only_when_configured(tmp_path: Path) -> None:
    original = mlflow_dockerfile(tmp_path, "localhost/base:1")
    without = harden_dockerfile(original, {})
    with_bundle = harden_dockerfile(original, {}, ca_bundle=True)

    assert "PIP_CERT" not in without
    lines = with_bundle.splitlines()
    assert lines.index("FROM localhost/base:1") + 1 == lines.index(
        "COPY build-ca.pem /etc/mlops/build-ca.pem"
    )
    # before the first pip install
    assert lines.index("ARG PIP_CERT=/etc/mlops/build-ca.pem") < next(
        i for i, line in enumerate(lines) if "pip install" in line
    )


def test_an_unknown_dockerfile_shape_is_refused() -> None:
    with pytest.raises(DockerfileNotUnderstood, match="one FROM and one ENTRYPOINT"):
        harden_dockerfile("FROM a\nFROM b\nENTRYPOINT x\n", {})


def test_the_fingerprint_changes_with_the_recipe_and_nothing_else() -> None:
    base = build_fingerprint("m", "1", "run", "", "3.17.2")
    assert base == build_fingerprint("m", "1", "run", "", "3.17.2")
    assert base != build_fingerprint("m", "2", "run", "", "3.17.2")
    assert base != build_fingerprint("m", "1", "run", "localhost/base:1", "3.17.2")
    assert base != build_fingerprint("m", "1", "run", "", "3.18.0")


def test_a_change_to_the_code_that_writes_the_image_is_a_new_recipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import mlops_assets.ml.serving as serving

    base = build_fingerprint("m", "1", "run", "", "3.17.2")
    changed = {**server_files(), "app.py": server_files()["app.py"] + "#"}
    monkeypatch.setattr(serving, "server_files", lambda: changed)
    assert build_fingerprint("m", "1", "run", "", "3.17.2") != base


def test_payload_sends_missing_values_as_null_and_numpy_scalars_as_plain_json() -> None:
    frame = pd.DataFrame(
        {"area": [120.0, np.nan], "rooms": np.array([3, 4], dtype="int64"), "city": ["a", None]}
    )
    payload = invocation_payload(frame)
    assert payload == {
        "dataframe_split": {
            "columns": ["area", "rooms", "city"],
            "data": [[120.0, 3, "a"], [None, 4, None]],
        }
    }


def test_predictions_are_read_from_mlflow_responses() -> None:
    assert parse_predictions('{"predictions": [1.5, 2]}') == [1.5, 2.0]
    assert parse_predictions('{"predictions": [[1.5], [2]]}') == [1.5, 2.0]
    with pytest.raises(UnexpectedResponse, match="not JSON"):
        parse_predictions("<html>bad gateway</html>")
    with pytest.raises(UnexpectedResponse, match="no 'predictions' list"):
        parse_predictions('{"error_code": "BAD_REQUEST"}')
    with pytest.raises(UnexpectedResponse, match="not numbers"):
        parse_predictions('{"predictions": ["high"]}')


def values(numbers: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"prediction": numbers})


def test_comparison_tolerates_1e_6_and_names_the_rows_beyond_it() -> None:
    expected = values([100.0, 200.0, 300.0])
    assert compare_answers(values([100.0 + 1e-5, 200.0, 300.0]), expected).matches  # rel. 1e-7
    off = compare_answers(values([100.0, 200.5, 299.0]), expected)
    assert not off.matches
    assert off.mismatched_rows == [2, 3]
    assert off.max_abs_diff == pytest.approx(1.0)
    assert "2 of 3 predictions differ" in off.describe()
    assert "rows 2, 3" in off.describe()


def test_comparison_fails_on_a_missing_prediction_or_nan() -> None:
    short = compare_answers(values([1.0]), values([1.0, 2.0]))
    assert not short.matches
    assert short.describe() == "1 predictions served for 2 rows sent"
    nan = compare_answers(values([1.0, math.nan]), values([1.0, 2.0]))
    assert not nan.matches
    assert nan.mismatched_rows == [2]


def test_a_classifier_answer_matches_on_every_probability_and_the_class() -> None:
    expected = pd.DataFrame(
        {"prediction": ["b", "a"], "probability_a": [0.2, 0.9], "probability_b": [0.8, 0.1]}
    )
    body = '{"predictions": ' + expected.to_json(orient="records") + "}"
    assert parse_answers(body).equals(expected)
    assert parse_answers('{"predictions": [[1.5], [2]]}')["prediction"].tolist() == [1.5, 2.0]
    assert compare_answers(expected.copy(), expected).matches
    moved = expected.assign(probability_a=[0.2, 0.9 + 1e-3])
    assert compare_answers(moved, expected).mismatched_rows == [2]
    relabelled = expected.assign(prediction=["a", "a"])
    assert compare_answers(relabelled, expected).mismatched_rows == [1]
