"""Fixtures: an isolated MLOPS_HOME per test, and a helper to run the real jobs in it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, ExecuteInProcessResult

from mlops_assets.instance_config import LOCAL_RUNS_YAML
from mlops_assets.resources.mlflow_sqlite import seed_database
from mlops_assets.variables import all_settings

PARTITION = "2026-11-20"
# As the shipped dagster.yaml files: runs whose processes died are found and marked failed.
INSTANCE_OVERRIDES = {"telemetry": {"enabled": False}, **yaml.safe_load(LOCAL_RUNS_YAML)}
# Small, fast sources for tests; the shipped defaults stay as documented.
TEST_SOURCE = "sample://house-prices?rows=1500&seed=42"
TEST_INCOMING = "sample://house-prices?rows=400&seed={day}"
# The model the tests drive through the MLOPS_* variables (defs/house_prices/defs.yaml). Its
# assets, steps and jobs are named here without its prefix: "raw_data" is house_prices/raw_data,
# "refresh_model" the job house_prices_refresh_model (see key(), job_name(), short()).
MODEL = "house_prices"


def key(asset: str) -> AssetKey:
    """An asset key: "raw_data" is the house-price model's, "wine_cultivars/raw_data" as given."""
    return AssetKey.from_user_string(asset if "/" in asset else f"{MODEL}/{asset}")


def job_name(job: str) -> str:
    """A job, schedule or sensor name: "refresh_model" is the house-price model's."""
    known = ("run_failure_alerts", "asset_check_alerts", "__ASSET_JOB")
    return (
        job
        if job in known or job.startswith(("house_prices_", "wine_cultivars_"))
        else f"{MODEL}_{job}"
    )


def step(name: str) -> str:
    """A step key: "raw_data" is the house-price model's step house_prices__raw_data."""
    return name if "__" in name else f"{MODEL}__{name}"


def model_config(run_config: dict[str, Any]) -> dict[str, Any]:
    """A run config whose ops are named as the tests name them ("trained_model"), with the
    house-price model's step names (house_prices__trained_model)."""
    if "ops" not in run_config:
        return run_config
    return {**run_config, "ops": {step(op): c for op, c in run_config["ops"].items()}}


def short(asset_key: AssetKey) -> str:
    """An asset key as the tests name it: the house-price model's without its prefix."""
    text = asset_key.to_user_string()
    return text.removeprefix(f"{MODEL}/")


def house_scope() -> Any:
    """The house-price model as its component builds it from its defs.yaml now (so from the
    MLOPS_* variables set now)."""
    from mlops_assets.definitions import model_scopes

    return model_scopes()[MODEL]


def scope_of(resources: dict[str, Any], automation: Any = None) -> Any:
    """The house-price model (house_scope), with the settings that ``resources`` carry as the
    tests give them instead: a DatasetSourceResource's source, incoming and spec, an
    MlflowResource's names (each when set), a PolicySettings, a TrainingSettings; automation as
    given, else its defaults."""
    from dataclasses import replace

    from mlops_assets.components.lifecycle.automation.constants import AutomationSettings

    house = house_scope()
    data, registry = dict(house.data), dict(house.registry)
    source, mlflow = resources.get("dataset_source"), resources.get("mlflow")
    for given, fields in ((source, data), (mlflow, registry)):
        # What a test set on the resource (a deployment's resource leaves them empty).
        fields.update({f: getattr(given, f) for f in fields if given and getattr(given, f)})
    return replace(
        house,
        policy=resources.get("policy") or house.policy,
        training=resources.get("training_settings") or house.training,
        data=data,
        registry=registry,
        automation=automation or AutomationSettings(),
    )


def deployment_resources(resources: dict[str, Any]) -> dict[str, Any]:
    """``resources`` without the model's settings (policy, training_settings)."""
    return {k: v for k, v in resources.items() if k not in ("policy", "training_settings")}


def model_sensor(name: str, resources: dict[str, Any]) -> Any:
    """The house-price model's sensor ``name`` (new_labelled_data, drift_policy ...), built
    with the settings ``resources`` carry (scope_of)."""
    from mlops_assets.components.lifecycle.automation.jobs import build_jobs
    from mlops_assets.components.lifecycle.automation.sensors import build_sensors

    model = scope_of(resources)
    [sensor] = [s for s in build_sensors(model, build_jobs(model)) if s.name == job_name(name)]
    return sensor


# What mlops_lifecycle materialises (everything but served_image).
LIFECYCLE_ASSETS = {
    "raw_data",
    "versioned_dataset",
    "trained_model",
    "registered_model",
    "predictions",
    "drift_report",
}


def pytest_configure(config: pytest.Config) -> None:
    """Start every process as a terminal's foreground job would, even under CI's runner.

    A job a script starts in the background (CI's runner, `nohup ... &`) inherits SIGINT
    ignored. Dagster makes SIGTERM do what SIGINT does, so after the first in-process run the
    suite ignored SIGTERM too, and so did every process it started from then on: the
    compute-log `tail -F` of a run on another thread outlived its run, and a server started by a
    fixture stopped only when killed.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# What a session that builds images built, ran and loaded in the machine's image store is
# removed when it ends (a served image, with its model and packages, is about 1 GB); what was
# there before stays, and so does the base image (built once per machine, on purpose). Not
# under xdist: one worker would remove what another is still using. The fast lane builds none.
CONTAINER_LISTS = {
    "buildah containers": ["buildah", "containers", "--quiet", "--notruncate"],
    "podman containers": ["podman", "ps", "--all", "--quiet", "--no-trunc"],
    "images": ["podman", "images", "--all", "--quiet", "--no-trunc"],
}
CONTAINER_REMOVAL = {
    "buildah containers": ["buildah", "rm"],
    "podman containers": ["podman", "rm", "--force"],
    "images": ["podman", "rmi", "--force"],
}
_STORE_BEFORE = pytest.StashKey[dict[str, set[str]]]()


def store_listing(kind: str) -> set[str] | None:
    """The ids of one kind of CONTAINER_LISTS in the machine's store; None without the tool."""
    command = CONTAINER_LISTS[kind]
    if shutil.which(command[0]) is None:
        return None
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    return set(done.stdout.split()) if done.returncode == 0 else None


def _kept_images() -> set[str]:
    """The base image and the layers under it."""
    kept: set[str] = set()
    image = TEST_BASE_IMAGE
    while image:
        done = subprocess.run(
            ["podman", "image", "inspect", "--format", "{{.Id}} {{.Parent}}", image],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0:
            break
        image_id, _, parent = done.stdout.strip().partition(" ")
        kept |= {image_id, f"sha256:{image_id.removeprefix('sha256:')}"}  # as `images` lists
        image = parent
    return kept


def _note_the_image_store(config: pytest.Config) -> None:
    if hasattr(config, "workerinput") or _STORE_BEFORE in config.stash:
        return
    listed = {kind: store_listing(kind) for kind in CONTAINER_LISTS}
    config.stash[_STORE_BEFORE] = {k: v for k, v in listed.items() if v is not None}


def pytest_sessionfinish(session: pytest.Session) -> None:
    before = session.config.stash.get(_STORE_BEFORE, {})  # empty unless images were built
    for kind in CONTAINER_LISTS:  # containers first: they hold images
        if kind not in before:
            continue
        now = store_listing(kind)
        if now is None:
            continue
        made = now - before[kind] - (_kept_images() if kind == "images" else set())
        if made:
            subprocess.run(
                [*CONTAINER_REMOVAL[kind], *sorted(made)], capture_output=True, timeout=600
            )


@dataclass
class Lifecycle:
    """One isolated project state: MLOPS_HOME, a Dagster instance, and job runners."""

    home: Path
    instance: DagsterInstance

    def run(
        self,
        job: str = "mlops_lifecycle",
        partition: str | None = PARTITION,
        assets: list[str] | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> ExecuteInProcessResult:
        from mlops_assets.definitions import build_definitions, build_resources

        job_def = build_definitions(build_resources()).resolve_job_def(job_name(job))
        kwargs: dict[str, Any] = {
            "instance": self.instance,
            "raise_on_error": False,
            "run_config": model_config(run_config or {}),
        }
        if partition is not None and job_def.partitions_def is not None:
            kwargs["partition_key"] = partition
        if assets is not None:
            kwargs["asset_selection"] = [key(a) for a in assets]
        return job_def.execute_in_process(**kwargs)

    def state(self, dataset_name: str = "house_prices", model_name: str = "") -> dict[str, Any]:
        """Everything bad input must leave alone: dataset refs and tags, model versions, aliases
        (of the registered model ``model_name``; default: the house-price model's)."""
        from mlflow import MlflowClient

        dataset = self.home / "store" / "datasets" / dataset_name

        def read(path: Path) -> Any:
            return json.loads(path.read_text()) if path.exists() else None

        uri = f"sqlite:///{self.home / 'mlflow.db'}"
        # Name the registry too: without it MLflow falls back to the process-global URI.
        client = MlflowClient(uri, uri)
        name = model_name or os.environ.get("MLOPS_MODEL_NAME", "house-price-regressor")
        versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        model = client.get_registered_model(name) if versions else None
        return {
            "latest": read(dataset / "refs" / "latest.json"),
            "previous": read(dataset / "refs" / "previous.json"),
            "tags": sorted(p.name for p in (dataset / "tags").glob("*.json")),
            "versions": versions,
            "aliases": {k: str(v) for k, v in model.aliases.items()} if model else {},
        }


# Checks whose failures are warnings; the others fail as errors.
WARN_CHECKS = {"drift_share_below_threshold", "predictions_in_plausible_range"}


def record_evaluation(
    instance: DagsterInstance,
    asset: str,
    check: str,
    passed: bool,
    description: str,
    metadata: dict[str, str] | None = None,
) -> None:
    """A check evaluation in the instance's event log, with the severity the check uses."""
    from dagster import AssetCheckEvaluation, AssetCheckSeverity

    instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=key(asset),
            check_name=check,
            passed=passed,
            severity=AssetCheckSeverity.WARN if check in WARN_CHECKS else AssetCheckSeverity.ERROR,
            description=description,
            metadata=metadata or {},
        )
    )


def check_evaluations(result: ExecuteInProcessResult) -> dict[tuple[str, str], Any]:
    evaluations = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            evaluations[(short(data.asset_key), data.check_name)] = data
    return evaluations


def materialized(result: ExecuteInProcessResult) -> dict[str, Any]:
    """Asset key -> its materialisation's metadata, for this run."""
    return {
        short(event.asset_key): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }


def stored_predictions(home: Path, model: str, day: str = PARTITION) -> list[Path]:
    """The day's scored batches in the local store (one per distinct content)."""
    return sorted((home / "store" / "predictions" / model / day).glob("*.parquet"))


def stored_report(home: Path, kind: str, model: str, day: str, version: str) -> Path:
    """The one folder of a day's drift report (kind: drift, traffic_drift) of a version."""
    [folder] = (home / "store" / "reports" / kind / model / day).glob(f"v{version}-*")
    return folder


def step_failure(result: ExecuteInProcessResult, name: str) -> str:
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_key == step(name):
            error = event.event_specific_data.user_failure_data
            if error is not None:
                return error.description or ""
            return event.event_specific_data.error.to_string()
    raise AssertionError(f"step {step(name)} did not fail")


@dataclass
class SmallDisk:
    """A real file system of a fixed size (tmpfs), to be filled for real."""

    path: Path

    def resize(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A 1 MiB tmpfs: a write to it meets a full disk for real (ENOSPC). Mounting needs root,
    as CI runs; without it the test is skipped, loudly."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs to fill ({done.stderr.strip()})")
    try:
        yield SmallDisk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for setting in all_settings():
        monkeypatch.delenv(setting.name, raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    monkeypatch.setenv("MLOPS_SOURCE_URI", TEST_SOURCE)
    monkeypatch.setenv("MLOPS_INCOMING_URI", TEST_INCOMING)
    monkeypatch.setenv("GIT_PYTHON_REFRESH", "quiet")


# The README's "Your own model" layout: a team's estimator class in my_team/models.py.
TEAM_MODEL = "my_team.models.TeamLeastSquares"
TEAM_MODELS_SOURCE = """\
import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin


class TeamLeastSquares(RegressorMixin, BaseEstimator):
    def __init__(self, shrink=0.0):
        self.shrink = shrink

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        design = np.column_stack([np.ones(len(X)), X])
        solution, *_ = np.linalg.lstsq(design, np.asarray(y, dtype=float), rcond=None)
        self.intercept_ = float(solution[0])
        self.coef_ = solution[1:] * (1.0 - self.shrink)
        return self

    def predict(self, X):
        return self.intercept_ + np.asarray(X, dtype=float) @ self.coef_
"""


@pytest.fixture
def namespace_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """my_team/ as a namespace package (a folder with no __init__.py) on sys.path, holding
    TEAM_MODEL; yields the folder. Its modules leave sys.modules with the test."""
    package = tmp_path / "team_code" / "my_team"
    package.mkdir(parents=True)
    (package / "models.py").write_text(TEAM_MODELS_SOURCE)
    monkeypatch.syspath_prepend(str(package.parent))
    yield package
    for name in [n for n in sys.modules if n.split(".")[0] == "my_team"]:
        del sys.modules[name]


def _lifecycle(home: Path) -> Iterator[Lifecycle]:
    (home / "dagster_home").mkdir(parents=True, exist_ok=True)
    instance = DagsterInstance.local_temp(str(home / "dagster_home"), overrides=INSTANCE_OVERRIDES)
    try:
        yield Lifecycle(home=home, instance=instance)
    finally:
        instance.dispose()


@pytest.fixture
def lifecycle(
    tmp_path: Path,
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Lifecycle]:
    """An empty project state."""
    home = tmp_path / "mlops"
    home.mkdir()
    if "mlflow_stack" not in request.fixturenames:
        # Embedded MLflow: its database now, as the resource writes it, so that state() before
        # any run reads it too. (On the MLflow server a test asserts that no local database
        # appears, so none is put there.)
        seed_database(f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.setenv("MLOPS_HOME", str(home))
    yield from _lifecycle(home)


@pytest.fixture(scope="session")
def trained_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state after one successful lifecycle run: data-v1.0.0, model v1 as champion."""
    home = tmp_path_factory.mktemp("trained") / "mlops"
    with pytest.MonkeyPatch.context() as patch:
        for setting in all_settings():
            patch.delenv(setting.name, raising=False)
        patch.setenv("MLOPS_HOME", str(home))
        patch.setenv("MLOPS_SOURCE_URI", TEST_SOURCE)
        patch.setenv("MLOPS_INCOMING_URI", TEST_INCOMING)
        for state in _lifecycle(home):
            result = state.run()
            assert result.success, "baseline lifecycle run failed"
    return home


@pytest.fixture
def trained(
    trained_home: Path, tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Lifecycle]:
    """A private copy of the trained state, so a test may change it freely: the object store,
    MLflow and the Dagster instance (whose materialisations say which stored asset values
    are current).

    MLflow records absolute artifact paths, so copies share the baseline's artifact folder;
    tests only add to it, never remove.
    """
    home = tmp_path / "mlops"
    shutil.copytree(trained_home, home)
    monkeypatch.setenv("MLOPS_HOME", str(home))
    yield from _lifecycle(home)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real SeaweedFS S3 server on loopback for the whole session."""
    from mlops_assets.stack.seaweedfs import SeaweedS3

    base = tmp_path_factory.mktemp("seaweedfs")
    server = SeaweedS3(data_dir=base / "data", log_dir=base / "logs")
    server.start()
    try:
        yield server
    finally:
        server.stop(grace_seconds=0)  # a test server: nothing to keep


@pytest.fixture
def s3_store(seaweed: Any, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """Point the project's object store at a fresh prefix in SeaweedFS; returns its root."""
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    root = f"s3://{seaweed.bucket}/{request.node.name.replace('[', '-').rstrip(']')}"
    monkeypatch.setenv("MLOPS_OBJECT_STORE_ROOT", root)
    return root


@pytest.fixture(scope="session")
def mlflow_stack(seaweed: Any) -> Iterator[dict[str, Any]]:
    """Postgres and an MLflow tracking server on it, with artifacts in the SeaweedFS bucket."""
    import tempfile

    from mlops_assets.stack.mlflow_server import MlflowServer
    from mlops_assets.stack.postgres import LocalPostgres

    # pytest's temp folders are private to root; the postgres user must reach its data.
    base = Path(tempfile.mkdtemp(prefix="mlops-stack-"))
    base.chmod(0o755)
    postgres = LocalPostgres(data_dir=base / "postgres", log_dir=base / "logs")
    postgres.start()
    server = MlflowServer.on_stack(postgres, seaweed, base / "logs")
    try:
        server.start()
        yield {"postgres": postgres, "mlflow": server, "logs": base / "logs"}
    finally:
        server.stop()
        postgres.stop()
        shutil.rmtree(base, ignore_errors=True)


def project_free_env() -> dict[str, str]:
    """This process's environment without any project setting or DAGSTER_HOME."""
    names = {s.name for s in all_settings()} | {"DAGSTER_HOME"}
    return {k: v for k, v in os.environ.items() if k not in names}


def imported_before(log: str, first: str, then: str) -> None:
    """Assert that in ``log`` (stderr under PYTHONPROFILEIMPORTTIME=1) the import of module
    ``first`` finished before any module of package ``then`` was imported."""
    finished = [
        line.rsplit("|", 1)[-1].strip()
        for line in log.splitlines()
        if line.startswith("import time:")
    ]
    then_at = next(i for i, name in enumerate(finished) if name.split(".")[0] == then)
    assert finished.index(first) < then_at, f"{finished[then_at]} came before {first}"


def demo_env(home: Path) -> dict[str, str]:
    """The environment of a user's shell for `mlops-demo` and the UI it points to: the
    project's settings at their defaults but MLOPS_HOME and the test's small sources."""
    return {
        **project_free_env(),
        "MLOPS_HOME": str(home),
        "MLOPS_SOURCE_URI": TEST_SOURCE,
        "MLOPS_INCOMING_URI": TEST_INCOMING,
        "GIT_PYTHON_REFRESH": "quiet",
    }


def run_mlops_demo(
    home: Path,
    cwd: Path,
    extra_env: dict[str, str] | None = None,
    models: tuple[str, ...] = (MODEL,),
) -> Any:
    """Run the README's `mlops-demo` in a subprocess with the test's small sources, for the
    house-price model (``models``: those given; empty: every model, as the README runs it)."""
    import sys

    env = {**demo_env(home), **(extra_env or {})}
    demo = Path(sys.executable).parent / "mlops-demo"
    chosen = [arg for model in models for arg in ("--model", model)]
    return subprocess.run(
        [str(demo), "--partition", PARTITION, *chosen],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


# --- containers: a locally built base image and a registry on loopback -------------------

TEST_BASE_IMAGE = "localhost/mlops-test-base:bookworm"
# The machine's CA bundle, for pip inside image builds on networks that intercept TLS.
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(scope="session")
def container_tools(pytestconfig: pytest.Config) -> None:
    """buildah, podman and debootstrap must be here: .ci/run installs them. Not a skip: the
    served-image tests are the proof that images really build and serve."""
    missing = [t for t in ("buildah", "podman", "debootstrap") if shutil.which(t) is None]
    if missing:
        pytest.fail(
            f"container tools missing: {', '.join(missing)} "
            "(apt-get install buildah podman runc docker-registry debootstrap; .ci/run does)"
        )
    _note_the_image_store(pytestconfig)


@pytest.fixture(scope="session")
def base_image(container_tools: None) -> str:
    """Debian bookworm + python3 built with debootstrap (no public registry here); kept in
    the machine's image store, so later sessions reuse it."""
    from mlops_assets.stack.base_image import build_base_image

    return build_base_image(TEST_BASE_IMAGE)


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real OCI registry (Debian's docker-registry) on loopback for the whole session."""
    from mlops_assets.stack.registry import LocalRegistry

    base = tmp_path_factory.mktemp("registry")
    registry = LocalRegistry(data_dir=base / "data", log_dir=base / "logs")
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()


def image_build_env(base_image: str, registry: str) -> dict[str, str]:
    """Settings that build served images from the test base image into ``registry``."""
    env = {
        "MLOPS_IMAGE_BUILDER": "auto",
        "MLOPS_IMAGE_REGISTRY": registry,
        "MLOPS_IMAGE_REGISTRY_INSECURE": "true",
        "MLOPS_IMAGE_BASE": base_image,
    }
    if SYSTEM_CA_BUNDLE.is_file():
        env["MLOPS_IMAGE_BUILD_CA_BUNDLE"] = str(SYSTEM_CA_BUNDLE)
    return env
