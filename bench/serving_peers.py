"""The served image's peers for bench/serving.py: MLServer and KServe's scikit-learn server,
each serving the same MLflow model version from a venv of its own, over the Open Inference
Protocol (V2, ``POST /v2/models/<model>/infer``), on 127.0.0.1.

**Venvs.** Each peer's pins may clash with the project's (MLServer 1.7.1 wants
fastapi<0.116; MLflow's image and this venv have 0.165), so each gets its own venv, made with
``python3.11 -m venv`` and pip under ``.mlops/bench-venvs/<peer>`` (not in git) from its
committed pins, ``bench/serving_peers_<peer>.txt`` (``name==version`` lines: the whole venv as
``pip freeze`` lists it). A venv whose installed versions are the pinned ones is reused; any
other is made again. The model's own requirements (its ``requirements.txt``: scikit-learn,
numpy, pandas, scipy, and for MLServer mlflow and skops too) must be pinned at the versions the
model was saved with, so that the peers load and predict with the same code as MLflow's server;
the bench stops, naming the package, when a pin differs.

**MLServer** (Seldon; ``mlserver`` and ``mlserver-mlflow`` 1.7.1) with its **MLflow runtime**,
as MLServer's docs recommend for an MLflow model ("Serving MLflow models",
docs.seldon.ai/mlserver/examples/mlflow): ``model-settings.json`` names
``mlserver_mlflow.MLflowRuntime`` and ``parameters.uri`` the MLflow model folder (downloaded
from the registry), which it loads with ``mlflow.pyfunc.load_model``: MLflow's own schema
enforcement and the model's ``code/`` folder, if any, on its path as MLflow puts it. The
runtime reads the model's signature, so each input tensor is decoded as a column of a table
(request content type ``pd``, text columns as ``str``) with no parameters in the request; its
answer is one output tensor (``output-1`` for a regressor). It loads this model, so the sklearn
runtime is not needed. Server settings (``settings.json``): the HTTP, gRPC and metrics ports,
host 127.0.0.1, its metrics and environments folders in the run's temporary folder; the rest
at its defaults, among them ``parallel_workers`` 1 (one inference process beside the HTTP
server; "Parallel inference", docs.seldon.ai/mlserver/user-guide/parallel-inference); the
second MLServer row sets ``parallel_workers`` to 2. uvloop is pinned to 0.21.0: from 0.22 on,
MLServer 1.7.1's inference workers die as they start (SeldonIO/MLServer#2286).

**KServe's scikit-learn server** (``kserve`` 0.21.0 and its ``sklearnserver``, started as
KServe's image starts it: ``python -m sklearnserver --model_dir DIR --model_name NAME``).
``sklearnserver`` is published neither on PyPI nor in kserve's sdist; KServe's docs ("Deploy
Scikit-learn models with InferenceService", testing locally) install it from a checkout of the
kserve repository, ``python/sklearnserver``: pass the checkout's root as ``--kserve-source``
(or ``MLOPS_BENCH_KSERVE_SOURCE``), and it is installed into the KServe venv with ``--no-deps``
(its own pins name the repository's folders and an older scikit-learn); without one, and with
none installed yet, KServe is left out and the bench says why. It loads a joblib or pickle file
(``joblib.load``), so the model is written as ``model.joblib`` from the MLflow model, loaded
here with the same scikit-learn version; when the model has a ``code/`` folder (classes of this
project inside it), that folder is on the server's PYTHONPATH, as it would be in a KServe
container. Tensors become a table's columns only when the request says so (``"parameters":
{"content_type": "pd"}``; ``kserve.utils.utils.get_predict_input``), so its requests carry
that; its answer is one output tensor (``output-0``). Its defaults but ``--enable_grpc false``
(its gRPC server would listen on every interface, [::], and is not used here): ``--workers``
1; the second KServe row passes ``--workers 2`` (uvicorn processes). Its HTTP server listens
on 0.0.0.0, which KServe sets in code (no host option); the bench reaches it on 127.0.0.1.
With these pins every answer also writes FastAPI's deprecation warning for KServe's
ORJSONResponse to its log (the fastapi of KServe's own lock file, 0.136.1, has the same
warning): that is KServe as it ships.

**Two workers, fairly.** The image's entry point gives each of its workers a share of the CPUs
for native threads (OMP_NUM_THREADS: 2 CPUs over 2 workers, 1 each). The 2-worker rows of both
peers get the same (:func:`shared_threads`); the default rows run as the peers start, one
process predicting with OpenMP's default of a thread per core.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.ml.serving import parse_v2_answers, v2_payload
from mlops_assets.stack.process import LOOPBACK, ServerProcess, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))

from venvs import installed, read_pins, run_logged, venv_from_pins

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("mlserver", "kserve")
PINS = {peer: Path(__file__).with_name(f"serving_peers_{peer}.txt") for peer in PEERS}
# What each peer loads the model with, pinned at the versions the model was saved with; None:
# every requirement of the model (MLServer loads it with MLflow, as MLflow's server does).
FROM_MODEL: dict[str, frozenset[str] | None] = {
    "mlserver": None,
    "kserve": frozenset({"scikit-learn", "numpy", "pandas", "scipy"}),
}
KSERVE_SOURCE_ENV = "MLOPS_BENCH_KSERVE_SOURCE"
SKLEARNSERVER = Path("python") / "sklearnserver"  # in a kserve checkout


class PeerUnavailable(Exception):
    """A peer that cannot run here; the bench leaves it out and prints this."""


def model_requirements(model_dir: Path) -> dict[str, str]:
    """The versions the MLflow model was saved with (its requirements.txt)."""
    return read_pins(model_dir / "requirements.txt")


def check_model_pins(peer: str, pins: dict[str, str], model: dict[str, str]) -> None:
    """Stops the bench when ``peer``'s pins hold another version of what loads the model."""
    wanted = FROM_MODEL[peer]
    names = sorted(model if wanted is None else wanted & model.keys())
    wrong = [
        f"{n}=={model[n]} (pinned: {pins.get(n, 'nothing')})"
        for n in names
        if pins.get(n) != model[n]
    ]
    if wrong:
        raise SystemExit(
            f"the model was saved with {', '.join(wrong)}: {PINS[peer].relative_to(ROOT)} must "
            f"pin the same, so that {peer} predicts with the same code (update the pins)"
        )


def peer_venv(peer: str, model: dict[str, str]) -> Path:
    """``peer``'s venv under .mlops/bench-venvs, made from its pins (the model's own versions
    of what loads it). Returns its python."""
    check_model_pins(peer, read_pins(PINS[peer]), model)
    return venv_from_pins(peer, PINS[peer])


def kserve_source(given: str | None) -> Path | None:
    """The kserve checkout to install sklearnserver from: --kserve-source, else
    $MLOPS_BENCH_KSERVE_SOURCE, else none."""
    chosen = given or os.environ.get(KSERVE_SOURCE_ENV)
    return Path(chosen).resolve() if chosen else None


def sklearnserver(python: Path, source: Path | None) -> str:
    """KServe's scikit-learn server in the KServe venv, installed from ``source`` (a kserve
    checkout) unless the same version is there. Returns its version."""
    have = installed(python).get("sklearnserver")
    if source is None:
        if have:
            return have
        raise PeerUnavailable(
            "KServe's sklearnserver is not on PyPI (nor in kserve's sdist); KServe's docs install "
            "it from a checkout of the kserve repository: pass its root as --kserve-source (or "
            f"{KSERVE_SOURCE_ENV})"
        )
    package = source / SKLEARNSERVER
    if not (package / "pyproject.toml").exists():
        raise PeerUnavailable(
            f"{source} is not a kserve checkout: no {SKLEARNSERVER}/pyproject.toml"
        )
    version = str(tomllib.loads((package / "pyproject.toml").read_text())["project"]["version"])
    if have != version:
        run_logged(
            [str(python), "-m", "pip", "install", "-q", "--no-deps", str(package)],
            python.parents[1] / "pip-install.log",
            f"installing {package} into {python.parents[1]}",
        )
    return version


def download_model(model_uri: str, tracking_uri: str, registry_uri: str, dest: Path) -> Path:
    """The MLflow model folder of ``model_uri`` (MLmodel, the model file, requirements.txt,
    code/), downloaded from the registry into ``dest``."""
    import mlflow
    import mlflow.artifacts

    # Both set as the process's own: download_artifacts' arguments did not reach the registry
    # of a models:/ URI (MLflow 3.17.2 looked in a new ./mlflow.db).
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    dest.mkdir(parents=True)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dest)))


def joblib_model(model_dir: Path, dest: Path, model: dict[str, str]) -> Path:
    """The MLflow model's scikit-learn estimator as ``dest/model.joblib`` (what sklearnserver
    loads), loaded here with the scikit-learn version the model was saved with."""
    import joblib
    import mlflow.sklearn

    here = metadata.version("scikit-learn")
    if here != model.get("scikit-learn"):
        raise SystemExit(
            f"this venv has scikit-learn {here}, the model was saved with "
            f"{model.get('scikit-learn')}: its joblib export for KServe would not be the same model"
        )
    dest.mkdir(parents=True)
    joblib.dump(mlflow.sklearn.load_model(str(model_dir)), dest / "model.joblib")
    return dest


def free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


@dataclass
class Peer:
    """One peer server: its table row, its process, and how to ask it."""

    name: str
    process: ServerProcess
    url: str
    model_name: str
    # The V2 request-level content type it needs to read the tensors as a table, if any.
    content_type: str | None = None
    about: str = ""

    @property
    def endpoint(self) -> str:
        return f"{self.url}/v2/models/{self.model_name}/infer"

    @property
    def ready_url(self) -> str:
        return f"{self.url}/v2/models/{self.model_name}/ready"

    def body(self, rows: pd.DataFrame) -> bytes:
        payload = v2_payload(rows)
        if self.content_type:
            payload["parameters"] = {"content_type": self.content_type}
        return json.dumps(payload).encode()


def shared_threads(workers: int) -> dict[str, str]:
    """The native threads (OpenMP) each of ``workers`` processes may use, as the image's entry
    point shares out its CPUs: the machine's CPUs (the peers run on the host) over the workers,
    at least one. Without it, two KServe workers on two cores ran four busy OpenMP threads
    (HistGradientBoosting's predict): 24.5 requests per second at 16 connections, with
    timeouts, instead of 261 (10 s each, by hand, on a busy machine; 51 in a 3 s bench run)."""
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // workers))}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def mlserver(
    python: Path, model_dir: Path, model_name: str, folder: Path, workers: int | None
) -> Peer:
    """MLServer with its MLflow runtime serving the MLflow model folder; ``workers``:
    parallel_workers (None: its default)."""
    name = "mlserver" if workers is None else f"mlserver, {workers} workers"
    home = folder / _slug(name)
    (home / model_name).mkdir(parents=True)
    http, grpc, metrics = free_ports(3)
    settings: dict[str, Any] = {
        "host": LOOPBACK,
        "http_port": http,
        "grpc_port": grpc,
        "metrics_port": metrics,
        "metrics_dir": str(home / ".metrics"),
        "environments_dir": str(home / ".envs"),
    }
    if workers is not None:
        settings["parallel_workers"] = workers
    (home / "settings.json").write_text(json.dumps(settings, indent=2))
    (home / model_name / "model-settings.json").write_text(
        json.dumps(
            {
                "name": model_name,
                "implementation": "mlserver_mlflow.MLflowRuntime",
                "parameters": {"uri": str(model_dir)},
            },
            indent=2,
        )
    )
    bin_dir = python.parent
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    about = "parallel_workers 1 (default)"
    if workers is not None:
        env |= shared_threads(workers)
        about = f"parallel_workers {workers}, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}"
    return Peer(
        name=name,
        process=ServerProcess(
            name,
            ["env", "-C", str(home), str(bin_dir / "mlserver"), "start", str(home)],
            log=folder / f"{_slug(name)}.log",
            env=env,
            inherit_env=False,
        ),
        url=f"http://{LOOPBACK}:{http}",
        model_name=model_name,
        about=about,
    )


def kserve(
    python: Path,
    model_dir: Path,
    joblib_dir: Path,
    model_name: str,
    folder: Path,
    workers: int | None,
) -> Peer:
    """KServe's sklearnserver serving the joblib export; ``workers``: --workers (None: its
    default)."""
    name = "kserve" if workers is None else f"kserve, {workers} workers"
    home = folder / _slug(name)
    home.mkdir(parents=True)
    (http,) = free_ports(1)
    env = {"PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if (model_dir / "code").is_dir():  # the project's classes the estimator holds
        env["PYTHONPATH"] = str(model_dir / "code")
    about = "--workers 1 (default)"
    if workers is not None:
        env |= shared_threads(workers)
        about = f"--workers {workers}, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}"
    command = [
        *("env", "-C", str(home), str(python), "-m", "sklearnserver"),
        *("--model_dir", str(joblib_dir), "--model_name", model_name),
        *("--http_port", str(http), "--enable_grpc", "false"),
        *(("--workers", str(workers)) if workers is not None else ()),
    ]
    return Peer(
        name=name,
        process=ServerProcess(
            name, command, log=folder / f"{_slug(name)}.log", env=env, inherit_env=False
        ),
        url=f"http://{LOOPBACK}:{http}",
        model_name=model_name,
        content_type="pd",
        about=about,
    )


@dataclass
class PeerSetup:
    peers: list[Peer] = field(default_factory=list)
    described: list[str] = field(default_factory=list)  # what runs, for the report's header
    left_out: dict[str, str] = field(default_factory=dict)  # peer: why


def prepare_peers(
    chosen: list[str],
    model_uri: str,
    model_name: str,
    tracking_uri: str,
    registry_uri: str,
    folder: Path,
    source: Path | None,
) -> PeerSetup:
    """Venvs, model exports and (not yet started) servers of the ``chosen`` peers, each at its
    defaults and with 2 workers."""
    setup = PeerSetup()
    if not chosen:
        return setup
    model_dir = download_model(model_uri, tracking_uri, registry_uri, folder / "mlflow-model")
    model = model_requirements(model_dir)
    if "mlserver" in chosen:
        python = peer_venv("mlserver", model)
        versions = installed(python)
        setup.peers += [mlserver(python, model_dir, model_name, folder, w) for w in (None, 2)]
        setup.described.append(
            f"mlserver {versions['mlserver']} + mlserver-mlflow {versions['mlserver-mlflow']} "
            f"(MLflow runtime, mlflow {versions['mlflow']}, scikit-learn "
            f"{versions['scikit-learn']})"
        )
    if "kserve" in chosen:
        python = peer_venv("kserve", model)
        try:
            server_version = sklearnserver(python, source)
        except PeerUnavailable as why:
            setup.left_out["kserve"] = str(why)
        else:
            versions = installed(python)
            joblib_dir = joblib_model(model_dir, folder / "kserve-model", model)
            setup.peers += [
                kserve(python, model_dir, joblib_dir, model_name, folder, w) for w in (None, 2)
            ]
            setup.described.append(
                f"kserve {versions['kserve']} sklearnserver {server_version} (joblib export, "
                f"scikit-learn {versions['scikit-learn']})"
            )
    return setup


def v2_answers(body: str) -> pd.DataFrame:
    """A V2 response's output tensors as the frame ``parse_answers`` makes of an /invocations
    answer: a single output (a regressor's; MLServer's MLflow runtime calls it ``output-1``,
    KServe ``output-0``) is ``prediction``; named columns (the image's, a classifier's) keep
    their names."""
    frame = parse_v2_answers(body)
    if len(frame.columns) == 1:
        frame.columns = pd.Index(["prediction"])
    return frame
