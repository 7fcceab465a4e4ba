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
from typing import Any

import numpy as np
import pandas as pd

SERVING_PORT = 8000  # MLflow's inference server port when nginx is off
SERVING_UID = 10001
CA_BUNDLE_IN_CONTEXT = "build-ca.pem"
CA_BUNDLE_IN_IMAGE = "/etc/mlops/build-ca.pem"
SERVE_SCRIPT_IN_CONTEXT = "mlops-serve.py"
SERVE_SCRIPT_IN_IMAGE = "/opt/mlops/serve.py"
LABEL_PREFIX = "org.mlops-assets"
# uvicorn's own fast event loop and HTTP parser (uvicorn[standard]), which MLflow's image leaves
# out: without them uvicorn serves on h11 and asyncio, and a single-row request on a
# keep-alive connection took 56 ms instead of 11 (bench/serving.py).
SERVER_PACKAGES = ("uvloop", "httptools")

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
    - the entry point is :func:`serve_script` (MLflow's, with one worker per CPU the
      container may use), copied in from the build context's ``mlops-serve.py``;
    - uvicorn gets its fast event loop and HTTP parser (:data:`SERVER_PACKAGES`, pinned to
      the versions installed here).
    """
    _mlflow_entrypoint(text)  # exactly one FROM and one ENTRYPOINT of the known form
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
    serving = (
        f"RUN python -m pip install --no-cache-dir {' '.join(pinned(SERVER_PACKAGES))}\n"
        "ENV DISABLE_NGINX=true UVICORN_HOST=0.0.0.0\n"
        f"RUN useradd --system --uid {uid} --home-dir /opt/mlflow --no-create-home mlserve\n"
        f"COPY {SERVE_SCRIPT_IN_CONTEXT} {SERVE_SCRIPT_IN_IMAGE}\n"
        f"USER {uid}\n"
        f"EXPOSE {SERVING_PORT}\n"
        f"{label_lines}"
        f"ENTRYPOINT {json.dumps(['python', SERVE_SCRIPT_IN_IMAGE])}"
    )
    return _ENTRYPOINT_LINE.sub(lambda m: serving, text)


def pinned(distributions: Iterable[str]) -> list[str]:
    """``name==version`` of each distribution as installed here: what a served image
    installs, so it serves with the versions the model was built and tested with."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in distributions]


def _mlflow_entrypoint(dockerfile: str) -> str:
    """The Python code MLflow's Dockerfile runs (``ENTRYPOINT ["python", "-c", code]``)."""
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
    return str(command[2])


def container_cpus(cpu_max: str | None, usable_cpus: int) -> int:
    """The CPUs a container may use: its cgroup CPU limit (``cpu.max``, "<quota> <period>"
    or "max <period>"; rounded up) when it has one, else the CPUs it may run on."""
    usable = max(1, usable_cpus)
    if cpu_max:
        quota, _, period = cpu_max.strip().partition(" ")
        if quota != "max" and period:
            return max(1, min(usable, math.ceil(int(quota) / int(period))))
    return usable


def server_sizing(cpus: int, workers_setting: str | None) -> tuple[int, int]:
    """Scoring-server workers on ``cpus``, and the native threads (OpenMP, BLAS) each may
    use: one worker per CPU unless ``workers_setting`` (MLFLOW_MODELS_WORKERS) says
    otherwise, and the CPUs shared out among the workers, at least one thread each.

    Without the thread bound every worker's scikit-learn starts a thread per CPU of the
    machine: two workers on two CPUs ran four busy OpenMP threads and answered 91 requests
    per second at 16 connections instead of 153 (bench/serving.py)."""
    workers = int(workers_setting) if workers_setting else cpus
    return workers, max(1, cpus // max(1, workers))


def cgroup_cpu_max() -> str | None:
    """The container's CPU limit as cgroup v2 writes it ("<quota> <period>", or "max
    <period>"), read from cgroup v2 or v1; None when neither is there."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as limit:  # cgroup v2
            return limit.read()
    except OSError:
        pass
    try:  # cgroup v1
        with (
            open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as quota,
            open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as period,
        ):
            value = int(quota.read())
            return f"{'max' if value < 0 else value} {int(period.read())}"
    except (OSError, ValueError):
        return None


def serve_script(mlflow_dockerfile: str) -> str:
    """The served image's entry point: MLflow's own (from its Dockerfile), sized to the
    container's CPU limit (:func:`container_cpus`, :func:`server_sizing`):
    MLFLOW_MODELS_WORKERS, unless it is set already, and OMP_NUM_THREADS, likewise.

    MLflow's default is ``multiprocessing.cpu_count()`` workers, the node's CPUs: on a
    64-CPU node a pod limited to 2 CPUs would start 64 workers, each loading the model into
    its memory."""
    functions = "\n\n".join(
        inspect.getsource(f) for f in (cgroup_cpu_max, container_cpus, server_sizing)
    )
    return f'''"""Entry point of the served model (written by mlops_assets.ml.serving)."""

import math
import os


{functions}

_workers, _threads = server_sizing(
    container_cpus(cgroup_cpu_max(), len(os.sched_getaffinity(0))),
    os.environ.get("MLFLOW_MODELS_WORKERS"),
)
os.environ["MLFLOW_MODELS_WORKERS"] = str(_workers)
os.environ.setdefault("OMP_NUM_THREADS", str(_threads))
{_mlflow_entrypoint(mlflow_dockerfile)}
'''


def recipe_digest() -> str:
    """The digest of the code that writes the image (Dockerfile and entry point): a change
    to it is a new recipe, so every image is built again once, with no version to bump."""
    writers = (
        harden_dockerfile,
        pinned,
        _mlflow_entrypoint,
        cgroup_cpu_max,
        container_cpus,
        server_sizing,
        serve_script,
    )
    source = "".join(inspect.getsource(writer) for writer in writers)
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
