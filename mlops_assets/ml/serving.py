"""The served model's image and its contract, in plain Python.

MLflow writes the Dockerfile (``mlflow.pyfunc.backend.PyFuncBackend.generate_dockerfile``);
this module makes it fit to deploy (no nginx, no root, listening on all interfaces), names
what makes a build unique, and states what a correct answer from the container is.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import mlops_assets.model_server
from mlops_assets.model_server.batching import announced_batches
from mlops_assets.model_server.settings import (
    DEFAULT_STORE,
    SERVING_PORT,
    serving_batch,
    serving_protocol,
)

__all__ = ["SERVING_PORT", "announced_batches", "serving_batch", "serving_protocol"]
SERVING_UID = 10001
CA_BUNDLE_IN_CONTEXT = "build-ca.pem"
CA_BUNDLE_IN_IMAGE = "/etc/mlops/build-ca.pem"
# The served model's application (mlops_assets.model_server), copied into the image as the
# package ``model_server`` in a folder on its PYTHONPATH, and started with ``python -m``.
SERVER_PACKAGE = "model_server"
SERVER_IN_CONTEXT = SERVER_PACKAGE
SERVER_PATH_IN_IMAGE = "/opt/mlops"
TRAFFIC_STORE_IN_IMAGE = DEFAULT_STORE  # the traffic log's default store
LABEL_PREFIX = "org.mlops-assets"
# uvicorn's own fast event loop and HTTP parser (uvicorn[standard]), which MLflow's image leaves
# out: without them uvicorn serves on h11 and asyncio, and a single-row request on a
# keep-alive connection took 56 ms instead of 11 (bench/serving.py).
# uvicorn itself pinned, boto3 for the traffic log's S3 client, prometheus_client for /metrics
# and fastapi-swagger's copy of Swagger UI for /docs (mlops_assets/model_server).
SERVER_PACKAGES = (
    "uvicorn",
    "uvloop",
    "httptools",
    "boto3",
    "prometheus_client",
    "fastapi-swagger",
)

_NGINX_INSTALL = re.compile(r"^RUN apt-get .*install .*\bnginx\b.*$", re.MULTILINE)
_FROM = re.compile(r"^FROM \S+.*$", re.MULTILINE)
_ENTRYPOINT_LINE = re.compile(r"^ENTRYPOINT .*$", re.MULTILINE)


class DockerfileNotUnderstood(ValueError):
    """MLflow wrote a Dockerfile of a shape this recipe does not know."""


def harden_dockerfile(
    text: str, labels: Mapping[str, str], uid: int = SERVING_UID, ca_bundle: bool = False
) -> str:
    """MLflow's Dockerfile, changed to serve as a deployable image.

    - the scoring server (uvicorn) listens on 0.0.0.0:8000 itself; nginx is neither
      installed nor started, so nothing needs root;
    - the server runs as an unprivileged system user ``uid``;
    - ``labels`` (model name, version, run) are set as OCI labels;
    - with ``ca_bundle`` the build context's ``build-ca.pem`` is copied in and pip trusts it
      during the build (for networks that intercept TLS). It holds public certificates only;
    - the entry point is :mod:`mlops_assets.model_server` (:func:`server_files`, copied in
      from the build context as the package ``model_server``): MLflow's scoring function behind
      FastAPI, one worker per CPU the container may use, and the traffic log, which names the
      model and version of the labels and writes to :data:`TRAFFIC_STORE_IN_IMAGE` unless
      MLOPS_TRAFFIC_STORE says otherwise;
    - uvicorn, its fast event loop and HTTP parser, and boto3 (:data:`SERVER_PACKAGES`) are
      pinned to the versions installed here.
    """
    _expect_mlflow_shape(text)
    text = _NGINX_INSTALL.sub("", text)
    if ca_bundle:
        text = _FROM.sub(
            lambda m: (
                f"{m.group(0)}\nCOPY {CA_BUNDLE_IN_CONTEXT} {CA_BUNDLE_IN_IMAGE}\n"
                f"ARG PIP_CERT={CA_BUNDLE_IN_IMAGE}"
            ),
            text,
        )
    label_lines = "".join(
        f"LABEL {key}={json.dumps(value)}\n" for key, value in sorted(labels.items())
    )
    served = {
        "MLOPS_MODEL_NAME": labels.get(f"{LABEL_PREFIX}.model-name", ""),
        "MLOPS_MODEL_VERSION": labels.get(f"{LABEL_PREFIX}.model-version", ""),
        "MLOPS_TRAFFIC_STORE": TRAFFIC_STORE_IN_IMAGE,
    }
    served_env = " ".join(f"{key}={json.dumps(value)}" for key, value in served.items())
    serving = (
        f"RUN python -m pip install --no-cache-dir {' '.join(pinned(SERVER_PACKAGES))}\n"
        "ENV DISABLE_NGINX=true UVICORN_HOST=0.0.0.0\n"
        f"ENV {served_env}\n"
        f"RUN useradd --system --uid {uid} --home-dir /opt/mlflow --no-create-home mlserve"
        f" && mkdir -p {TRAFFIC_STORE_IN_IMAGE} && chown {uid} {TRAFFIC_STORE_IN_IMAGE}\n"
        f"COPY {SERVER_IN_CONTEXT} {SERVER_PATH_IN_IMAGE}/{SERVER_PACKAGE}\n"
        f"ENV PYTHONPATH={SERVER_PATH_IN_IMAGE}\n"
        f"USER {uid}\n"
        f"EXPOSE {SERVING_PORT}\n"
        f"{label_lines}"
        f"ENTRYPOINT {json.dumps(['python', '-m', SERVER_PACKAGE])}"
    )
    return _ENTRYPOINT_LINE.sub(lambda m: serving, text)


def pinned(distributions: Iterable[str]) -> list[str]:
    """``name==version`` of each distribution as installed here: what a served image
    installs, so it serves with the versions the model was built and tested with."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in distributions]


def _expect_mlflow_shape(dockerfile: str) -> None:
    """Refuse a Dockerfile that is not of the shape MLflow writes: one FROM, and one
    ``ENTRYPOINT ["python", "-c", code]``, which the hardened image replaces."""
    lines = _ENTRYPOINT_LINE.findall(dockerfile)
    if len(_FROM.findall(dockerfile)) != 1 or len(lines) != 1:
        raise DockerfileNotUnderstood(
            "expected exactly one FROM and one ENTRYPOINT in MLflow's Dockerfile; "
            f"got:\n{dockerfile}"
        )
    try:
        command = json.loads(lines[0].removeprefix("ENTRYPOINT "))
    except json.JSONDecodeError:
        command = None
    if not (isinstance(command, list) and len(command) == 3 and command[:2] == ["python", "-c"]):
        raise DockerfileNotUnderstood(
            f'expected MLflow\'s ENTRYPOINT ["python", "-c", code]; got: {lines[0]}'
        )


def server_files() -> dict[str, str]:
    """The served image's application, :mod:`mlops_assets.model_server` as it is: each module's
    text by its path in the package."""
    root = Path(mlops_assets.model_server.__file__).parent
    return {path.name: path.read_text() for path in sorted(root.glob("*.py"))}


def write_server(build_context: Path) -> None:
    """Put the application (:func:`server_files`) in ``build_context``, where the Dockerfile
    copies it from."""
    folder = build_context / SERVER_IN_CONTEXT
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in server_files().items():
        (folder / name).write_text(text)


def recipe_digest() -> str:
    """The digest of the code that writes the image (Dockerfile and entry point): a change
    to it is a new recipe, so every image is built again once, with no version to bump."""
    writers = (harden_dockerfile, pinned, _expect_mlflow_shape)
    server = "".join(f"{name}\n{text}" for name, text in server_files().items())
    source = "".join(inspect.getsource(writer) for writer in writers) + server
    return hashlib.sha256(source.encode()).hexdigest()


def build_fingerprint(
    model_name: str,
    version: str,
    run_id: str,
    base_image: str,
    mlflow_version: str,
) -> str:
    """What makes one image differ from another: an unchanged champion builds nothing new."""
    recipe = {
        "model_name": model_name,
        "version": version,
        "run_id": run_id,
        "base_image": base_image,
        "mlflow": mlflow_version,
        "server": pinned(SERVER_PACKAGES),
        "recipe": recipe_digest(),
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def invocation_payload(frame: pd.DataFrame) -> dict[str, Any]:
    """The /invocations request body for ``frame`` (MLflow's ``dataframe_split`` format).

    Missing values travel as JSON null; the server's schema enforcement restores NaN for
    numeric columns and None for strings, as in process.
    """
    rows = [
        [None if _missing(value) else _plain(value) for value in row]
        for row in frame.itertuples(index=False, name=None)
    ]
    return {"dataframe_split": {"columns": list(frame.columns), "data": rows}}


def v2_payload(frame: pd.DataFrame, request_id: str | None = None) -> dict[str, Any]:
    """The Open Inference Protocol (V2) request for ``frame``: one input tensor per column, of
    shape [rows] (BOOL, INT64, FP64, or BYTES for text); missing values as JSON null."""
    inputs = []
    for name in frame.columns:
        column = frame[name]
        if pd.api.types.is_bool_dtype(column):
            datatype = "BOOL"
        elif pd.api.types.is_integer_dtype(column):
            datatype = "INT64"
        elif pd.api.types.is_numeric_dtype(column):
            datatype = "FP64"
        else:
            datatype = "BYTES"
        data = [None if _missing(v) else _plain(v) for v in column.tolist()]
        if datatype == "BYTES":
            data = [None if v is None else str(v) for v in data]
        inputs.append(
            {"name": str(name), "datatype": datatype, "shape": [len(frame)], "data": data}
        )
    return {"inputs": inputs, **({"id": request_id} if request_id else {})}


def parse_v2_answers(body: str) -> pd.DataFrame:
    """The output tensors of a V2 inference response as a frame (one column per output)."""
    try:
        document = json.loads(body)
    except json.JSONDecodeError as exc:
        raise UnexpectedResponse(f"response is not JSON ({exc}): {body[:500]!r}") from None
    outputs = document.get("outputs") if isinstance(document, dict) else None
    if not isinstance(outputs, list) or not outputs:
        raise UnexpectedResponse(f"response has no 'outputs' list: {body[:500]!r}")
    try:
        return pd.DataFrame({str(o["name"]): list(o["data"]) for o in outputs})
    except (KeyError, TypeError, ValueError) as exc:
        raise UnexpectedResponse(f"outputs are not columns ({exc}): {body[:500]!r}") from None


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class UnexpectedResponse(ValueError):
    """The server's answer is not a list of predictions."""


def _predictions(body: str) -> list[Any]:
    """The ``predictions`` list of an /invocations response body."""
    try:
        document = json.loads(body)
    except json.JSONDecodeError as exc:
        raise UnexpectedResponse(f"response is not JSON ({exc}): {body[:500]!r}") from None
    predictions = document.get("predictions") if isinstance(document, dict) else None
    if not isinstance(predictions, list):
        raise UnexpectedResponse(f"response has no 'predictions' list: {body[:500]!r}")
    return predictions


def _numbers(predictions: list[Any], body: str) -> list[float]:
    try:
        return [float(p[0] if isinstance(p, list) else p) for p in predictions]
    except (TypeError, ValueError, IndexError) as exc:
        raise UnexpectedResponse(f"predictions are not numbers ({exc}): {body[:500]!r}") from None


def parse_predictions(body: str) -> list[float]:
    """The predictions in an /invocations response body (``{"predictions": [...]}``), one
    number per row."""
    return _numbers(_predictions(body), body)


def parse_answers(body: str) -> pd.DataFrame:
    """The answers in an /invocations response body: a classifier's records (its class and
    one probability per class, by name) as a frame; a regressor's numbers as ``prediction``."""
    predictions = _predictions(body)
    if predictions and isinstance(predictions[0], dict):
        return pd.DataFrame.from_records(predictions)
    return pd.DataFrame({"prediction": _numbers(predictions, body)})


@dataclass(frozen=True)
class PredictionComparison:
    rows: int
    served_rows: int
    mismatched_rows: list[int]
    max_abs_diff: float

    @property
    def matches(self) -> bool:
        return self.rows == self.served_rows and not self.mismatched_rows

    def describe(self) -> str:
        if self.rows != self.served_rows:
            return f"{self.served_rows} predictions served for {self.rows} rows sent"
        if self.mismatched_rows:
            shown = ", ".join(str(r) for r in self.mismatched_rows[:10])
            return (
                f"{len(self.mismatched_rows)} of {self.rows} predictions differ from in-process "
                f"predictions beyond tolerance (rows {shown}); max abs diff {self.max_abs_diff:.3g}"
            )
        return (
            f"{self.rows} predictions match in-process predictions "
            f"(max abs diff {self.max_abs_diff:.3g})"
        )


def compare_answers(
    served: pd.DataFrame, expected: pd.DataFrame, tolerance: float = 1e-6
) -> PredictionComparison:
    """Served vs in-process answers (``mlops_assets.ml.tasks.answer_frame`` frames): every
    number equal within ``tolerance`` and, for a classifier, the same class in every row."""
    if len(served) != len(expected):
        return PredictionComparison(len(expected), len(served), [], math.inf)
    numeric = [c for c in expected.columns if pd.api.types.is_numeric_dtype(expected[c])]
    labels = [c for c in expected.columns if c not in numeric]
    got = served[numeric].to_numpy(dtype=float)
    want = expected[numeric].to_numpy(dtype=float)
    close = np.isclose(got, want, rtol=tolerance, atol=tolerance).all(axis=1)
    for column in labels:
        close &= served[column].to_numpy() == expected[column].to_numpy()
    diff = np.abs(got - want)
    max_diff = math.inf if np.isnan(diff).any() else float(diff.max()) if diff.size else 0.0
    return PredictionComparison(
        rows=len(expected),
        served_rows=len(served),
        mismatched_rows=[int(i) + 1 for i in np.flatnonzero(~close)],
        max_abs_diff=max_diff,
    )
