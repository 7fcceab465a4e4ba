"""The served model's process (mlops_assets/ml/model_server.py) run as the image runs it: a real
uvicorn with its workers, a real MLflow model of scikit-learn's diabetes data, SIGTERM to the
parent alone (as `podman stop` and Kubernetes do), and the traffic log in a folder or in a
real SeaweedFS bucket."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_assets.ml import model_server
from mlops_assets.ml.model_server import (
    Exchange,
    FolderSink,
    TrafficLog,
    TrafficSettings,
    container_cpus,
    server_sizing,
    serving_batch,
    size_server,
    split_rows,
)
from mlops_assets.ml.serving import v2_payload
from mlops_assets.stack.process import ServerProcess, free_port, wait_until
from mlops_assets_tests.conftest import imported_before

MODEL_NAME = "diabetes"


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


def features() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).data


class Served:
    """The model server as a process, and how a client talks to it."""

    def __init__(self, model: Path, log_dir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.process = ServerProcess(
            "model-server",
            [sys.executable, model_server.__file__],
            log_dir / "model-server.log",
            env={
                "MLOPS_SERVED_MODEL_PATH": str(model),
                "MLOPS_SERVING_PORT": str(self.port),
                "UVICORN_HOST": "127.0.0.1",
                "MLOPS_MODEL_NAME": MODEL_NAME,
                "MLOPS_MODEL_VERSION": "7",
                "OMP_NUM_THREADS": "1",
                **env,
            },
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process.start()
        wait_until(self._ready, "the model server", 90, self.process.log)

    def _ready(self) -> bool:
        try:
            return self.get("/ping")[0] == 200
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return response.status, response.read().decode()

    def post(
        self, body: bytes, request_id: str | None = None, content_type: str = "application/json"
    ) -> tuple[int, str, str]:
        """(status, body, x-request-id) of POST /invocations."""
        headers = {"Content-Type": content_type}
        if request_id:
            headers["X-Request-ID"] = request_id
        request = urllib.request.Request(
            f"{self.url}/invocations", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = response.read().decode()
                return response.status, answer, response.headers["x-request-id"]
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), error.headers["x-request-id"]

    def terminate(self, timeout: float = 60) -> None:
        """SIGTERM to the server's parent process alone; it must shut down gracefully: its
        workers' apps shut down, and it exits by itself (0, or by the signal uvicorn raises
        again once a single-process server has shut down)."""
        process = self.process.process
        assert process is not None
        os.kill(process.pid, signal.SIGTERM)
        code = process.wait(timeout=timeout)
        self.process.stop()
        assert code in (0, -signal.SIGTERM), self.log()[-3000:]
        assert "Application shutdown complete" in self.log()

    def log(self) -> str:
        return self.process.log.read_text()


@pytest.fixture
def serve(diabetes_model: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[Served] = []

    def start(**env: str) -> Served:
        served = Served(diabetes_model, tmp_path, env)
        started.append(served)
        served.start()
        return served

    yield start
    for served in started:
        served.process.stop()


def payload(frame: pd.DataFrame) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
    ).encode()


def read_lines(root: Path) -> list[dict[str, Any]]:
    """Every line of every traffic log file below ``root``, each parsed as JSON."""
    files = sorted((root / "traffic" / MODEL_NAME).glob("date=*/*.jsonl"))
    return [json.loads(line) for file in files for line in file.read_text().splitlines()]


@pytest.mark.parametrize("batch", ["1", "8"])
def test_every_answered_request_is_in_the_store_exactly_once_after_sigterm(
    serve: Any, tmp_path: Path, batch: str
) -> None:
    """Also with batching: requests sent 8 at a time are predicted together, and each is
    still logged with its own rows and the predictions it was answered."""
    store = tmp_path / "store"
    served = serve(
        MLOPS_TRAFFIC_STORE=str(store),
        MLFLOW_MODELS_WORKERS="2",
        MLOPS_TRAFFIC_FLUSH_SECONDS="0.5",
        MLOPS_SERVING_BATCH=batch,
    )
    assert f"up to {batch} request(s) predicted together" in served.log()
    rows = features()
    requests = {f"req-{i}": rows.iloc[i * 3 : i * 3 + 1 + i % 3] for i in range(60)}

    def send(item: tuple[str, pd.DataFrame]) -> tuple[str, int, str, str]:
        request_id, frame = item
        return (request_id, *served.post(payload(frame), request_id))

    with ThreadPoolExecutor(8) as pool:
        answers = {rid: (status, body, echoed) for rid, status, body, echoed in pool.map(
            send, requests.items())}  # fmt: skip
    assert {status for status, _, _ in answers.values()} == {200}
    assert all(echoed == rid for rid, (_, _, echoed) in answers.items())

    # Bad requests are refused with a 4xx and logged as errors.
    missing = served.post(payload(rows.iloc[:1].drop(columns=["bmi"])), "bad-missing-column")
    typed = served.post(payload(rows.iloc[:1].assign(bp="high")), "bad-type")
    broken = served.post(b'{"dataframe_split": [', "bad-json")
    text = served.post(b"age\n1\n", "bad-content-type", content_type="text/plain")
    assert [missing[0], typed[0], broken[0], text[0]] == [400, 400, 400, 415]
    assert "bmi" in missing[1]
    generated = served.post(payload(rows.iloc[:1]))[2]  # no id given: the server makes one
    assert len(generated) == 32

    # The background thread writes while the server answers, before any shutdown.
    wait_until(lambda: len(read_lines(store)) > 0, "a flushed traffic file", 30, None)
    served.terminate()

    lines = read_lines(store)
    answered = [line for line in lines if line["kind"] == "answer"]
    keys = [(line["request_id"], line["row"]) for line in answered]
    assert len(keys) == len(set(keys)), "a row was logged twice"
    expected_keys = {(rid, row) for rid, frame in requests.items() for row in range(len(frame))}
    assert set(keys) == expected_keys | {(generated, 0)}
    by_key = {(line["request_id"], line["row"]): line for line in answered}
    for request_id, frame in requests.items():
        predictions = json.loads(answers[request_id][1])["predictions"]
        for row in range(len(frame)):
            line = by_key[(request_id, row)]
            assert line["prediction"] == predictions[row]
            assert line["inputs"] == pytest.approx(frame.iloc[row].to_dict())
            assert (line["model_name"], line["model_version"], line["status"]) == (
                MODEL_NAME, "7", 200)  # fmt: skip
    errors = {line["request_id"]: line for line in lines if line["kind"] == "error"}
    assert set(errors) == {"bad-missing-column", "bad-type", "bad-json", "bad-content-type"}
    assert errors["bad-missing-column"]["status"] == 400
    assert "bmi" in errors["bad-missing-column"]["error"]
    assert errors["bad-content-type"]["status"] == 415
    assert errors["bad-json"]["body"] == '{"dataframe_split": ['
    assert not list(store.rglob(".*.partial"))


@pytest.mark.slow
def test_a_full_buffer_keeps_answering_and_counts_what_it_dropped(
    serve: Any, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    served = serve(
        MLOPS_TRAFFIC_STORE=str(store),
        MLFLOW_MODELS_WORKERS="1",
        MLOPS_TRAFFIC_BUFFER="2",
        MLOPS_TRAFFIC_FLUSH_SECONDS="3600",
    )
    rows = features()
    statuses = [served.post(payload(rows.iloc[i : i + 1]), f"r{i}")[0] for i in range(5)]
    assert statuses == [200] * 5

    assert served_counters(served) == {
        "mlops_traffic_recorded_total": 2,
        "mlops_traffic_dropped_total": 3,
        "mlops_traffic_written_lines_total": 0,
        "mlops_traffic_held_requests": 2,
    }
    served.terminate()

    lines = read_lines(store)
    assert [line["request_id"] for line in lines if line["kind"] == "answer"] == ["r0", "r1"]
    (dropped,) = [line for line in lines if line["kind"] == "dropped"]
    assert dropped["count"] == 3
    assert "buffer full: requests not logged since the last write: 3" in served.log()


def served_counters(served: Served) -> dict[str, int]:
    """GET /metrics, parsed: each series' value (the server's, so with no labels)."""
    status, text = served.get("/metrics")
    assert status == 200
    series = [line.split() for line in text.splitlines() if not line.startswith("#")]
    assert all(len(parts) == 2 and "{" not in parts[0] for parts in series), text
    return {name: int(value) for name, value in series}


@pytest.mark.slow
def test_metrics_are_the_servers_whichever_worker_answers(serve: Any, tmp_path: Path) -> None:
    """Two workers share the requests; a scrape reaches one of them, and it must give the
    server's totals (a Prometheus counter that shows one worker's count, then the other's,
    would read as resets)."""
    store = tmp_path / "store"
    served = serve(
        MLOPS_TRAFFIC_STORE=str(store), MLFLOW_MODELS_WORKERS="2", MLOPS_TRAFFIC_FLUSH_SECONDS="0.5"
    )
    rows = features()
    sent = 0

    def workers_that_answered() -> set[str]:
        return {file.name.split("-", 1)[1].rsplit("-", 1)[0]
                for file in store.rglob("*.jsonl")}  # fmt: skip

    # Requests on their own connections, 8 at a time, until both workers have answered some.
    with ThreadPoolExecutor(8) as pool:
        for _ in range(20):
            statuses = list(pool.map(
                lambda i: served.post(payload(rows.iloc[i : i + 1]), f"m{i}")[0],
                range(sent, sent + 16)))  # fmt: skip
            assert statuses == [200] * 16
            sent += 16
            time.sleep(0.6)  # a flush
            if len(workers_that_answered()) == 2:
                break
    assert len(workers_that_answered()) == 2, "one worker answered every request"

    def settled() -> dict[str, int] | None:
        counters = served_counters(served)
        return counters if counters["mlops_traffic_held_requests"] == 0 else None

    wait_until(lambda: settled() is not None, "every request in the store", 30, None)
    lines = sum(len(f.read_text().splitlines()) for f in store.rglob("*.jsonl"))
    # Ten scrapes, each on a new connection: whichever worker answers, the same totals.
    for _ in range(10):
        assert served_counters(served) == {
            "mlops_traffic_recorded_total": sent,
            "mlops_traffic_dropped_total": 0,
            "mlops_traffic_written_lines_total": lines,
            "mlops_traffic_held_requests": 0,
        }
    served.terminate()


@pytest.mark.slow
def test_a_worker_imports_skops_before_mlflow(serve: Any) -> None:
    """skops.io's import scans the modules loaded ahead of SciPy (create_app says why)."""
    served = serve(MLOPS_TRAFFIC_LOG="off", PYTHONPROFILEIMPORTTIME="1")
    assert served.post(payload(features().iloc[:2]), "r1")[0] == 200
    served.terminate()
    imported_before(served.log(), "skops.io", "mlflow")


@pytest.mark.slow
def test_one_setting_turns_the_log_off(serve: Any, tmp_path: Path) -> None:
    store = tmp_path / "store"
    served = serve(MLOPS_TRAFFIC_STORE=str(store), MLOPS_TRAFFIC_LOG="off")
    assert served.post(payload(features().iloc[:2]), "r1")[0] == 200
    assert served.get("/metrics") == (200, "")
    served.terminate()
    assert not store.exists()


@pytest.mark.slow
def test_the_log_goes_to_an_s3_bucket(serve: Any, seaweed: Any) -> None:
    served = serve(
        MLOPS_TRAFFIC_STORE=f"s3://{seaweed.bucket}/served-traffic",
        MLFLOW_MODELS_WORKERS="1",
        **seaweed.env(),
    )
    rows = features()
    for i in range(3):
        assert served.post(payload(rows.iloc[i : i + 2]), f"s3-{i}")[0] == 200
    served.terminate()

    client = seaweed.client()
    listed = client.list_objects_v2(Bucket=seaweed.bucket, Prefix="served-traffic/traffic/")
    keys = [item["Key"] for item in listed.get("Contents", [])]
    assert keys
    assert all(f"/{MODEL_NAME}/date=" in key for key in keys)
    lines = [
        json.loads(line)
        for key in keys
        for line in client.get_object(Bucket=seaweed.bucket, Key=key)["Body"].read().splitlines()
    ]
    assert sorted((line["request_id"], line["row"]) for line in lines) == [
        (f"s3-{i}", row) for i in range(3) for row in range(2)
    ]
    assert "AWS_SECRET_ACCESS_KEY" not in served.log()
    assert seaweed.env()["AWS_SECRET_ACCESS_KEY"] not in served.log()


class FailingOnce:
    """A folder that refuses the first write, as a store that is briefly unreachable does."""

    def __init__(self, root: Path) -> None:
        self.folder = FolderSink(str(root))
        self.failed = False

    def write(self, key: str, data: bytes) -> None:
        if not self.failed:
            self.failed = True
            raise OSError("store unreachable")
        self.folder.write(key, data)

    def describe(self) -> str:
        return "a folder that fails once"


def exchange(request_id: str) -> Exchange:
    return Exchange(
        request_id, time.time(), 0.001, 200, pd.DataFrame({"x": [1.0]}), '{"predictions":[2]}'
    )


def test_a_write_that_failed_is_retried_under_its_own_key_and_counts_against_the_buffer(
    tmp_path: Path,
) -> None:
    log = TrafficLog(FailingOnce(tmp_path), MODEL_NAME, "1", capacity=3, flush_seconds=60)
    assert log.record(exchange("a"))
    assert log.record(exchange("b"))
    with pytest.raises(OSError, match="unreachable"):
        log.flush()
    # The two requests wait for the store, so the buffer has room for one more.
    assert log.record(exchange("c"))
    assert not log.record(exchange("d"))
    log.flush()

    lines = read_lines(tmp_path)
    assert [line["request_id"] for line in lines if line["kind"] == "answer"] == ["a", "b", "c"]
    assert [line["count"] for line in lines if line["kind"] == "dropped"] == [1]
    assert len(list((tmp_path / "traffic").rglob("*.jsonl"))) == 2  # a, b's file once; c's


def test_the_servers_counters_sum_every_worker_and_hold_only_the_running_ones(
    tmp_path: Path,
) -> None:
    import subprocess

    ended = subprocess.Popen(["true"])
    ended.wait()  # a worker that has ended: its pid is free
    (tmp_path / "ended.json").write_text(json.dumps({"pid": ended.pid, "values": [5, 1, 4, 3]}))
    (tmp_path / ".half.json.partial").write_text('{"pid": 1, "val')  # a write under way
    (tmp_path / "other.json").write_text('{"not": "counters"}')  # not a worker's
    log = TrafficLog(
        FolderSink(str(tmp_path / "store")), MODEL_NAME, "1", capacity=10, flush_seconds=60,
        worker="this", counters_dir=str(tmp_path),
    )  # fmt: skip
    assert log.record(exchange("a"))
    assert log.record(exchange("b"))
    # Counts add up over every worker the server had; requests held, over the running ones.
    assert log.server_counters() == (7, 1, 4, 2)
    assert json.loads((tmp_path / "this.json").read_text())["values"] == [2, 0, 0, 2]
    log.flush()
    assert log.server_counters() == (7, 1, 6, 0)
    assert "mlops_traffic_written_lines_total 6\n" in log.metrics()


def test_settings_are_read_from_the_environment_and_a_wrong_switch_is_refused() -> None:
    settings = TrafficSettings.from_env(
        {"MLOPS_TRAFFIC_LOG": "off", "MLOPS_TRAFFIC_STORE": "s3://b/p", "MLOPS_TRAFFIC_BUFFER": "5"}
    )
    assert (settings.enabled, settings.store, settings.buffer_requests) == (False, "s3://b/p", 5)
    assert TrafficSettings.from_env({}).store == "/var/lib/mlops/store"
    with pytest.raises(ValueError, match="MLOPS_TRAFFIC_LOG must be on or off, not 'maybe'"):
        TrafficSettings.from_env({"MLOPS_TRAFFIC_LOG": "maybe"})


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


def test_the_server_is_sized_unless_told() -> None:
    environ: dict[str, str] = {}
    assert size_server(environ, "200000 100000", 8) == 2
    assert environ == {"MLFLOW_MODELS_WORKERS": "2", "OMP_NUM_THREADS": "1"}
    environ = {"MLFLOW_MODELS_WORKERS": "1"}
    assert size_server(environ, None, 4) == 1
    assert environ["OMP_NUM_THREADS"] == "4"
    environ = {"MLFLOW_MODELS_WORKERS": "3", "OMP_NUM_THREADS": "2"}
    assert size_server(environ, None, 4) == 3
    assert environ["OMP_NUM_THREADS"] == "2"


def test_the_entry_point_imports_nothing_of_the_project() -> None:
    """The file goes into the image without the project."""
    source = Path(model_server.__file__).read_text()
    assert "import mlops_assets" not in source
    assert "from mlops_assets" not in source


# --- the Open Inference Protocol (V2) -------------------------------------------------------


def post_json(url: str, document: Any) -> tuple[int, Any, str]:
    request = urllib.request.Request(
        url,
        data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers["x-request-id"]
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers["x-request-id"]


def test_v2_speaks_the_open_inference_protocol_and_logs_what_it_answers(
    serve: Any, diabetes_model: Path, tmp_path: Path
) -> None:
    import mlflow

    store = tmp_path / "store"
    served = serve(MLOPS_SERVING_PROTOCOL="v2", MLOPS_TRAFFIC_STORE=str(store))
    rows = features().iloc[:3]
    expected = mlflow.pyfunc.load_model(str(diabetes_model)).predict(rows)

    assert served.get("/v2/health/live")[0] == served.get("/v2/health/ready")[0] == 200
    assert served.get(f"/v2/models/{MODEL_NAME}/ready")[0] == 200
    metadata = json.loads(served.get(f"/v2/models/{MODEL_NAME}")[1])
    assert (metadata["name"], metadata["versions"]) == (MODEL_NAME, ["7"])
    assert [i["name"] for i in metadata["inputs"]] == list(rows.columns)
    assert {i["datatype"] for i in metadata["inputs"]} == {"FP64"}

    infer = f"{served.url}/v2/models/{MODEL_NAME}/infer"
    status, answer, echoed = post_json(infer, v2_payload(rows, "v2-first"))
    assert (status, answer["id"], echoed) == (200, "v2-first", "v2-first")
    assert (answer["model_name"], answer["model_version"]) == (MODEL_NAME, "7")
    [output] = answer["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("prediction", "FP64", [3])
    assert output["data"] == pytest.approx(list(expected))
    versioned = f"{served.url}/v2/models/{MODEL_NAME}/versions/7/infer"
    assert post_json(versioned, v2_payload(rows.iloc[:1], "v2-second"))[0] == 200

    # Refusals: V2's {"error": ...} with a 4xx that says what is wrong.
    other_version = post_json(f"{served.url}/v2/models/{MODEL_NAME}/versions/8/infer", {})
    assert other_version[0] == 404
    assert "version '8' is not served here" in other_version[1]["error"]
    missing = post_json(infer, v2_payload(rows.drop(columns=["bmi"]), "v2-missing"))
    assert missing[0] == 400
    assert "bmi" in missing[1]["error"]
    short = v2_payload(rows, "v2-short")
    short["inputs"][0]["data"] = short["inputs"][0]["data"][:2]
    assert post_json(infer, short)[:2] == (
        400,
        {"error": "input 'age' has 2 values for shape [3] (3 expected)"},
    )
    typed = v2_payload(rows, "v2-typed")
    typed["inputs"][1] |= {"datatype": "BYTES", "data": ["high"] * 3}
    assert post_json(infer, typed)[0] == 400
    # The other protocol is not served.
    assert post_json(f"{served.url}/invocations", {})[0] == 404
    served.terminate()

    lines = read_lines(store)
    answered = {(x["request_id"], x["row"]): x for x in lines if x["kind"] == "answer"}
    assert set(answered) == {("v2-first", 0), ("v2-first", 1), ("v2-first", 2), ("v2-second", 0)}
    assert [answered[("v2-first", r)]["prediction"] for r in range(3)] == pytest.approx(
        list(expected)
    )
    assert answered[("v2-first", 1)]["inputs"]["bmi"] == pytest.approx(rows.iloc[1]["bmi"])
    errors = {x["request_id"]: x for x in lines if x["kind"] == "error"}
    assert set(errors) >= {"v2-missing", "v2-short", "v2-typed"}
    assert "(3 expected)" in errors["v2-short"]["error"]


def test_v2_answers_a_classifier_s_columns_as_output_tensors() -> None:
    answer = json.dumps(
        {
            "predictions": [
                {"prediction": "yes", "probability_yes": 0.8},
                {"prediction": "no", "probability_yes": 0.1},
            ]
        }
    )
    document = json.loads(model_server.v2_response(answer, "churn", "2", "r1"))
    assert document["outputs"] == [
        {"name": "prediction", "datatype": "BYTES", "shape": [2], "data": ["yes", "no"]},
        {"name": "probability_yes", "datatype": "FP64", "shape": [2], "data": [0.8, 0.1]},
    ]
    with pytest.raises(ValueError, match="MLOPS_SERVING_PROTOCOL must be one of mlflow, v2"):
        model_server.serving_protocol({"MLOPS_SERVING_PROTOCOL": "grpc"})


class _Slow:
    """The diabetes model as MLflow loads it, each prediction first calling ``hold`` and
    noting its thread and how many predictions were under way at once."""

    def __init__(self, model: Path, hold: Callable[[], object]) -> None:
        import mlflow

        self.model = mlflow.pyfunc.load_model(str(model))
        self.metadata = self.model.metadata
        self.hold = hold
        self.lock = threading.Lock()
        self.running = 0
        self.most_at_once = 0
        self.scored: list[tuple[float, str]] = []

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.hold()
        with self.lock:
            self.running -= 1
            self.scored.append((float(data["age"].iloc[0]), threading.current_thread().name))
        return self.model.predict(data, params=params)


async def _asgi_post(app: Any, body: bytes, request_id: str) -> tuple[int, str]:
    """POST /invocations to the ASGI ``app`` in this process: the response's status and
    body."""
    sent: list[dict[str, Any]] = []
    received = iter([{"type": "http.request", "body": body, "more_body": False}])
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/invocations",
        "headers": [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())],
    }

    async def receive() -> dict[str, Any]:
        return next(received)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"]), sent[1]["body"].decode()


def test_a_worker_scores_one_request_at_a_time_in_order_of_arrival(diabetes_model: Path) -> None:
    rows = features().head(6)
    bodies = [payload(rows.iloc[[i]]) for i in range(len(rows))]

    async def post_together(app: Any) -> list[int]:
        posts = []
        for i, body in enumerate(bodies):
            posts.append(asyncio.create_task(_asgi_post(app, body, f"r{i}")))
            await asyncio.sleep(0.01)  # arrive in this order
        return [status for status, _ in await asyncio.gather(*posts)]

    slow = _Slow(diabetes_model, lambda: time.sleep(0.05))
    statuses = asyncio.run(post_together(model_server.ModelApp(slow, None, 30)))
    assert statuses == [200] * len(bodies)
    assert slow.most_at_once == 1
    assert [age for age, _ in slow.scored] == pytest.approx(list(rows["age"]))
    assert {thread for _, thread in slow.scored} == {"scoring_0"}

    # Past the timeout: all are answered 504 while the first is still being scored (held
    # until released); it then finishes, and the ones that waited for the thread never start.
    release = threading.Event()
    stuck = _Slow(diabetes_model, lambda: release.wait(60))
    app = model_server.ModelApp(stuck, None, 0.3)
    statuses = asyncio.run(post_together(app))
    assert statuses == [504] * len(bodies)
    assert (stuck.running, stuck.scored) == (1, [])
    release.set()
    app.scoring.shutdown(wait=True)
    assert [age for age, _ in stuck.scored] == pytest.approx([rows["age"].iloc[0]])


# --- batching -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diabetes_forest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tree model of the diabetes data, whose rows are scored each on its own: its answers
    are the same bytes whether rows are predicted alone or together."""
    import mlflow
    from mlflow.models import infer_signature
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import HistGradientBoostingRegressor

    data = load_diabetes(as_frame=True)
    model = HistGradientBoostingRegressor(max_iter=50, random_state=0).fit(data.data, data.target)
    path = tmp_path_factory.mktemp("forest") / "model"
    signature = infer_signature(data.data, model.predict(data.data))
    trusted = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
    mlflow.sklearn.save_model(model, path, signature=signature, skops_trusted_types=trusted)
    return path


class _Counting:
    """An MLflow model of the diabetes data as it was loaded, noting how many rows each predict
    call was given (and their ages) and holding the first call until ``release`` is set."""

    def __init__(self, model: Path, release: threading.Event | None = None) -> None:
        import mlflow

        self.model = mlflow.pyfunc.load_model(str(model))
        self.metadata = self.model.metadata
        self.release = release
        self.calls: list[int] = []
        self.seen: list[list[float]] = []
        self.running = 0

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        self.running += 1
        if self.release is not None and not self.calls:
            self.release.wait(60)
        self.calls.append(len(data))
        self.seen.append([float(v) for v in data["age"]])
        self.running -= 1
        return self.model.predict(data, params=params)


def _answers_while_busy(app: Any, model: _Counting, bodies: list[bytes]) -> list[tuple[int, str]]:
    """The first body is posted and held at the model; the others are posted and wait for
    it; then it is released. Each request's status and body, in order."""
    assert model.release is not None

    async def run() -> list[tuple[int, str]]:
        first = asyncio.create_task(_asgi_post(app, bodies[0], "r0"))
        while not model.running:
            await asyncio.sleep(0.005)
        rest = [
            asyncio.create_task(_asgi_post(app, body, f"r{i}"))
            for i, body in enumerate(bodies[1:], 1)
        ]
        while app.batcher.waiting < len(rest) and not all(task.done() for task in rest):
            await asyncio.sleep(0.005)
        model.release.set()
        return list(await asyncio.gather(first, *rest))

    return asyncio.run(run())


def _alone(model: Path, bodies: list[bytes]) -> list[tuple[int, str]]:
    """What a server predicting each request alone answers."""
    app = model_server.ModelApp(_Counting(model), None, 30)

    async def run() -> list[tuple[int, str]]:
        return [await _asgi_post(app, body, f"a{i}") for i, body in enumerate(bodies)]

    return asyncio.run(run())


def test_requests_that_wait_for_the_model_are_predicted_together_and_answered_as_alone(
    diabetes_forest: Path,
) -> None:
    rows = features().head(7)
    bodies = [payload(rows.iloc[[i]]) for i in range(len(rows))]
    bodies[3] = payload(rows.iloc[3:6])  # three rows in one request
    model = _Counting(diabetes_forest, threading.Event())
    app = model_server.ModelApp(model, None, 30, batch=8)

    answers = _answers_while_busy(app, model, bodies)

    # The first was predicted alone; the six that waited for it in one call of eight rows.
    assert model.calls == [1, 8]
    # Each answer is, byte for byte, what predicting it alone answers.
    assert answers == _alone(diabetes_forest, bodies)
    assert [len(json.loads(body)["predictions"]) for _, body in answers] == [1, 1, 1, 3, 1, 1, 1]


def test_requests_that_differ_are_predicted_apart_and_a_bad_one_gets_its_own_error(
    diabetes_model: Path,
) -> None:
    rows = features().head(6)
    reordered = rows.iloc[[2]][list(reversed(rows.columns))]  # the same row, columns reversed
    broken = rows.iloc[[4]].assign(bmi=None)  # the pipeline cannot scale a missing value
    bodies = [payload(rows.iloc[[i]]) for i in (0, 1)]
    bodies += [
        payload(reordered),
        payload(rows.iloc[[3]]),
        payload(broken),
        payload(rows.iloc[[5]]),
    ]
    model = _Counting(diabetes_model, threading.Event())
    app = model_server.ModelApp(model, None, 30, batch=8)

    answers = _answers_while_busy(app, model, bodies)

    # Alone: the first. Together: rows 1, 3, broken and 5 (same columns, same types), which
    # fails; then each of them alone. The reversed columns are another table: apart. (The
    # requests that waited may reach the model in either order; each call is told by its rows.)
    age = rows["age"].tolist()
    assert model.seen[0] == [age[0]]
    together = [sorted(call) for call in model.seen if len(call) > 1]
    assert together == [sorted([age[1], age[3], age[4], age[5]])]
    alone_calls = sorted(call[0] for call in model.seen[1:] if len(call) == 1)
    assert alone_calls == sorted([age[1], age[3], age[4], age[5], reordered["age"].iloc[0]])
    assert len(model.seen) == 7
    alone = _alone(diabetes_model, bodies)
    assert [status for status, _ in answers] == [200, 200, 200, 200, 400, 200]
    assert [a for i, a in enumerate(answers) if i != 4] == [
        a for i, a in enumerate(alone) if i != 4
    ]
    # The bad request's error is its own, as MLflow words it (its stack trace differs only
    # by the frames of the thread that raised it).
    error, error_alone = json.loads(answers[4][1]), json.loads(alone[4][1])
    assert (error["error_code"], error["message"]) == (
        error_alone["error_code"],
        error_alone["message"],
    )
    assert "Input X contains NaN" in error["stack_trace"]


def test_a_request_answered_504_before_its_turn_is_not_predicted(diabetes_forest: Path) -> None:
    rows = features().head(5)
    bodies = [payload(rows.iloc[[i]]) for i in range(len(rows))]
    model = _Counting(diabetes_forest, threading.Event())
    app = model_server.ModelApp(model, None, 0.3, batch=8)

    async def run() -> list[tuple[int, str]]:
        tasks = [
            asyncio.create_task(_asgi_post(app, body, f"r{i}")) for i, body in enumerate(bodies)
        ]
        return list(await asyncio.gather(*tasks))

    answers = asyncio.run(run())  # the first is held at the model past every timeout
    assert [status for status, _ in answers] == [504] * len(bodies)
    assert model.calls == []
    assert model.release is not None
    model.release.set()
    app.scoring.shutdown(wait=True)
    assert model.calls == [1]  # the one under way finished; those that waited never started


def test_a_prediction_is_split_back_into_each_request_s_rows() -> None:
    import numpy as np

    array = np.arange(12.0).reshape(6, 2)
    parts = split_rows(array, [1, 3, 2])
    assert parts is not None
    assert [p.tolist() for p in parts] == [
        array[:1].tolist(),
        array[1:4].tolist(),
        array[4:].tolist(),
    ]
    frame = pd.DataFrame({"label": list("abcdef"), "p": np.linspace(0, 1, 6)})
    parts = split_rows(frame, [2, 4])
    assert parts is not None
    pd.testing.assert_frame_equal(parts[1], frame.iloc[2:].reset_index(drop=True))
    series = split_rows(frame["p"], [5, 1])
    assert series is not None
    assert series[1].tolist() == [1.0]
    assert series[1].index.tolist() == [0]
    assert split_rows(list("abc"), [2, 1]) == [["a", "b"], ["c"]]
    # Not one answer per row, or rows it cannot tell apart: None (each is predicted alone).
    assert split_rows(array, [2, 2]) is None
    assert split_rows(frame.set_index("label"), [3, 3]) is None
    assert split_rows({"p": [1, 2]}, [1, 1]) is None
    assert split_rows(np.float64(1.0), [1]) is None


def test_the_batch_setting_is_auto_or_a_whole_number_from_1_to_64() -> None:
    assert serving_batch({}) is None  # auto: each worker decides from its model
    assert serving_batch({"MLOPS_SERVING_BATCH": " Auto "}) is None
    assert serving_batch({"MLOPS_SERVING_BATCH": " 16 "}) == 16
    assert serving_batch({"MLOPS_SERVING_BATCH": "1"}) == 1
    assert serving_batch({"MLOPS_SERVING_BATCH": "64"}) == 64
    for wrong in ("0", "65", "eight", "1.5", "-2"):
        with pytest.raises(
            ValueError,
            match=f"MLOPS_SERVING_BATCH must be auto or a whole number from 1 to 64, not '{wrong}'",
        ):
            serving_batch({"MLOPS_SERVING_BATCH": wrong})


def test_auto_batches_a_tree_model_and_predicts_a_linear_one_request_by_request(
    diabetes_model: Path, diabetes_forest: Path
) -> None:
    """auto (MLOPS_SERVING_BATCH unset) looks at the model MLflow loaded: every step of the
    tree model answers each row alone, and its example's rows agree, predicted together or
    alone; the linear model's Ridge multiplies its rows as one matrix. A number set is used."""
    import mlflow

    forest = mlflow.pyfunc.load_model(str(diabetes_forest))
    linear = mlflow.pyfunc.load_model(str(diabetes_model))
    rows = features().head(20)

    batch, why = model_server.batch_for_model(forest, None, rows)
    assert (batch, why) == (16, "auto: every step answers each row on its own, as its 20-row "
                                "input example confirms")  # fmt: skip
    assert model_server.batch_for_model(forest, None, None)[0] == 16  # no example to confirm
    batch, why = model_server.batch_for_model(linear, None, rows)
    assert batch == 1
    assert why.startswith("auto: Ridge not known to answer each row alone")
    assert model_server.batch_for_model(linear, 8, rows) == (8, "MLOPS_SERVING_BATCH")
    assert model_server.batch_for_model(forest, 1, rows) == (1, "MLOPS_SERVING_BATCH")


class _CentredOnTheBatch:
    """A model whose answer for a row depends on the rows beside it (the batch's mean age)."""

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return (data["age"] - data["age"].mean()).to_numpy()


def test_a_model_whose_rows_answer_differently_together_is_caught_by_its_example(
    diabetes_forest: Path,
) -> None:
    import mlflow

    rows = features().head(6)
    assert model_server.answers_rows_alone(mlflow.pyfunc.load_model(str(diabetes_forest)), rows)
    assert not model_server.answers_rows_alone(_CentredOnTheBatch(), rows)


@pytest.mark.parametrize(
    ("model_type", "unknown"),
    [
        ("hist_gradient_boosting", []),
        ("random_forest", ["RandomForestClassifier"]),
        ("logistic_regression", ["LogisticRegression"]),
    ],
)
def test_the_projects_classifiers_on_real_data_are_looked_into_step_by_step(
    model_type: str, unknown: list[str]
) -> None:
    """The registered classifier as the project builds it (ClassAnswer around the Pipeline:
    imputers, scaler, one-hot encoder, estimator), fitted on scikit-learn's breast cancer data.
    A forest averages its trees' answers on threads, in whichever order they finish, so it is
    not counted among the models that answer each row alone."""
    from mlops_assets.ml.answering import ClassAnswer
    from mlops_assets.ml.train import TrainingConfig, fit
    from mlops_assets_tests.ml.test_tasks import breast_cancer

    splits, spec = breast_cancer()
    model = ClassAnswer(fit(splits, spec, TrainingConfig(model_type)).pipeline, spec.classes)

    assert model_server.not_row_wise(model) == unknown
    if not unknown:
        test = splits["test"].drop(columns=[spec.target.name]).reset_index(drop=True)
        assert model_server.answers_rows_alone(model, test)


def _started(served: Served, workers: int) -> bool:
    return served.log().count("Application startup complete") >= workers


@pytest.mark.slow
def test_each_worker_says_what_auto_decided_for_its_model(
    diabetes_model: Path, diabetes_forest: Path, tmp_path: Path
) -> None:
    """MLOPS_SERVING_BATCH unset, as the image starts: each worker of the tree model's server
    batches, each of the linear model's predicts request by request, and both say why."""
    servers = {
        name: Served(model, tmp_path / name, {"MLFLOW_MODELS_WORKERS": "2"})
        for name, model in (("forest", diabetes_forest), ("linear", diabetes_model))
    }
    try:
        for name, served in servers.items():
            (tmp_path / name).mkdir()
            served.start()
            assert served.post(payload(features().iloc[:3]), "r1")[0] == 200
            # /ping answers once one worker is up; the other may still be loading.
            wait_until(
                functools.partial(_started, served, 2), f"the {name} model's two workers", 90,
                served.process.log,
            )  # fmt: skip
        logs = {name: served.log() for name, served in servers.items()}
    finally:
        for served in servers.values():
            served.process.stop()
    for log in logs.values():
        assert "each worker decides from its model how many requests to predict together" in log
    forest = model_server.announced_batches(logs["forest"])
    linear = model_server.announced_batches(logs["linear"])
    assert [batch for batch, _ in forest] == [16, 16], logs["forest"]
    assert all(why.startswith("auto: every step answers each row on its own") for _, why in forest)
    assert [batch for batch, _ in linear] == [1, 1], logs["linear"]
    assert all(why.startswith("auto: Ridge not known") for _, why in linear)


def test_what_a_worker_says_about_batching_is_read_back_from_its_log() -> None:
    said = model_server.BATCHING_LINE.format(
        pid=12, batch=16, why="auto: every step answers each row on its own (no input example)"
    )
    log = f"INFO: started\n{said}\nINFO: Application startup complete.\n"
    assert model_server.announced_batches(log) == [
        (16, "auto: every step answers each row on its own (no input example)")
    ]
    assert model_server.announced_batches("INFO: started\n") == []
