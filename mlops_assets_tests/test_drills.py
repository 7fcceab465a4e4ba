"""Drills: what production does to the lifecycle, done for real to `mlops-demo` processes on one
home: two runs at once (different data, the same data), SIGTERM and SIGKILL in the middle of
registered_model. After each, the refs, tags, versions, aliases, runs and MLflow runs are
asserted, and the next run must finish what was left."""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus
from mlflow import MlflowClient

from mlops_assets.ml.champion_history import PENDING_TAG, history_from_tags
from mlops_assets.ml.sample_data import generate_house_prices, to_csv_bytes
from mlops_assets_tests.conftest import PARTITION, demo_env, run_mlops_demo
from mlops_assets_tests.conftest import step as conftest_step

pytestmark = pytest.mark.slow  # mlops-demo in subprocesses

MODEL = "house-price-regressor"
DATASET = "house_prices"


def start_demo(home: Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    demo = Path(sys.executable).parent / "mlops-demo"
    return subprocess.Popen(
        [str(demo), "--partition", PARTITION, "--model", "house_prices"],
        cwd=cwd,
        env={**demo_env(home), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def source_file(path: Path, seed: int, rows: int = 1200) -> Path:
    path.write_bytes(to_csv_bytes(generate_house_prices(rows, seed=seed)))
    return path


def dataset_state(home: Path) -> dict[str, Any]:
    root = home / "store" / "datasets" / DATASET
    tags = {p.stem: json.loads(p.read_text())["digest"] for p in (root / "tags").glob("*.json")}

    def ref(name: str) -> str | None:
        path = root / "refs" / f"{name}.json"
        return json.loads(path.read_text())["digest"] if path.exists() else None

    return {"tags": tags, "latest": ref("latest"), "previous": ref("previous")}


def mlflow_client(home: Path, timeout: float = 120) -> MlflowClient:
    """A client of the demo's MLflow database, once the demo has made it. The demo links a
    complete database into place; a client opened before would make one of its own and
    migrate it while the demo does the same (a race of this test, seen under load)."""
    path = home / "mlflow.db"
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the demo never made {path}"
        time.sleep(0.05)
    uri = f"sqlite:///{path}"
    return MlflowClient(uri, uri)


def wait_for_step(home: Path, step: str, process: subprocess.Popen[str], timeout: float = 300):
    """Wait until the demo's run has started ``step`` (its STEP_START is in the instance);
    returns the run id."""
    deadline = time.monotonic() + timeout
    dagster_home = home / "dagster_home"
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[0][-4000:]
        if (dagster_home / ".instance.lock").exists():
            with opened_instance(dagster_home) as instance:
                for run in instance.get_runs():
                    starts = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
                    if any(e.step_key == conftest_step(step) for e in starts):
                        return run.run_id
        time.sleep(0.05)
    raise AssertionError(f"{step} did not start in {timeout} s")


@contextmanager
def opened_instance(dagster_home: Path) -> Iterator[DagsterInstance]:
    """The demo's instance, opened as mlops-demo opens it: not while another process is
    making its tables."""
    with (dagster_home / ".instance.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        instance = DagsterInstance.from_config(str(dagster_home))
    with instance:
        yield instance


def runs(home: Path) -> dict[str, DagsterRunStatus]:
    with DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        return {run.run_id: run.status for run in instance.get_runs()}


def test_two_runs_at_once_on_different_data_each_version_and_train_their_own(tmp_path):
    """Found by a drill: run A snapshotted its data but versioned, trained and registered run
    B's. Each run must train on its own snapshot, and both versions be tagged once each."""
    home = tmp_path / "mlops"
    sources = {
        name: source_file(tmp_path / f"{name}.csv", seed) for name, seed in (("a", 1), ("b", 2))
    }
    demos = {
        name: start_demo(home, tmp_path, {"MLOPS_SOURCE_URI": str(path)})
        for name, path in sources.items()
    }
    outputs = {name: demo.communicate(timeout=600)[0] for name, demo in demos.items()}
    for name, demo in demos.items():
        assert demo.returncode == 0, outputs[name][-4000:]

    mlflow = mlflow_client(home)
    trained = {}
    for run in mlflow.search_runs(
        ["1"], filter_string="tags.`dagster.asset` = 'house_prices/trained_model'"
    ):
        dagster_run = run.data.tags["dagster.run_id"]
        trained[dagster_run] = run.data.tags["mlops.dataset_digest"]
    assert len(trained) == 2, "each run trained its own model"
    with DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        for run_id, dataset_digest in trained.items():
            source = run_source(instance, run_id)
            versioned = materialisation(instance, run_id, "versioned_dataset")
            assert versioned["digest"].value == dataset_digest, f"run {run_id} ({source})"
            snapshot = materialisation(instance, run_id, "raw_data")
            assert Path(snapshot["source"].value).name in {"a.csv", "b.csv"}
    state = dataset_state(home)
    assert sorted(state["tags"]) == ["data-v1.0.0", "data-v1.1.0"]
    assert set(state["tags"].values()) == set(trained.values())
    assert {state["latest"], state["previous"]} == set(trained.values())
    versions = mlflow.search_model_versions(f"name='{MODEL}'")
    assert sorted(v.tags["mlops.dataset_digest"] for v in versions) == sorted(trained.values())
    assert all(v.tags["mlops.registration"] == "decided" for v in versions)


def run_source(instance: DagsterInstance, run_id: str) -> str:
    return str(materialisation(instance, run_id, "raw_data")["source"].value)


def materialisation(instance: DagsterInstance, run_id: str, asset: str) -> Any:
    [event] = [
        e
        for e in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION)
        if e.dagster_event.asset_key.to_user_string() == f"house_prices/{asset}"
    ]
    return event.dagster_event.materialization.metadata


def test_two_runs_at_once_on_the_same_data_tag_it_once_and_register_it_once(tmp_path):
    """Found by a drill: the same data tagged twice (data-v1.0.0 and data-v1.0.1) and a
    duplicate model version registered."""
    home = tmp_path / "mlops"
    source = source_file(tmp_path / "same.csv", seed=3)
    demos = [start_demo(home, tmp_path, {"MLOPS_SOURCE_URI": str(source)}) for _ in range(2)]
    outputs = [demo.communicate(timeout=600)[0] for demo in demos]
    for demo, output in zip(demos, outputs, strict=True):
        assert demo.returncode == 0, output[-4000:]

    state = dataset_state(home)
    assert list(state["tags"]) == ["data-v1.0.0"]
    assert state["previous"] is None
    versions = mlflow_client(home).search_model_versions(f"name='{MODEL}'")
    assert [str(v.version) for v in versions] == ["1"]
    model = mlflow_client(home).get_registered_model(MODEL)
    assert {k: str(v) for k, v in model.aliases.items()} == {"champion": "1", "challenger": "1"}
    assert set(runs(home).values()) == {DagsterRunStatus.SUCCESS}


@pytest.mark.parametrize("sent", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_run_stopped_in_registered_model_wedges_nothing(tmp_path, sent):
    """Found by drills: SIGTERM 0.1-0.2 s into registered_model left v1 registered with no
    alias, and every later run failed its checks ("challenger -> vNone"); SIGKILL left the
    registry slot claimed by a run STARTED forever, and the next run waited at
    registered_model indefinitely. Now the next run takes over at once, finishes the
    registration, and the stopped run (and its MLflow runs) are marked failed."""
    # Dagster drops a stop signal that lands in its own bookkeeping as a step ends (seen 2
    # times in 10: the run then finishes and exits 0): such a try did not stop the run, and
    # the drill tries again on a fresh home, sooner into the step.
    for attempt, delay in enumerate((0.1, 0.03, 0.01)):
        home = tmp_path / f"mlops-{attempt}"
        demo = start_demo(home, tmp_path)
        stopped = wait_for_step(home, "registered_model", demo)
        time.sleep(delay)
        demo.send_signal(sent)
        output = demo.communicate(timeout=120)[0]
        if demo.returncode != 0:
            break
    assert demo.returncode != 0, output[-3000:]

    started = time.monotonic()
    again = run_mlops_demo(home, cwd=tmp_path)
    took = time.monotonic() - started

    assert again.returncode == 0, again.stderr[-4000:]
    assert took < 120, f"the next run took {took:.0f} s: it waited for the stopped one"
    statuses = runs(home)
    assert statuses.pop(stopped) == DagsterRunStatus.FAILURE
    assert list(statuses.values()) == [DagsterRunStatus.SUCCESS]
    mlflow = mlflow_client(home)
    aliases = mlflow.get_registered_model(MODEL).aliases
    assert {k: str(v) for k, v in aliases.items()} == {"champion": "1", "challenger": "1"}
    [version] = mlflow.search_model_versions(f"name='{MODEL}'")
    assert version.tags["mlops.registration"] == "decided"
    # Wherever the stop fell, the champion's history holds the one promotion, none pending.
    tags = mlflow.get_registered_model(MODEL).tags
    history = [(e.kind, e.from_version, e.to_version) for e in history_from_tags(tags)]
    assert history == [("promotion", None, "1")]
    assert PENDING_TAG not in tags
    left_running = mlflow.search_runs(["1"], filter_string="attributes.status = 'RUNNING'")
    assert left_running == []
    if sent == signal.SIGKILL:
        assert f"run {stopped} was still marked as running" in again.stderr


def test_a_run_killed_while_it_logs_its_model_is_marked_failed_with_its_mlflow_run(tmp_path):
    """Found by a drill: a killed run stays STARTED, and its MLflow run RUNNING, forever. The
    next mlops-demo (no daemon need run) marks both failed; a dagster daemon's run
    monitoring would mark the run failed too (LocalRunLauncher's health check, asserted)."""
    from mlops_assets.lib.dead_runs import LocalRunLauncher, why_dead

    home = tmp_path / "mlops"
    demo = start_demo(home, tmp_path)
    wait_for_step(home, "trained_model", demo)
    deadline = time.monotonic() + 120
    mlflow = mlflow_client(home)
    while not mlflow.search_runs(["1"], filter_string="attributes.status = 'RUNNING'"):
        assert time.monotonic() < deadline, "no MLflow run was ever RUNNING"
        assert demo.poll() is None, "the run ended before its MLflow run was seen running"
        time.sleep(0.02)
    demo.send_signal(signal.SIGKILL)
    demo.communicate(timeout=60)

    with DagsterInstance.from_config(str(home / "dagster_home")) as instance:
        [run] = instance.get_runs()
        assert run.status == DagsterRunStatus.STARTED
        assert isinstance(instance.run_launcher, LocalRunLauncher)
        health = instance.run_launcher.check_run_worker_health(run)
        assert health.status.value == "FAILED"
        assert f"pid {demo.pid}" in (why_dead(instance, run) or "")
    [left] = mlflow.search_runs(["1"], filter_string="attributes.status = 'RUNNING'")

    again = run_mlops_demo(home, cwd=tmp_path)

    assert again.returncode == 0, again.stderr[-4000:]
    assert f"run {run.run_id} was still marked as running" in again.stderr
    assert runs(home)[run.run_id] == DagsterRunStatus.FAILURE
    assert mlflow.get_run(left.info.run_id).info.status == "FAILED"
    assert mlflow.search_runs(["1"], filter_string="attributes.status = 'RUNNING'") == []


def test_a_token_in_the_source_url_is_never_printed_logged_or_stored(tmp_path):
    """Found by a drill: a token in the source URL's query string (and a password in its
    userinfo) appeared in stdout, the event log, compute logs, the raw and dataset manifests
    and the stored asset values. Every byte the run leaves behind is searched for them."""
    import http.server
    import threading

    token, password = "tok-7f3a9c1e5b2d", "pw-c0ffee1234"
    data = to_csv_bytes(generate_house_prices(1200, seed=4))
    served: list[str] = []

    class Source(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Source)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    url = f"http://reader:{password}@127.0.0.1:{port}/houses.csv?token={token}&day=1"
    home = tmp_path / "mlops"
    try:
        out = run_mlops_demo(home, cwd=tmp_path, extra_env={"MLOPS_SOURCE_URI": url})
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr[-4000:]
    assert served == [f"/houses.csv?token={token}&day=1"]  # the token was used, once

    printed = out.stdout + out.stderr
    with opened_instance(home / "dagster_home") as instance:
        [run] = instance.get_runs()
        events = "\n".join(entry.to_json() for entry in instance.all_logs(run.run_id))
    assert f"127.0.0.1:{port}/houses.csv?token=***&day=***" in events  # redacted, not gone
    for secret in (token, password):
        assert secret not in printed
        assert secret not in events
        for path in home.rglob("*"):  # store (manifests, asset values), MLflow, compute logs
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path
