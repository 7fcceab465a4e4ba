"""The served image's recipe and contract, without building anything."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_assets.ml.serving import (
    DockerfileNotUnderstood,
    UnexpectedResponse,
    build_fingerprint,
    cgroup_cpu_max,
    compare_answers,
    container_cpus,
    harden_dockerfile,
    invocation_payload,
    parse_answers,
    parse_predictions,
    serve_script,
    server_sizing,
)


def mlflow_dockerfile(
    tmp_path: Path,
    base_image: str,
    entrypoint: str = "from mlflow.models import container as C; C._serve('local')",
) -> str:
    """The Dockerfile the installed MLflow writes, so an upstream change shows up here."""
    from mlflow.models.docker_utils import generate_dockerfile

    generate_dockerfile(
        output_dir=str(tmp_path),
        base_image=base_image,
        model_install_steps="COPY model_dir/model /opt/ml/model\n",
        entrypoint=entrypoint,
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
    # MLflow's entry point runs from a script that sizes the server to the container's CPUs
    assert lines[entrypoint] == 'ENTRYPOINT ["python", "/opt/mlops/serve.py"]'
    assert lines.index("COPY mlops-serve.py /opt/mlops/serve.py") < user
    assert "C._serve('local')" in serve_script(original)
    # uvicorn's fast loop and parser, pinned, installed before the server's user takes over
    (install,) = [i for i, line in enumerate(lines) if "uvloop==" in line]
    assert lines[install].startswith("RUN python -m pip install --no-cache-dir uvloop==")
    assert "httptools==" in lines[install]
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
    import inspect

    import mlops_assets.ml.serving as serving

    base = build_fingerprint("m", "1", "run", "", "3.17.2")
    source = inspect.getsource
    monkeypatch.setattr(
        inspect,
        "getsource",
        lambda f: source(f) + ("# changed" if f is serving.server_sizing else ""),
    )
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


def test_workers_and_their_threads_follow_the_containers_cpu_limit() -> None:
    assert container_cpus("200000 100000\n", usable_cpus=64) == 2
    assert container_cpus("150000 100000", usable_cpus=64) == 2  # 1.5 CPUs: round up
    assert container_cpus("50000 100000", usable_cpus=64) == 1  # below one CPU: one
    assert container_cpus("800000 100000", usable_cpus=2) == 2  # never more than it may use
    assert container_cpus("max 100000", usable_cpus=4) == 4  # no limit: the usable CPUs
    assert container_cpus(None, usable_cpus=3) == 3  # no cgroup file
    assert container_cpus(None, usable_cpus=0) == 1

    assert server_sizing(4, None) == (4, 1)  # a worker per CPU, a thread each
    assert server_sizing(4, "1") == (1, 4)  # one worker given: it may use every CPU
    assert server_sizing(4, "3") == (3, 1)
    assert server_sizing(1, "2") == (2, 1)


def test_the_entry_point_sizes_the_server_unless_told(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    # MLflow's entry point would start the server; this one says how it would be sized.
    dockerfile = mlflow_dockerfile(
        tmp_path,
        "localhost/base:1",
        "import os; print(os.environ['MLFLOW_MODELS_WORKERS'], os.environ['OMP_NUM_THREADS'])",
    )
    script = tmp_path / "serve.py"
    script.write_text(serve_script(dockerfile))
    cpus = container_cpus(cgroup_cpu_max(), len(os.sched_getaffinity(0)))
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_MODELS_WORKERS", "OMP_NUM_THREADS")
    }

    def run(**extra: str) -> str:
        return subprocess.run(
            [sys.executable, str(script)],
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    assert run() == f"{cpus} 1"
    assert run(MLFLOW_MODELS_WORKERS="1") == f"1 {cpus}"
    assert run(MLFLOW_MODELS_WORKERS="3", OMP_NUM_THREADS="2") == "3 2"
