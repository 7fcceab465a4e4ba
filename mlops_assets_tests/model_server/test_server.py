"""The served model's process (mlops_assets/model_server) run as the image runs it: the package
copied alone into a folder as the image build copies it, started with `python -m model_server`, a real
uvicorn with its workers, a real MLflow model of scikit-learn's diabetes data, SIGTERM to the
parent alone (as `podman stop` and Kubernetes do), SIGKILL to a worker (as the OOM killer
does), and the traffic log in a folder or in a real SeaweedFS bucket."""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from mlops_assets.ml.serving import SERVER_PACKAGE, v2_payload
from mlops_assets.model_server import app as server_app
from mlops_assets.model_server.batching import (
    BATCHING_LINE,
    JSON_VALUES,
    Batcher,
    announced_batches,
    answers_rows_alone,
    batch_for_model,
    not_row_wise,
    split_rows,
    values_fit,
)
from mlops_assets.model_server.limits import (
    IGNORED_COLUMNS_HEADER,
    RequestRefused,
    nesting_beyond,
    read_json,
)
from mlops_assets.model_server.record import ERROR_BODY_LIMIT, Exchange
from mlops_assets.model_server.settings import max_body_bytes, serving_batch, serving_protocol
from mlops_assets.model_server.sizing import container_cpus, server_sizing, size_server
from mlops_assets.model_server.traffic_log import (
    JOURNAL_PREFIX,
    FolderSink,
    TrafficLog,
    TrafficSettings,
)
from mlops_assets.model_server.v2 import v2_response
from mlops_assets.stack.process import wait_until
from mlops_assets_tests.conftest import imported_before
from mlops_assets_tests.model_server.served import (
    MIB,
    MODEL_NAME,
    Served,
    asgi_request,
    features,
    payload,
    read_lines,
    scrape,
    served_counters,
)


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
    metrics = scrape(served)
    assert not [name for name, _ in metrics if name.startswith("mlops_traffic_")]
    assert metrics[("mlops_rows_predicted_total", ())] == 2
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


# A worker of the server, killed (SIGKILL) while it holds requests in its journal; its mode says
# when. "answering": between requests (the fourth dropped: the journal holds three at most);
# "writing": just as its store took the segment's file, before the worker could note it.
ENDED_WORKER = """
import os, signal, sys, time
sys.path.insert(0, sys.argv[1])
import pandas as pd
from model_server.record import Exchange
from model_server.traffic_log import FolderSink, TrafficLog

class KilledWriting(FolderSink):
    def write(self, key, data):
        super().write(key, data)
        os.kill(os.getpid(), signal.SIGKILL)

mode, store, folder = sys.argv[2:]
sink = KilledWriting(store) if mode == "writing" else FolderSink(store)
log = TrafficLog(sink, "diabetes", "1", capacity=3, flush_seconds=60, worker="ended",
                 folder=folder)
for i in range(4):
    log.record(Exchange(f"e{i}", time.time(), 0.001, 200, pd.DataFrame({"x": [1.0]}),
                        '{"predictions":[2]}'))
if mode == "writing":
    log.flush()
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("killed", ["answering", "writing"])
def test_what_a_killed_worker_journaled_another_ships_once_and_counts(
    tmp_path: Path, killed: str, server_folder: Path
) -> None:
    folder, store = tmp_path / "journal", tmp_path / "store"
    folder.mkdir()
    ended = subprocess.run(
        [sys.executable, "-c", ENDED_WORKER, str(server_folder), killed, str(store), str(folder)],
        capture_output=True,
        text=True,
    )
    assert ended.returncode == -signal.SIGKILL, ended.stderr
    written_before = len(read_lines(store))  # "writing": its segment's file, 3 lines and 1
    assert written_before == (4 if killed == "writing" else 0)
    (folder / ".half.counters.partial").write_bytes(b"\0" * 3)  # a worker starting
    (folder / "other.counters").write_bytes(b"not")  # not a worker's
    log = TrafficLog(
        FolderSink(str(store)), MODEL_NAME, "1", capacity=10, flush_seconds=60,
        worker="this", folder=str(folder),
    )  # fmt: skip
    assert log.record(exchange("a"))
    assert log.record(exchange("b"))
    # The server's counts add up every worker it had; the killed one holds what it left.
    assert log.counters() == (2, 0, 0, 2)
    assert log.server_counters() == (5, 1, 0, 5)

    log.flush()  # this worker's journal, and then the killed one's
    assert log.server_counters() == (5, 1, 6, 0)  # five answers and a dropped line
    lines = read_lines(store)
    answered = sorted(line["request_id"] for line in lines if line["kind"] == "answer")
    assert answered == ["a", "b", "e0", "e1", "e2"]
    dropped = [(line["count"], line["worker"]) for line in lines if line["kind"] == "dropped"]
    assert dropped == [(1, "ended")]
    assert not list(folder.glob("*.journal"))
    # Looked at again, nothing is written twice.
    log.flush()
    assert read_lines(store) == lines
    assert log.server_counters() == (5, 1, 6, 0)
    assert log.metric_values()[2][:2] == ("mlops_traffic_written_lines_total", "counter")
    assert [value for *_, value in log.metric_values()] == [5, 1, 6, 0]


def test_the_journal_is_bounded_in_bytes_as_well_as_requests(tmp_path: Path) -> None:
    log = TrafficLog(
        FolderSink(str(tmp_path / "store")), MODEL_NAME, "1", capacity=100, flush_seconds=60,
        capacity_bytes=10_000,
    )  # fmt: skip
    body = b"x" * 4000  # a refused request's body, logged
    recorded = [
        log.record(Exchange(f"big{i}", time.time(), 0.001, 400, error="no", body=body))
        for i in range(20)
    ]
    assert recorded == [True, True] + [False] * 18
    journal = sum(path.stat().st_size for path in log.folder.glob("*.journal"))
    assert journal <= 10_000 + 18  # and one byte for each request dropped
    assert log.counters() == (2, 18, 0, 2)
    log.flush()
    assert log.record(exchange("small"))  # room again once the store has them
    log.flush()
    lines = read_lines(tmp_path / "store")
    assert [line["request_id"] for line in lines if line["kind"] != "dropped"] == [
        "big0", "big1", "small"]  # fmt: skip
    assert [line["count"] for line in lines if line["kind"] == "dropped"] == [18]
    assert log.counters() == (3, 18, 4, 0)


def test_settings_are_read_from_the_environment_and_a_wrong_switch_is_refused() -> None:
    settings = TrafficSettings.from_env(
        {"MLOPS_TRAFFIC_LOG": "off", "MLOPS_TRAFFIC_STORE": "s3://b/p", "MLOPS_TRAFFIC_BUFFER": "5",
         "MLOPS_TRAFFIC_BUFFER_BYTES": "4096"}
    )  # fmt: skip
    assert (settings.enabled, settings.store) == (False, "s3://b/p")
    assert (settings.buffer_requests, settings.buffer_bytes) == (5, 4096)
    default = TrafficSettings.from_env({})
    assert (default.store, default.buffer_requests, default.buffer_bytes) == (
        "/var/lib/mlops/store", 10_000, 64 * MIB)  # fmt: skip
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


def test_the_app_imports_nothing_of_the_project(server_folder: Path) -> None:
    """The package goes into the image without the project: copied alone, every module of it
    imports, and nothing of mlops_assets is loaded (the lint rule in its ruff.toml says so of
    the source)."""
    modules = [f"{SERVER_PACKAGE}.{path.stem}" for path in server_folder.glob("*/*.py")]
    probe = (
        "import importlib, sys\n"
        f"for name in {sorted(modules)!r}:\n"
        "    if not name.endswith('__main__'): importlib.import_module(name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.startswith('mlops_assets')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(server_folder)},
        cwd=server_folder,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert len(modules) >= 10


# --- what a request may be ------------------------------------------------------------------


def test_nesting_is_measured_by_brackets_outside_strings() -> None:
    assert nesting_beyond(payload(features().iloc[:3]), 32) == 0
    assert nesting_beyond(b"[" * 32 + b"]" * 32, 32) == 0  # at the limit
    assert nesting_beyond(b"[" * 33 + b"]" * 33, 32) == 33
    assert nesting_beyond(b'{"a": ' + b"[{" * 20 + b"}]" * 20 + b"}", 32) == 41
    # Brackets in strings are text, escaped quotes and all, whichever way they lean.
    assert nesting_beyond(b'["' + b"[" * 100 + b'"]', 32) == 0
    assert nesting_beyond(b'["\\"' + b"{" * 100 + b'"]', 32) == 0
    assert nesting_beyond(b"[" * 40 + b'"' + b"]" * 40 + b'"' + b"]" * 40, 32) == 40
    with pytest.raises(RequestRefused, match="nested 100000 levels deep; this"):
        read_json(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(RequestRefused, match="JSON cannot be read: Exceeds"):
        read_json(b"[" + b"7" * 5000 + b"]")
    with pytest.raises(json.JSONDecodeError):
        read_json(b'{"dataframe_split": [')


def test_the_body_limit_setting_is_a_whole_number_of_bytes() -> None:
    assert max_body_bytes({}) == 8 * MIB
    assert max_body_bytes({"MLOPS_SERVING_MAX_BODY_BYTES": " 1024 "}) == 1024
    for wrong in ("0", "-1", "1.5", "8MiB"):
        with pytest.raises(ValueError, match=f"a whole number of bytes above 0, not '{wrong}'"):
            max_body_bytes({"MLOPS_SERVING_MAX_BODY_BYTES": wrong})


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (resident at most, so far) of process ``pid``, in KiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {key: int(value) for key, value in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status,
                                                         re.MULTILINE)}  # fmt: skip


def post_streamed(
    served: Served, path: str, chunks: list[bytes], request_id: str, chunked: bool
) -> tuple[int, str, str]:
    """(status, body, x-request-id) of POST ``path`` of ``chunks``: sent as they come, with
    Content-Length or chunked (no length given), all of them before the answer is read, as a
    plain client does."""
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=60)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", "application/json")
        connection.putheader("X-Request-ID", request_id)
        if chunked:
            connection.putheader("Transfer-Encoding", "chunked")
        else:
            connection.putheader("Content-Length", str(sum(map(len, chunks))))
        connection.endheaders()
        for chunk in chunks:
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
        if chunked:
            connection.send(b"0\r\n\r\n")
        response = connection.getresponse()
        return response.status, response.read().decode(), response.headers["x-request-id"]
    finally:
        connection.close()


def nested(depth: int) -> bytes:
    """A JSON object holding arrays in arrays, ``depth`` levels deep in all."""
    return b'{"x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def big_body(mib: int) -> list[bytes]:
    """A table's request of ``mib`` MiB, in chunks of 1 MiB."""
    head = b'{"dataframe_split": {"columns": ["age", "sex"], "data": ['
    rows = b"[0.038, 0.051]," * (MIB // 15)
    return [head + rows, *([rows] * (mib - 1))]


@pytest.mark.parametrize("protocol", ["mlflow", pytest.param("v2", marks=pytest.mark.slow)])
def test_a_body_too_large_or_too_deep_is_refused_unread_and_logged(
    serve: Any, tmp_path: Path, protocol: str
) -> None:
    """Two bodies of 64 MiB each (one with Content-Length, one chunked) at a limit of 1 MiB
    leave the worker's resident memory, now and at its peak, within 16 MiB of where it was;
    JSON too deep for the limit, and too deep for Python's parser, is refused with 400."""
    store = tmp_path / "store"
    served = serve(
        MLOPS_TRAFFIC_STORE=str(store),
        MLFLOW_MODELS_WORKERS="1",
        MLOPS_SERVING_PROTOCOL=protocol,
        MLOPS_SERVING_MAX_BODY_BYTES=str(MIB),
    )
    path = "/invocations" if protocol == "mlflow" else f"/v2/models/{MODEL_NAME}/infer"
    rows = features().iloc[:2]
    table = payload(rows) if protocol == "mlflow" else json.dumps(v2_payload(rows)).encode()

    def message(answer: str) -> str:
        return str(json.loads(answer)["message" if protocol == "mlflow" else "error"])

    assert served.request(path, table, {"X-Request-ID": "warm"})[0] == 200
    assert post_streamed(served, path, big_body(2), "warm-big", chunked=False)[0] == 413
    worker = served.pid  # one worker: the server's own process
    before = memory_kib(worker)

    declared = post_streamed(served, path, big_body(64), "big-declared", chunked=False)
    streamed = post_streamed(served, path, big_body(64), "big-streamed", chunked=True)
    after = memory_kib(worker)
    too_large = (
        "the request body is larger than 1,048,576 bytes, the most this server reads "
        "(MLOPS_SERVING_MAX_BODY_BYTES): send its rows in several requests"
    )
    for (status, answer, echoed), request_id in ((declared, "big-declared"),
                                                 (streamed, "big-streamed")):  # fmt: skip
        assert (status, message(answer), echoed) == (413, too_large, request_id)
    assert after["VmRSS"] - before["VmRSS"] < 16 * 1024, (before, after)
    assert after["VmHWM"] - before["VmHWM"] < 16 * 1024, (before, after)

    depths = {"deep-33": 33, "deep-100000": 100_000, "deep-32": 32}
    answers = {
        request_id: served.request(path, nested(depth), {"X-Request-ID": request_id})
        for request_id, depth in depths.items()
    }
    for request_id in ("deep-33", "deep-100000"):
        status, answer, headers = answers[request_id]
        assert (status, headers["x-request-id"]) == (400, request_id)
        assert message(answer) == (
            f"the request's JSON is nested {depths[request_id]} levels deep; this server reads "
            "at most 32 (a table's request is 4 or 5)"
        )
    status, answer, _ = answers["deep-32"]  # read, and refused for what it holds
    assert status == 400
    assert "nested" not in message(answer)
    assert served.request(path, table, {"X-Request-ID": "after"})[0] == 200
    served.terminate()

    lines = read_lines(store)
    errors = {line["request_id"]: line for line in lines if line["kind"] == "error"}
    assert set(errors) == {"warm-big", "big-declared", "big-streamed", *depths}
    for request_id in ("big-declared", "big-streamed"):
        assert (errors[request_id]["status"], errors[request_id]["error"]) == (413, too_large)
        # The first bytes of the body, as of any request refused.
        first = b"".join(big_body(1))[:ERROR_BODY_LIMIT].decode()
        assert errors[request_id]["body"] == first
    assert errors["deep-100000"]["error"].startswith("the request's JSON is nested 100000 levels")
    answered = {line["request_id"] for line in lines if line["kind"] == "answer"}
    assert answered == {"warm", "after"}


@pytest.mark.slow
def test_refused_large_requests_keep_the_journal_within_its_bytes(
    serve: Any, tmp_path: Path
) -> None:
    """1,000 requests of 60 KB, each refused (not JSON) and logged with its first bytes and
    MLflow's message (which quotes it), against a journal of 1 MiB that is never shipped: the
    journal stays within 1 MiB (and a byte for each request dropped), the worker's memory
    within 16 MiB of where it was, and the store gets what the journal held and the count of
    the rest."""
    store, temporary = tmp_path / "store", tmp_path / "tmp"
    temporary.mkdir()
    served = serve(
        MLOPS_TRAFFIC_STORE=str(store),
        MLFLOW_MODELS_WORKERS="1",
        MLOPS_TRAFFIC_BUFFER_BYTES=str(MIB),
        MLOPS_TRAFFIC_FLUSH_SECONDS="3600",
        TMPDIR=str(temporary),
    )
    body = b'{"dataframe_split": "' + b"x" * 60_000  # a string never closed: not JSON
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=30)

    def refuse(request_id: str) -> int:
        connection.request(
            "POST", "/invocations", body,
            {"Content-Type": "application/json", "X-Request-ID": request_id})  # fmt: skip
        response = connection.getresponse()
        response.read()
        return response.status

    assert {refuse(f"warm{i}") for i in range(20)} == {400}
    before = memory_kib(served.pid)
    assert {refuse(f"big{i}") for i in range(1000)} == {400}
    after = memory_kib(served.pid)
    connection.close()

    counters = served_counters(served)
    recorded, dropped = (counters["mlops_traffic_recorded_total"],
                         counters["mlops_traffic_dropped_total"])  # fmt: skip
    assert recorded + dropped == 1020
    assert dropped > 1000  # a line of ~120 KB: the journal holds a handful
    assert counters["mlops_traffic_held_requests"] == recorded
    [folder] = temporary.glob(f"{JOURNAL_PREFIX}*")
    journal = sum(path.stat().st_size for path in folder.glob("*.journal"))
    assert MIB - 130_000 < journal <= MIB + dropped
    assert after["VmRSS"] - before["VmRSS"] < 16 * 1024, (before, after)
    served.terminate()

    lines = read_lines(store)
    assert len([line for line in lines if line["kind"] == "error"]) == recorded
    assert sum(line["count"] for line in lines if line["kind"] == "dropped") == dropped
    assert not folder.exists()  # the server removes the folder it made


def workers_of(served: Served) -> list[int]:
    """The server's workers: its child processes that said they started."""
    parent = served.pid
    children = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == parent:
            children.add(int(stat.parent.name))
    announced = {int(pid) for pid in re.findall(r"^serving worker (\d+):", served.log(), re.M)}
    return sorted(children & announced)


@pytest.mark.parametrize("journal", ["room", pytest.param("full", marks=pytest.mark.slow)])
def test_a_worker_killed_in_a_burst_loses_no_answered_request(
    serve: Any, tmp_path: Path, journal: str
) -> None:
    """SIGKILL to one of two workers while 16 clients send 480 requests (each its own
    connection). Nothing is shipped before the server stops (a flush an hour), so whatever the
    killed worker answered is in its journal alone; the worker uvicorn starts in its place
    ships it. With a journal of 5 requests ("full"), most are dropped, and counted.

    Every request a client got an answer for is in the store exactly once, or counted as
    dropped (in the store's ``dropped`` lines and at /metrics alike); and the requests sent
    are those in the store, those dropped, and, of those the killed worker never answered,
    the ones it had not journaled yet."""
    store, temporary = tmp_path / "store", tmp_path / "tmp"
    temporary.mkdir()
    served = serve(
        MLOPS_TRAFFIC_STORE=str(store),
        MLFLOW_MODELS_WORKERS="2",
        MLOPS_TRAFFIC_FLUSH_SECONDS="3600",
        MLOPS_TRAFFIC_BUFFER="5" if journal == "full" else "10000",
        TMPDIR=str(temporary),
    )
    wait_until(functools.partial(_started, served, 2), "two workers", 90, served.process.log)
    [folder] = temporary.glob(f"{JOURNAL_PREFIX}*")
    rows = features()
    sent = [f"k{i}" for i in range(480)]
    done: list[str] = []
    killed: list[int] = []
    kill = threading.Lock()

    def send(number: int) -> tuple[str, int | None]:
        request_id = sent[number]
        try:
            status = served.post(payload(rows.iloc[number % 400 : number % 400 + 1]), request_id)[0]
        except (OSError, http.client.HTTPException):  # reset: the worker was killed
            status = None
        with kill:
            done.append(request_id)
            if len(done) >= 160 and not killed:  # mid-burst: the worker with most journaled
                journaled = {pid: sum(path.stat().st_size for path in
                                      folder.glob(f"*-{pid}-*.journal"))
                             for pid in workers_of(served)}  # fmt: skip
                killed.append(max(journaled, key=lambda pid: journaled[pid]))
                os.kill(killed[0], signal.SIGKILL)
        return request_id, status

    with ThreadPoolExecutor(16) as pool:
        outcomes = dict(pool.map(send, range(len(sent))))
    assert killed, "no worker was killed"
    answered = {rid for rid, status in outcomes.items() if status == 200}
    unanswered = {rid for rid, status in outcomes.items() if status is None}
    assert answered | unanswered == set(sent)
    assert len(answered) > 240

    # The worker uvicorn starts in place of the killed one ships what that one left.
    wait_until(lambda: _started(served, 3), "a worker in place of the killed one", 90, None)
    wait_until(lambda: not [path for path in folder.glob("*.journal") if f"-{killed[0]}-" in
                            path.name], "the killed worker's journal shipped", 30, None)  # fmt: skip
    counters = served_counters(served)
    served.terminate()
    assert f"Child process [{killed[0]}] died" in served.log()

    files = sorted((store / "traffic" / MODEL_NAME).glob("date=*/*.jsonl"))
    lines = read_lines(store)
    keys = [(line["request_id"], line["row"]) for line in lines if line["kind"] == "answer"]
    assert len(keys) == len(set(keys)), "a request was logged twice"
    logged = {request_id for request_id, _ in keys}
    assert logged <= set(sent)
    dropped = sum(line["count"] for line in lines if line["kind"] == "dropped")
    assert counters["mlops_traffic_dropped_total"] == dropped
    assert counters["mlops_traffic_recorded_total"] == len(logged)
    assert counters["mlops_traffic_written_lines_total"] < len(lines)  # the survivors' at stop
    # What the killed worker answered reached the store, from its journal, in its name.
    by_killed = [f for f in files if f"-{killed[0]}-" in f.name]
    assert by_killed
    assert any(file.read_text().strip() for file in by_killed)
    assert len(answered - logged) <= dropped
    assert 0 <= len(sent) - len(logged) - dropped <= len(unanswered - logged)
    if journal == "room":
        assert dropped == 0
        assert answered <= logged
    else:
        assert dropped > 400


def test_ragged_and_valueless_rows_are_refused_and_extra_columns_named(
    serve: Any, diabetes_model: Path, tmp_path: Path
) -> None:
    import mlflow
    from mlflow.pyfunc.scoring_server import invocations

    store = tmp_path / "store"
    served = serve(MLOPS_TRAFFIC_STORE=str(store), MLFLOW_MODELS_WORKERS="1")
    model = mlflow.pyfunc.load_model(str(diabetes_model))
    rows = features().iloc[:4]
    columns, data = list(rows.columns), rows.values.tolist()

    def split(table: list[list[Any]]) -> bytes:
        return json.dumps({"dataframe_split": {"columns": columns, "data": table}}).encode()

    def mlflows(body: bytes) -> str:
        return str(invocations(body, "application/json", model, model.metadata.get_input_schema())
                   .response)  # fmt: skip

    # A table as it should be: MLflow's answer, byte for byte.
    status, answer, headers = served.request("/invocations", payload(rows), {"X-Request-ID": "ok"})
    assert (status, answer) == (200, mlflows(payload(rows)))
    assert headers[IGNORED_COLUMNS_HEADER] is None

    refusals = {
        "ragged": (split([data[0], data[1][:4], data[2], data[3][:9]]),
                   "rows 1, 3 have 4, 9 values for 10 columns: a row needs one value for each "
                   "column (null for a missing one)"),
        "long": (split([[*data[0], 1.0]]),
                 "row 0 has 11 values for 10 columns: a row needs one value for each column "
                 "(null for a missing one)"),
        "empty": (split([data[0], [None] * 10, data[2], [None] * 10]),
                  "rows 1, 3 have no values (all null): nothing to score"),
        "empty-record": (json.dumps({"dataframe_records": [rows.iloc[0].to_dict(), {}]}).encode(),
                         "row 1 has no values (all null): nothing to score"),
    }  # fmt: skip
    for request_id, (body, message) in refusals.items():
        status, answer, _ = served.request("/invocations", body, {"X-Request-ID": request_id})
        assert (status, json.loads(answer)) == (400, {"error_code": "BAD_REQUEST",
                                                      "message": message})  # fmt: skip

    # Columns the model does not take: answered as without them, and named.
    extra = payload(rows.assign(colour="red"))
    status, answer, headers = served.request("/invocations", extra, {"X-Request-ID": "extra"})
    assert (status, answer) == (200, mlflows(payload(rows)))
    assert headers[IGNORED_COLUMNS_HEADER] == "colour"
    more = payload(rows.iloc[:1].assign(**{"colour": "red", "size, cm": 3}))
    status, _, headers = served.request("/invocations", more, {"X-Request-ID": "extra-2"})
    assert status == 200
    assert headers[IGNORED_COLUMNS_HEADER] == "colour,size%2C%20cm"
    served.terminate()
    # A warning, not one a request: once a minute at most.
    assert served.log().count("has columns the model does not take, ignored") == 1
    assert "request extra has columns the model does not take, ignored: colour" in served.log()

    lines = read_lines(store)
    errors = {line["request_id"]: line for line in lines if line["kind"] == "error"}
    assert {rid: (line["status"], line["error"]) for rid, line in errors.items()} == {
        rid: (400, message) for rid, (_, message) in refusals.items()}  # fmt: skip
    ignored = {(line["request_id"], line["row"]): line.get("ignored_columns") for line in lines}
    expected: dict[tuple[str, int | None], list[str] | None] = {
        **{("ok", row): None for row in range(4)},
        **{("extra", row): ["colour"] for row in range(4)},
        ("extra-2", 0): ["colour", "size, cm"],
        **{(rid, None): None for rid in refusals},
    }
    assert ignored == expected


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
    empty = v2_payload(rows, "v2-empty")
    for tensor in empty["inputs"]:
        tensor["data"][1] = None
    assert post_json(infer, empty)[:2] == (
        400,
        {"error": "row 1 has no values (all null): nothing to score"},
    )
    # An input the model does not take: answered as without it, and named.
    path = infer.removeprefix(served.url)
    extra = json.dumps(v2_payload(rows.assign(colour="red"), "v2-extra")).encode()
    status, answer_text, headers = served.request(path, extra)
    assert (status, headers[IGNORED_COLUMNS_HEADER]) == (200, "colour")
    assert json.loads(answer_text)["outputs"] == answer["outputs"]
    # The other protocol is not served.
    assert post_json(f"{served.url}/invocations", {})[0] == 404
    served.terminate()

    lines = read_lines(store)
    answered = {(x["request_id"], x["row"]): x for x in lines if x["kind"] == "answer"}
    assert set(answered) == {
        *[("v2-first", row) for row in range(3)],
        ("v2-second", 0),
        *[("v2-extra", row) for row in range(3)],
    }
    assert answered[("v2-extra", 2)]["ignored_columns"] == ["colour"]
    assert [answered[("v2-first", r)]["prediction"] for r in range(3)] == pytest.approx(
        list(expected)
    )
    assert answered[("v2-first", 1)]["inputs"]["bmi"] == pytest.approx(rows.iloc[1]["bmi"])
    errors = {x["request_id"]: x for x in lines if x["kind"] == "error"}
    assert set(errors) >= {"v2-missing", "v2-short", "v2-typed", "v2-empty"}
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
    document = json.loads(v2_response(answer, "churn", "2", "r1"))
    assert document["outputs"] == [
        {"name": "prediction", "datatype": "BYTES", "shape": [2], "data": ["yes", "no"]},
        {"name": "probability_yes", "datatype": "FP64", "shape": [2], "data": [0.8, 0.1]},
    ]
    with pytest.raises(ValueError, match="MLOPS_SERVING_PROTOCOL must be one of mlflow, v2"):
        serving_protocol({"MLOPS_SERVING_PROTOCOL": "grpc"})


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
    sent = await asgi_request(
        app, "POST", "/invocations", body, ((b"x-request-id", request_id.encode()),)
    )
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
    statuses = asyncio.run(post_together(server_app.ModelApp(slow, None, 30)))
    assert statuses == [200] * len(bodies)
    assert slow.most_at_once == 1
    assert [age for age, _ in slow.scored] == pytest.approx(list(rows["age"]))
    assert {thread for _, thread in slow.scored} == {"scoring_0"}

    # Past the timeout: all are answered 504 while the first is still being scored (held
    # until released); it then finishes, and the ones that waited for the thread never start.
    release = threading.Event()
    stuck = _Slow(diabetes_model, lambda: release.wait(60))
    app = server_app.ModelApp(stuck, None, 0.3)
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
    it (or are answered without it); then it is released. Each request's status and body, in order."""
    assert model.release is not None

    async def run() -> list[tuple[int, str]]:
        first = asyncio.create_task(_asgi_post(app, bodies[0], "r0"))
        while not model.running:
            await asyncio.sleep(0.005)
        rest = [
            asyncio.create_task(_asgi_post(app, body, f"r{i}"))
            for i, body in enumerate(bodies[1:], 1)
        ]
        while app.batcher.waiting + sum(task.done() for task in rest) < len(rest):
            await asyncio.sleep(0.005)
        model.release.set()
        return list(await asyncio.gather(first, *rest))

    return asyncio.run(run())


def _alone(model: Path, bodies: list[bytes]) -> list[tuple[int, str]]:
    """What a server predicting each request alone answers."""
    app = server_app.ModelApp(_Counting(model), None, 30)

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
    app = server_app.ModelApp(model, None, 30, batch=8)

    answers = _answers_while_busy(app, model, bodies)

    # The first was predicted alone; the six that waited for it in one call of eight rows.
    assert model.calls == [1, 8]
    # Each answer is, byte for byte, what predicting it alone answers.
    assert answers == _alone(diabetes_forest, bodies)
    assert [len(json.loads(body)["predictions"]) for _, body in answers] == [1, 1, 1, 3, 1, 1, 1]


class _Journal:
    """Stands in for the traffic log: keeps each exchange the app records."""

    def __init__(self) -> None:
        self.exchanges: dict[str, Exchange] = {}

    def record(self, exchange: Exchange) -> None:
        self.exchanges[exchange.request_id] = exchange


def _as_written(frame: pd.DataFrame, **values: Any) -> list[Any]:
    """The first row of ``frame`` as a client may write it in JSON: some values replaced."""
    row = {column: float(value) for column, value in frame.iloc[0].items()}
    return list({**row, **values}.values())


def _split(columns: list[str], *rows: list[Any]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": list(rows)}}).encode()


@pytest.mark.parametrize("bad", [False, True], ids=["as-written", "with-bad-ones"])
def test_requests_read_together_are_answered_and_logged_as_alone(
    diabetes_forest: Path, bad: bool
) -> None:
    """Requests' rows that wait for the model are read as one table (MLflow's reading, cast to
    the signature) and predicted in one call, where the values each wrote are of its columns'
    kinds (numbers here); the others are read alone by MLflow's function, as before. Whatever
    JSON each wrote its values as, each is answered, and its rows logged, as when it is read
    and predicted alone. Requests that fail read together (a column missing) are read and
    answered alone, each with its own error."""
    rows = features().head(8)
    columns = list(rows.columns)
    bodies = [
        payload(rows.iloc[[0]]),  # held at the model while the others wait
        payload(rows.iloc[[1]]),
        _split(columns, [str(v) for v in _as_written(rows.iloc[[2]])]),  # numbers as text
        _split(columns, _as_written(rows.iloc[[3]], age=0, sex=1)),  # whole numbers
        _split(columns, [None] * len(columns)),  # no values: refused alone
        payload(rows.iloc[4:7]),  # three rows
        _split(columns, _as_written(rows.iloc[[7]], bmi=None)),  # a missing value
        _split(columns, _as_written(rows.iloc[[0]], sex=True)),  # a boolean for a number
    ]
    if bad:
        short = rows.drop(columns="s6")
        bodies += [
            _split(columns, _as_written(rows.iloc[[1]], bp="high")),
            _split(columns, ["NaN"] * len(columns)),  # reads as a row of no values
            payload(short.iloc[[2]]),  # without a column the model needs: these two
            payload(short.iloc[[3]]),  # are read together, fail, and are read alone
        ]
    model = _Counting(diabetes_forest, threading.Event())
    app = server_app.ModelApp(model, None, 30, batch=16)
    app.traffic = journal = _Journal()  # type: ignore[assignment]

    answers = _answers_while_busy(app, model, bodies)

    alone_app = server_app.ModelApp(_Counting(diabetes_forest), None, 30)
    alone_app.traffic = alone_journal = _Journal()  # type: ignore[assignment]

    async def each_alone() -> list[tuple[int, str]]:
        return [await _asgi_post(alone_app, body, f"r{i}") for i, body in enumerate(bodies)]

    alone = asyncio.run(each_alone())
    assert [status for status, _ in answers] == [status for status, _ in alone]
    assert [status for status, _ in alone] == [200, 200, 200, 200, 400, 200, 200, 200] + (
        [400] * 4 if bad else []
    )
    for (status, body), (_, body_alone) in zip(answers, alone, strict=True):
        if status == 200:
            assert body == body_alone
        else:  # the same error (a stack trace would differ by its thread's frames)
            error, error_alone = json.loads(body), json.loads(body_alone)
            assert error.get("error_code") == error_alone.get("error_code")
            assert error["message"] == error_alone["message"]
    for request_id, exchange in alone_journal.exchanges.items():
        logged = journal.exchanges[request_id]
        if exchange.inputs is None:
            assert logged.inputs is None
        else:
            pd.testing.assert_frame_equal(logged.inputs, exchange.inputs, check_exact=True)
    # After the first: one call for the six rows read together (rows 1, 3, the three and the
    # one with a missing value), one for the two tables MLflow read (numbers as text; a
    # boolean), the same columns and types. Of the bad ones, only the two without a column reach the model:
    # together, then alone (where they may meet again as tables).
    assert model.calls[0] == 1
    assert model.calls.count(6) == 1
    if not bad:
        assert sorted(model.calls[1:]) == [2, 6]


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
    app = server_app.ModelApp(model, None, 30, batch=8)

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
    app = server_app.ModelApp(model, None, 0.3, batch=8)
    # The first call does not wait for the others being read (they would be in it, held with
    # it): here they wait for their turn, and are answered 504 before it comes.
    assert app.batcher is not None
    app.batcher.gather_seconds = 0

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


@pytest.mark.parametrize(
    ("kind", "value", "fits"),
    [
        ("double", 1.5, True),
        ("double", 3, True),  # a whole number reads as the same number either way
        ("double", None, True),  # NaN either way
        ("double", True, False),  # a boolean in a number's column: pandas' guess
        ("double", "1.5", False),
        ("double", 2**63, False),  # beyond 64 bits: pandas reads it as object or uint64
        ("float", 2**53, True),
        ("float", 2**54 + 2**30 + 1, False),  # float32: rounded once alone, twice beside 0.5
        ("long", 3, True),
        ("long", 3.0, False),
        ("long", None, False),  # fails alone; beside a float it would read as NaN
        ("string", "yes", True),
        ("string", None, True),
        ("string", 1, False),
        ("boolean", True, True),
        ("boolean", None, True),  # False either way, beside true or false
        ("boolean", 1.0, False),  # beside a null, the null would read as NaN: True
    ],
)
def test_rows_are_read_together_only_where_pandas_cannot_guess_another_value(
    kind: str, value: Any, fits: bool
) -> None:
    assert values_fit([[value]], [JSON_VALUES[kind]]) is fits


@pytest.mark.parametrize(
    ("content_type", "read_here"),
    [
        ("application/json", True),
        ("application/json; charset=UTF-8", True),
        ("application/json;charset=utf-8", True),
        ("application/json; charset=latin-1", False),  # MLflow's function answers 415
        ("application/json; format=pandas-split", False),  # and to an unknown parameter
        ("text/csv", False),
    ],
)
def test_only_json_that_mlflow_would_read_is_read_together(
    content_type: str, read_here: bool
) -> None:
    assert server_app._utf8_json(content_type) is read_here


@pytest.mark.parametrize(
    ("kind", "first", "second"),
    [("boolean", None, 1.0), ("float", 2**54 + 2**30 + 1, 0.5), ("string", 5, None)],
)
def test_values_left_out_of_reading_together_would_read_otherwise(
    kind: str, first: Any, second: Any
) -> None:
    """Why :data:`JSON_VALUES` leaves these out: MLflow's own reading gives the first value
    another reading beside the second than alone."""
    from mlflow.types.schema import ColSpec, Schema
    from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

    schema = Schema([ColSpec(kind, "c")])

    def read(*values: Any) -> str:
        table = {"columns": ["c"], "data": [[v] for v in values]}
        return repr(dataframe_from_parsed_json(table, "split", schema)["c"].iloc[0])

    assert not values_fit([[first], [second]], [JSON_VALUES[kind]])
    assert read(first) != read(first, second)


def test_a_batch_whose_every_request_was_answered_504_is_not_predicted(
    diabetes_forest: Path,
) -> None:
    model = _Counting(diabetes_forest)
    batcher = Batcher(model, 4)
    abandoned = threading.Event()
    abandoned.set()
    with pytest.raises(TimeoutError, match="504"):
        batcher.predict(features().head(1), None, abandoned)
    assert model.calls == []


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


class _Calls:
    """A model that notes how many rows each call of it predicts."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, data: pd.DataFrame, params: Any = None) -> Any:
        self.calls.append(len(data))
        return data["x"].to_numpy() * 2


def test_a_call_of_the_model_waits_a_moment_for_the_requests_being_read() -> None:
    """A request that finds the model free while others are still being read (parsed, on
    their way to the model) waits for them, so that one call predicts them all; one that
    fails on its way does not keep it waiting."""
    model = _Calls()
    batcher = Batcher(model, 8)
    batcher.gather_seconds = 30  # the wait ends when they arrive, not at this bound
    frames = [pd.DataFrame({"x": [float(i)]}) for i in range(4)]
    reading = [batcher.coming() for _ in range(4)]  # the three to come, and one to fail
    arrived = [token.__enter__() for token in reading]

    def comes(i: int) -> Any:
        time.sleep(0.05)
        return batcher.predict(frames[i], None, threading.Event(), arrived[i - 1])

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher.predict, frames[0], None, threading.Event())
        later = [pool.submit(comes, i) for i in (1, 2, 3)]
        time.sleep(0.1)
        reading[3].__exit__(None, None, None)  # read, refused: it never asks for a prediction
        answers = [first.result(timeout=10), *(f.result(timeout=10) for f in later)]
    assert model.calls == [4]
    assert [list(answer) for answer in answers] == [[0.0], [2.0], [4.0], [6.0]]
    for token in reading[:3]:
        token.__exit__(None, None, None)
    # With nothing on its way, a request is predicted at once, alone.
    assert list(batcher.predict(frames[1], None, threading.Event())) == [2.0]
    assert model.calls == [4, 1]


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

    batch, why = batch_for_model(forest, None, rows)
    assert (batch, why) == (16, "auto: every step answers each row on its own, as its 20-row "
                                "input example confirms")  # fmt: skip
    assert batch_for_model(forest, None, None)[0] == 16  # no example to confirm
    batch, why = batch_for_model(linear, None, rows)
    assert batch == 1
    assert why.startswith("auto: Ridge not known to answer each row alone")
    assert batch_for_model(linear, 8, rows) == (8, "MLOPS_SERVING_BATCH")
    assert batch_for_model(forest, 1, rows) == (1, "MLOPS_SERVING_BATCH")


class _CentredOnTheBatch:
    """A model whose answer for a row depends on the rows beside it (the batch's mean age)."""

    def predict(self, data: pd.DataFrame, params: dict[str, Any] | None = None) -> Any:
        return (data["age"] - data["age"].mean()).to_numpy()


def test_a_model_whose_rows_answer_differently_together_is_caught_by_its_example(
    diabetes_forest: Path,
) -> None:
    import mlflow

    rows = features().head(6)
    assert answers_rows_alone(mlflow.pyfunc.load_model(str(diabetes_forest)), rows)
    assert not answers_rows_alone(_CentredOnTheBatch(), rows)


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
    from mlops_assets.ml.estimator import TrainingConfig
    from mlops_assets.ml.train import fit
    from mlops_assets_tests.ml.test_tasks import breast_cancer

    splits, spec = breast_cancer()
    model = ClassAnswer(fit(splits, spec, TrainingConfig(model_type)).pipeline, spec.classes)

    assert not_row_wise(model) == unknown
    if not unknown:
        test = splits["test"].drop(columns=[spec.target.name]).reset_index(drop=True)
        assert answers_rows_alone(model, test)


def _started(served: Served, workers: int) -> bool:
    return served.log().count("Application startup complete") >= workers


@pytest.mark.slow
def test_each_worker_says_what_auto_decided_for_its_model(
    diabetes_model: Path, diabetes_forest: Path, tmp_path: Path, server_folder: Path
) -> None:
    """MLOPS_SERVING_BATCH unset, as the image starts: each worker of the tree model's server
    batches, each of the linear model's predicts request by request, and both say why."""
    servers = {
        name: Served(model, tmp_path / name, {"MLFLOW_MODELS_WORKERS": "2"}, server_folder)
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
    forest = announced_batches(logs["forest"])
    linear = announced_batches(logs["linear"])
    assert [batch for batch, _ in forest] == [16, 16], logs["forest"]
    assert all(why.startswith("auto: every step answers each row on its own") for _, why in forest)
    assert [batch for batch, _ in linear] == [1, 1], logs["linear"]
    assert all(why.startswith("auto: Ridge not known") for _, why in linear)


def test_what_a_worker_says_about_batching_is_read_back_from_its_log() -> None:
    said = BATCHING_LINE.format(
        pid=12, batch=16, why="auto: every step answers each row on its own (no input example)"
    )
    log = f"INFO: started\n{said}\nINFO: Application startup complete.\n"
    assert announced_batches(log) == [
        (16, "auto: every step answers each row on its own (no input example)")
    ]
    assert announced_batches("INFO: started\n") == []
