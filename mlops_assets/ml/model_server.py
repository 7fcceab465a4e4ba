"""The served model's process: what runs in the image that ``served_image`` builds.

This file is copied into the image as it is and is its entry point (``python model_server.py``).
It imports only the standard library and what MLflow's serving image has (MLflow, pandas,
uvicorn), and boto3 when the traffic log goes to S3: nothing of mlops_assets is in the image.

- **Sizing**: one uvicorn worker per CPU the container may use, native threads shared out.
  Each worker predicts on one thread, in order of arrival (see ``ModelApp``). The rows of
  requests that arrive while it is busy are predicted together, in one call (see
  ``Batcher``), when the model answers each row alone whatever rows come with it (a tree
  model, the default; see ``batch_for_model``), or when ``MLOPS_SERVING_BATCH`` says so.
- **Answers**: MLflow's own scoring function (``scoring_server.invocations``) behind a small
  ASGI app, so an answer is MLflow's, byte for byte (with batching set for a linear model, its
  numbers can differ in the last digit; see ``Batcher``): ``/ping``, ``/health``, ``/version``,
  ``/invocations``, and ``/metrics`` for the traffic log's counters. With
  ``MLOPS_SERVING_PROTOCOL=v2`` it speaks the Open Inference Protocol (KServe's V2) instead:
  ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/<name>[/versions/<v>]`` (metadata,
  ``/ready``, ``/infer``). A V2 request's input tensors are the table's columns; it is scored
  by the same function (as ``dataframe_split``), so schema enforcement and answers are the
  same, and the answer's columns come back as output tensors.
- **Traffic log**: every answered request (its id, time, model version, input rows and
  predictions, or its error) goes into a bounded in-memory buffer, never to the store on the
  request's path. A background thread writes the buffer to the object store as one JSON Lines
  file per worker and window (``traffic/<model>/date=<day>/...jsonl``), and writes the rest on
  shutdown (SIGTERM). A full buffer drops records and counts them: the count is logged, written
  to the store as a ``dropped`` line and served at ``/metrics``: the server's totals, whichever
  worker answers (the workers share their counters through files in a temporary folder).

Settings (environment): ``MLOPS_SERVING_PROTOCOL`` (mlflow/v2), ``MLOPS_SERVING_BATCH``
(requests predicted together: ``auto``, the default, 16 for a model that answers each row
alone and 1 for any other; or 1 to 64), ``MLOPS_TRAFFIC_LOG``
(on/off), ``MLOPS_TRAFFIC_STORE`` (a folder, or ``s3://bucket/prefix`` with
``MLOPS_S3_ENDPOINT_URL``, ``MLOPS_S3_REGION`` and the standard AWS credential variables),
``MLOPS_TRAFFIC_FLUSH_SECONDS``, ``MLOPS_TRAFFIC_BUFFER`` (requests).
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import logging
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

SERVING_PORT = 8000
MODEL_PATH = "/opt/ml/model"  # where MLflow's Dockerfile puts the model
TRAFFIC_PREFIX = "traffic"
DEFAULT_STORE = "/var/lib/mlops/store"  # the image's own folder; mount the store here
REQUEST_ID_HEADER = "x-request-id"
ERROR_BODY_LIMIT = 64 * 1024  # of a refused request's body, kept in its log line
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
PROTOCOLS = ("mlflow", "v2")
# Set by main() for its workers: the folder where they share the traffic log's counters.
COUNTERS_DIR_ENV = "MLOPS_COUNTERS_DIR"
MOST_BATCHED = 64  # requests in one prediction, at most (MLOPS_SERVING_BATCH)
AUTO = "auto"  # MLOPS_SERVING_BATCH's default: each worker decides from its model
AUTO_BATCH = 16  # what auto gives a model that answers each row on its own
# Open Inference Protocol tensor types, and the Python values each takes.
V2_DATATYPES = {
    "BOOL": (bool,),
    **{
        t: (int,)
        for t in ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
    },
    **{t: (int, float) for t in ("FP16", "FP32", "FP64")},
    "BYTES": (str,),
}
_V2_MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer))?$")
# A line of a traceback that names the exception raised (and its message).
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): .*$", re.MULTILINE)

# uvicorn's own logger: its handler and format, in the container's log.
log = logging.getLogger("uvicorn.error")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# --- sizing -------------------------------------------------------------------------------


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


# --- the traffic log ----------------------------------------------------------------------


@dataclass(frozen=True)
class TrafficSettings:
    enabled: bool = True
    store: str = DEFAULT_STORE
    flush_seconds: float = 10.0
    buffer_requests: int = 10_000
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TrafficSettings:
        switch = env.get("MLOPS_TRAFFIC_LOG", "on").strip().lower()
        if switch not in ("on", "off", "true", "false", "1", "0"):
            raise ValueError(f"MLOPS_TRAFFIC_LOG must be on or off, not '{switch}'")
        default = cls()
        return cls(
            enabled=switch in ("on", "true", "1"),
            store=env.get("MLOPS_TRAFFIC_STORE") or default.store,
            flush_seconds=float(env.get("MLOPS_TRAFFIC_FLUSH_SECONDS") or default.flush_seconds),
            buffer_requests=int(env.get("MLOPS_TRAFFIC_BUFFER") or default.buffer_requests),
            s3_endpoint_url=env.get("MLOPS_S3_ENDPOINT_URL", ""),
            s3_region=env.get("MLOPS_S3_REGION") or default.s3_region,
        )


class Sink(Protocol):
    def write(self, key: str, data: bytes) -> None: ...

    def describe(self) -> str: ...


class FolderSink:
    """Files below a folder, each written whole or not at all (a temporary file renamed)."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def write(self, key: str, data: bytes) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        os.replace(partial, path)

    def describe(self) -> str:
        return str(self.root)


class S3Sink:
    """Objects in ``s3://bucket/prefix``; credentials from the standard AWS variables."""

    def __init__(self, root: str, endpoint_url: str, region: str) -> None:
        import boto3
        from botocore.config import Config

        self.bucket, _, prefix = root.removeprefix("s3://").partition("/")
        self.prefix = prefix.strip("/")
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
            s3={"addressing_style": "path"},
        )
        session = boto3.session.Session(region_name=region)
        self._client = session.client("s3", endpoint_url=endpoint_url or None, config=config)

    def write(self, key: str, data: bytes) -> None:
        full = f"{self.prefix}/{key}" if self.prefix else key
        self._client.put_object(
            Bucket=self.bucket, Key=full, Body=data, ContentType="application/x-ndjson"
        )

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def sink_for(settings: TrafficSettings) -> Sink:
    if settings.store.startswith("s3://"):
        return S3Sink(settings.store, settings.s3_endpoint_url, settings.s3_region)
    return FolderSink(settings.store.removeprefix("file://"))


@dataclass(frozen=True)
class Exchange:
    """One request and what it was answered: the rows the model was given and the response
    body of an answered request, or the error and the request's body of a refused one."""

    request_id: str
    received: float  # seconds since the epoch
    seconds: float
    status: int
    inputs: Any = None
    answer: str = ""
    error: str = ""
    body: bytes = b""


def traffic_day_prefix(model_name: str, day: str) -> str:
    """Where one day's files of the traffic log go, below the store's root."""
    return f"{TRAFFIC_PREFIX}/{model_name}/date={day}/"


def traffic_key(model_name: str, day: str, stamp: str, worker: str, sequence: int) -> str:
    """Where one file of the traffic log goes, below the store's root."""
    return f"{traffic_day_prefix(model_name, day)}{stamp}-{worker}-{sequence:06d}.jsonl"


def exchange_lines(exchange: Exchange, model_name: str, model_version: str) -> list[dict[str, Any]]:
    """The log lines of one exchange: one per input row of an answered request (its
    ``inputs`` and its ``prediction`` as served), one for a refused request."""
    base = {
        "request_id": exchange.request_id,
        "time": _iso(exchange.received),
        "model_name": model_name,
        "model_version": model_version,
        "status": exchange.status,
        "latency_ms": round(exchange.seconds * 1000, 3),
    }
    if exchange.status >= 400:
        return [
            {
                **base,
                "kind": "error",
                "row": None,
                "error": _error_message(exchange.error),
                "body": exchange.body[:ERROR_BODY_LIMIT].decode("utf-8", errors="replace"),
            }
        ]
    rows = _rows(exchange.inputs)
    try:
        predictions = json.loads(exchange.answer).get("predictions")
    except (json.JSONDecodeError, AttributeError):
        predictions = None
    if not isinstance(predictions, list) or len(predictions) != len(rows):
        predictions = [None] * len(rows)  # an answer not split by row: the rows alone
    return [
        {**base, "kind": "answer", "row": i, "inputs": row, "prediction": prediction}
        for i, (row, prediction) in enumerate(zip(rows, predictions, strict=True))
    ]


def _rows(inputs: Any) -> list[dict[str, Any]]:
    """Input rows as records of plain values (missing values as None): a few microseconds a
    row, where pandas' own JSON writer takes tens."""
    import pandas as pd

    frame = inputs if isinstance(inputs, pd.DataFrame) else pd.DataFrame(inputs)
    columns = [str(c) for c in frame.columns]
    na, nat = pd.NA, pd.NaT

    def plain(value: Any) -> Any:
        if value is None or value is na or value is nat:
            return None
        return None if isinstance(value, float) and value != value else value

    return [
        dict(zip(columns, [plain(value) for value in values], strict=True))
        for values in frame.to_numpy(dtype=object).tolist()
    ]


def _error_message(response: str) -> str:
    """What a refused request was told: MLflow's message, and the exception that ends its
    stack trace (where the message alone says only that the model failed)."""
    try:
        document = json.loads(response)
    except json.JSONDecodeError:
        return response[:ERROR_BODY_LIMIT]
    if not isinstance(document, dict) or "message" not in document:
        return response[:ERROR_BODY_LIMIT]
    message = str(document["message"])
    raised = EXCEPTION_LINE.findall(str(document.get("stack_trace") or ""))
    if raised:
        message += f" ({raised[-1][:500]})"
    return message[:ERROR_BODY_LIMIT]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


class TrafficLog:
    """A bounded buffer of exchanges and the thread that writes it to a sink.

    :meth:`record` never blocks on the store: it appends, or counts a drop when ``capacity``
    requests are held (buffered, or in files not yet written). The thread turns the buffer
    into JSON lines a few requests at a time, every :data:`SERIALISE_SECONDS`, giving the
    interpreter back between them, so that the requests being answered meanwhile wait for no
    long stretch of it; it writes a file per day every ``flush_seconds``, and on
    :meth:`close`. Each file gets its key when it is made, so a write retried after an error
    cannot write its lines twice.
    """

    SERIALISE_SECONDS = 0.2
    SLICE = 16  # requests serialised between two yields of the interpreter

    def __init__(
        self,
        sink: Sink,
        model_name: str,
        model_version: str,
        capacity: int,
        flush_seconds: float,
        worker: str | None = None,
        counters_dir: str | None = None,
    ) -> None:
        self.sink = sink
        self.model_name = model_name
        self.model_version = model_version
        self.capacity = max(1, capacity)
        self.flush_seconds = flush_seconds
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.recorded = 0
        self.dropped = 0
        self.written_lines = 0
        self._held = 0  # requests recorded and not yet written
        self._buffer: list[Exchange] = []
        self._dropped_since_flush = 0
        self._lines: dict[str, list[str]] = {}  # day -> serialised lines not yet in a file
        self._line_requests: dict[str, int] = {}
        self._waiting: list[tuple[str, bytes, int]] = []  # (key, data, requests) not written
        self._lock = threading.Lock()  # the buffer and the counters
        self._flush_lock = threading.Lock()  # the lines and the files
        self._sequence = itertools.count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # The server's workers share their counters through files in one folder, so that
        # /metrics, whichever worker answers it, gives the server's totals (MLOPS_COUNTERS_DIR).
        self.counters_dir = Path(counters_dir) if counters_dir else None
        self._published: tuple[int, ...] | None = None
        self._share_failed = False

    def record(self, exchange: Exchange) -> bool:
        with self._lock:
            if self._held >= self.capacity:
                self.dropped += 1
                self._dropped_since_flush += 1
                return False
            self._buffer.append(exchange)
            self.recorded += 1
            self._held += 1
            return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="traffic-log", daemon=True)
        self._thread.start()
        log.info(
            "traffic log on: %s, every %gs, buffer of %d requests (worker %s)",
            self.sink.describe(),
            self.flush_seconds,
            self.capacity,
            self.worker,
        )

    def close(self) -> None:
        """Stop the thread and write what is left (on shutdown)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()
        with self._lock:
            lost = self._held
        self.publish()
        if lost:
            log.error("traffic log: %d requests could not be written to the store", lost)

    def _run(self) -> None:
        next_flush = time.monotonic() + self.flush_seconds
        while not self._stop.wait(self.SERIALISE_SECONDS):
            try:
                if time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + self.flush_seconds
                    self.flush()
                else:
                    with self._flush_lock:
                        self._serialise()
            except Exception:  # the next window tries again; answering goes on
                log.exception("traffic log: writing to %s failed", self.sink.describe())
            self.publish()

    def _serialise(self) -> None:
        """Turn the buffer into lines, :data:`SLICE` requests at a time (under _flush_lock)."""
        with self._lock:
            batch, self._buffer = self._buffer, []
        for number, exchange in enumerate(batch, 1):
            day = _iso(exchange.received)[:10]
            lines = exchange_lines(exchange, self.model_name, self.model_version)
            self._lines.setdefault(day, []).extend(_dumps(line) for line in lines)
            self._line_requests[day] = self._line_requests.get(day, 0) + 1
            if number % self.SLICE == 0:
                time.sleep(0)  # let the threads answering requests take the interpreter

    def flush(self) -> None:
        """Write the buffer (and files an earlier flush could not write) to the sink."""
        with self._flush_lock:
            self._serialise()
            now = time.time()
            with self._lock:
                dropped, self._dropped_since_flush = self._dropped_since_flush, 0
            if dropped:
                log.warning(
                    "traffic log: buffer full: requests not logged since the last write: %d",
                    dropped,
                )
                line = {"kind": "dropped", "time": _iso(now), "count": dropped,
                        "worker": self.worker, "model_name": self.model_name,
                        "model_version": self.model_version}  # fmt: skip
                self._lines.setdefault(_iso(now)[:10], []).append(_dumps(line))
            stamp = datetime.fromtimestamp(now, UTC).strftime("%H%M%S")
            sequence = next(self._sequence)
            for day, lines in sorted(self._lines.items()):
                key = traffic_key(self.model_name, day, stamp, self.worker, sequence)
                data = ("\n".join(lines) + "\n").encode()
                self._waiting.append((key, data, self._line_requests.get(day, 0)))
            self._lines, self._line_requests = {}, {}
            while self._waiting:
                key, data, requests = self._waiting[0]
                self.sink.write(key, data)  # raises: the file waits for the next flush
                self._waiting.pop(0)
                with self._lock:
                    self._held -= requests
                    self.written_lines += data.count(b"\n")

    COUNTERS = (
        ("mlops_traffic_recorded_total", "counter", "Requests put in the log buffer."),
        ("mlops_traffic_dropped_total", "counter", "Requests not logged: buffer full."),
        ("mlops_traffic_written_lines_total", "counter", "Log lines written to the store."),
        ("mlops_traffic_held_requests", "gauge", "Requests not yet in the store."),
    )

    def counters(self) -> tuple[int, ...]:
        """This worker's values of :data:`COUNTERS`, in their order."""
        with self._lock:
            return (self.recorded, self.dropped, self.written_lines, self._held)

    def publish(self) -> None:
        """Write this worker's counters to the shared folder, if they changed (a temporary
        file renamed, so a reader sees the old values or the new, never half of them)."""
        if self.counters_dir is None:
            return
        values = self.counters()
        if values == self._published:
            return
        target = self.counters_dir / f"{self.worker}.json"
        partial = self.counters_dir / f".{self.worker}.json.partial"
        try:
            partial.write_text(json.dumps({"pid": os.getpid(), "values": values}))
            os.replace(partial, target)
            self._published = values
        except OSError as error:  # the next tick tries again; answering goes on
            if not self._share_failed:  # said once, not five times a second
                log.warning("traffic log: cannot share the counters in %s: %s", partial, error)
            self._share_failed = True

    def server_counters(self) -> tuple[int, ...]:
        """The server's values of :data:`COUNTERS`: the counts summed over every worker this
        server has had (a worker that ended still counted what it did), the held requests
        over the workers still running. Another worker's values are at most
        :data:`SERIALISE_SECONDS` old."""
        if self.counters_dir is None:
            return self.counters()
        self.publish()
        totals = [0] * len(self.COUNTERS)
        for file in self.counters_dir.glob("[!.]*.json"):
            try:
                shared = json.loads(file.read_text())
                pid, values = int(shared["pid"]), [int(v) for v in shared["values"]]
            except (OSError, ValueError, KeyError, TypeError):  # removed meanwhile, or not ours
                continue
            running = _running(pid)
            for index, value in enumerate(values[: len(totals)]):
                if self.COUNTERS[index][1] == "counter" or running:
                    totals[index] += value
        return tuple(totals)

    def metrics(self) -> str:
        """The server's counters in Prometheus' text format: all its workers together, or,
        with no folder to share them in, this worker's, labelled with its name."""
        label = "" if self.counters_dir else f'{{worker="{self.worker}"}}'
        return "".join(
            f"# HELP {name} {text}\n# TYPE {name} {kind}\n{name}{label} {value}\n"
            for (name, kind, text), value in zip(self.COUNTERS, self.server_counters(), strict=True)
        )


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but someone else's
        return True
    return True


def _dumps(line: dict[str, Any]) -> str:
    return json.dumps(line, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):  # timestamps and dates
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    return str(value)


# --- the Open Inference Protocol (V2) ------------------------------------------------------


def serving_protocol(env: Mapping[str, str]) -> str:
    """MLOPS_SERVING_PROTOCOL of ``env``: mlflow (the default) or v2; anything else is named."""
    protocol = env.get("MLOPS_SERVING_PROTOCOL", "mlflow").strip().lower() or "mlflow"
    if protocol not in PROTOCOLS:
        raise ValueError(
            f"MLOPS_SERVING_PROTOCOL must be one of {', '.join(PROTOCOLS)}, not '{protocol}'"
        )
    return protocol


class V2RequestError(ValueError):
    """A V2 inference request this server cannot read as a table (and its ``id``, if any)."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


def v2_to_dataframe_split(body: bytes) -> tuple[bytes, str | None]:
    """A V2 inference request whose input tensors are a table's columns (each of shape [n] or
    [n, 1], ``BYTES`` for text), as MLflow's ``dataframe_split`` body; and the request's
    ``id``, if it gave one. Raises :class:`V2RequestError` saying what is wrong."""
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise V2RequestError(f"the request body is not JSON: {exc}") from None
    given = document.get("id") if isinstance(document, dict) else None
    given = given if isinstance(given, str) else None
    try:
        split = _v2_columns(document)
    except V2RequestError as exc:
        raise V2RequestError(str(exc), given) from None
    return json.dumps(split).encode(), given


def _v2_columns(document: Any) -> dict[str, Any]:
    """MLflow's ``dataframe_split`` of a V2 request's input tensors."""
    inputs = document.get("inputs") if isinstance(document, dict) else None
    if not isinstance(inputs, list) or not inputs:
        raise V2RequestError("the request has no 'inputs' list of tensors")
    columns: list[str] = []
    values: list[list[Any]] = []
    for number, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise V2RequestError(f"input {number} is not a tensor object")
        name, datatype, shape = tensor.get("name"), tensor.get("datatype"), tensor.get("shape")
        label = f"input '{name}'" if isinstance(name, str) else f"input {number}"
        if not isinstance(name, str) or not name:
            raise V2RequestError(f"{label} has no name")
        if datatype not in V2_DATATYPES:
            raise V2RequestError(
                f"{label} has datatype {datatype!r}; expected one of {', '.join(V2_DATATYPES)}"
            )
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and d >= 0 for d in shape)
            or (len(shape) == 2 and shape[1] != 1)
        ):
            raise V2RequestError(f"{label} has shape {shape!r}; a column is [rows] or [rows, 1]")
        data = _flat(tensor.get("data"))
        if len(data) != shape[0]:
            raise V2RequestError(
                f"{label} has {len(data)} values for shape {shape} ({shape[0]} expected)"
            )
        allowed = V2_DATATYPES[datatype]
        wrong = [v for v in data if v is not None and not _is_a(v, allowed)]
        if wrong:
            raise V2RequestError(f"{label} is {datatype} but holds {wrong[0]!r}")
        columns.append(name)
        values.append(data)
    if len({len(column) for column in values}) > 1:
        raise V2RequestError(
            "the input tensors have different numbers of rows: "
            + ", ".join(f"{c}: {len(v)}" for c, v in zip(columns, values, strict=True))
        )
    table = [list(row) for row in zip(*values, strict=True)]
    return {"dataframe_split": {"columns": columns, "data": table}}


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise V2RequestError("a tensor's 'data' must be a list")
    if any(isinstance(v, list) for v in data):
        return [v for row in data for v in (row if isinstance(row, list) else [row])]
    return data


def _is_a(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed)


def _v2_datatype(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "BOOL"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "INT64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "FP64"
    return "BYTES"


def v2_response(answer: str, model_name: str, model_version: str, request_id: str) -> str:
    """MLflow's ``{"predictions": ...}`` answer as a V2 inference response: one output tensor
    per answer column (a classifier's class and probabilities), or ``prediction``."""
    predictions = json.loads(answer)["predictions"]
    if isinstance(predictions, dict):  # a frame answered column-wise
        columns = {str(k): list(v) for k, v in predictions.items()}
    elif predictions and all(isinstance(p, dict) for p in predictions):
        names = list(dict.fromkeys(k for p in predictions for k in p))
        columns = {str(k): [p.get(k) for p in predictions] for k in names}
    else:
        columns = {
            "prediction": [p[0] if isinstance(p, list) and len(p) == 1 else p for p in predictions]
        }
    outputs = [
        {"name": name, "datatype": _v2_datatype(data), "shape": [len(data)], "data": data}
        for name, data in columns.items()
    ]
    return json.dumps(
        {
            "model_name": model_name,
            "model_version": model_version,
            "id": request_id,
            "outputs": outputs,
        },
        default=_plain,
    )


# The V2 datatype of each MLflow column type (a signature's), for the model metadata.
_MLFLOW_TO_V2 = {
    "boolean": "BOOL",
    "integer": "INT32",
    "long": "INT64",
    "float": "FP32",
    "double": "FP64",
    "string": "BYTES",
    "binary": "BYTES",
    "datetime": "BYTES",
}


def v2_metadata(model_name: str, model_version: str, input_schema: Any) -> dict[str, Any]:
    """The V2 model metadata: one input tensor per column of the model's signature."""
    inputs = []
    for column in getattr(input_schema, "inputs", None) or []:
        kind = str(getattr(getattr(column, "type", None), "name", "string"))
        inputs.append(
            {"name": column.name, "datatype": _MLFLOW_TO_V2.get(kind, "BYTES"), "shape": [-1]}
        )
    return {
        "name": model_name,
        "versions": [model_version] if model_version else [],
        "platform": "mlflow",
        "inputs": inputs,
        "outputs": [],
    }


# --- batching -----------------------------------------------------------------------------


# What each worker prints about batching when it starts, and how to read it back from a log.
BATCHING_LINE = "serving worker {pid}: up to {batch} request(s) predicted together ({why})"
_BATCHING_ANNOUNCED = re.compile(
    r"^serving worker \d+: up to (\d+) request\(s\) predicted together \((.*)\)$", re.MULTILINE
)


def announced_batches(log: str) -> list[tuple[int, str]]:
    """What each worker that has started said about batching in the server's ``log``: how
    many requests it predicts together, and why."""
    return [(int(batch), why) for batch, why in _BATCHING_ANNOUNCED.findall(log)]


def serving_batch(env: Mapping[str, str]) -> int | None:
    """MLOPS_SERVING_BATCH of ``env``: how many requests a worker may predict in one call, 1
    (each alone) to :data:`MOST_BATCHED`; None for ``auto`` (the default), where each worker
    decides from its model (:func:`batch_for_model`). Anything else is named."""
    text = env.get("MLOPS_SERVING_BATCH", AUTO).strip().lower() or AUTO
    if text == AUTO:
        return None
    value = int(text) if text.isdigit() else 0
    if not 1 <= value <= MOST_BATCHED:
        raise ValueError(
            f"MLOPS_SERVING_BATCH must be {AUTO} or a whole number from 1 to {MOST_BATCHED}, "
            f"not '{text}'"
        )
    return value


# Fitted scikit-learn classes (exact types, not subclasses) that work on each row on its own,
# value by value, so that a row's answer is the same bytes whatever rows come with it:
# imputing, scaling and encoding are elementwise; a tree model walks each row down its trees
# and adds up their leaves in tree order. A linear model is not among them: its rows are
# multiplied as one matrix, and the last digit can differ with the rows beside them.
ROW_WISE_STEPS = frozenset(
    {
        "sklearn.impute._base.SimpleImputer",
        "sklearn.preprocessing._data.StandardScaler",
        "sklearn.preprocessing._encoders.OneHotEncoder",
        "sklearn.preprocessing._encoders.OrdinalEncoder",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
        "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
        "sklearn.tree._classes.DecisionTreeRegressor",
        "sklearn.tree._classes.DecisionTreeClassifier",
    }
)
_PIPELINE = "sklearn.pipeline.Pipeline"
_COLUMN_TRANSFORMER = "sklearn.compose._column_transformer.ColumnTransformer"
_CLASS_ANSWER = "mlops_assets.ml.answering.ClassAnswer"  # the project's classifier wrapper


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def not_row_wise(estimator: Any) -> list[str]:
    """The parts of a fitted scikit-learn ``estimator`` not known to answer each row on its
    own (:data:`ROW_WISE_STEPS`), by class name; empty when every part is. A Pipeline's steps,
    a ColumnTransformer's transformers and the project's classifier wrapper are looked into."""
    if estimator is None or isinstance(estimator, str):  # a skipped step: "drop", "passthrough"
        return []
    name = _type_name(estimator)
    if name == _PIPELINE:
        return [part for _, step in estimator.steps for part in not_row_wise(step)]
    if name == _COLUMN_TRANSFORMER:
        return [part for _, step, _ in estimator.transformers_ for part in not_row_wise(step)]
    if name == _CLASS_ANSWER:
        return not_row_wise(estimator.model)
    return [] if name in ROW_WISE_STEPS else [type(estimator).__name__]


def same_answer(one: Any, other: Any) -> bool:
    """Whether two predictions are the same: the same type, and the same values (numbers as
    the same bytes)."""
    import numpy as np
    import pandas as pd

    if type(one) is not type(other):
        return False
    if isinstance(one, pd.DataFrame | pd.Series):
        return bool(one.equals(other))
    if isinstance(one, np.ndarray):
        if one.shape != other.shape or one.dtype != other.dtype:
            return False
        if one.dtype.kind in "biufc":
            return one.tobytes() == other.tobytes()
        return bool(np.array_equal(one, other))
    return bool(one == other)


def answers_rows_alone(model: Any, example: Any) -> bool:
    """Whether ``model`` (as MLflow loaded it) answers every row of the table ``example``,
    predicted together, exactly as it answers that row predicted alone."""
    together = split_rows(model.predict(example), [1] * len(example))
    if together is None:
        return False
    return all(
        same_answer(part, model.predict(example.iloc[[row]].reset_index(drop=True)))
        for row, part in enumerate(together)
    )


def batch_for_model(model: Any, setting: int | None, example: Any = None) -> tuple[int, str]:
    """How many requests a worker serving ``model`` (as MLflow loaded it) predicts in one
    call, and why: ``setting`` when MLOPS_SERVING_BATCH gives one; for ``auto`` (None),
    :data:`AUTO_BATCH` when every part of the model is known to answer each row on its own
    and its input example (the table ``example``, when the model has one) confirms it, else 1,
    each request alone, as MLflow's server does."""
    if setting is not None:
        return setting, "MLOPS_SERVING_BATCH"
    try:
        raw = model.get_raw_model()
    except (AttributeError, NotImplementedError):
        return 1, "auto: not a scikit-learn model, so each request is predicted alone"
    unknown = not_row_wise(raw)
    if unknown:
        return 1, (
            f"auto: {', '.join(dict.fromkeys(unknown))} not known to answer each row alone "
            "whatever rows come with it, so each request is predicted alone"
        )
    import pandas as pd

    if not isinstance(example, pd.DataFrame) or len(example) < 2:
        return AUTO_BATCH, "auto: every step answers each row on its own (no input example)"
    if not answers_rows_alone(model, example):
        return 1, (
            "auto: the model's input example answered differently predicted together, so "
            "each request is predicted alone"
        )
    return AUTO_BATCH, (
        f"auto: every step answers each row on its own, as its {len(example)}-row input "
        "example confirms"
    )


class _Pending:
    """One request's rows waiting for the model, and what came of them."""

    def __init__(
        self, data: Any, params: dict[str, Any] | None, abandoned: threading.Event
    ) -> None:
        self.data = data
        self.params = params
        self.abandoned = abandoned
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True


class Batcher:
    """One prediction at a time, in order of arrival; the requests that arrived while the
    model was busy are predicted together, in one call, at most ``most`` of them.

    Whichever waiting request's thread finds the model free makes the call for everyone
    waiting (its own request among them), so a request that finds the model free is
    predicted on its own thread at once, as without batching.

    A single-row request keeps a worker busy about 6 ms, nearly all of it the fixed cost of a
    call (MLflow's schema enforcement, the Pipeline's pandas column selection and each step's
    validation): 16 rows take about as long as one. Requests are put together only where that
    cannot change what each would be told alone: tables (no params) with the same columns of
    the same types, none of them an untyped (object) column whose type MLflow would infer from
    its values, unless the signature says it is text. Each request gets its own rows'
    predictions back, of the type the model returned. When the call fails, or its result
    cannot be split by rows, each request is predicted alone: a bad request gets its own error,
    the others their answers. A request whose client was answered 504 before its turn is not
    predicted.

    A tree model scores each row on its own and answers the same bytes either way. A linear
    model's numbers can differ in the last digit (a few parts in 1e16: the rows are multiplied
    as one matrix), which is why the default, MLOPS_SERVING_BATCH=auto, batches only a model
    whose every step is known to answer each row alone (:func:`batch_for_model`).
    """

    def __init__(self, model: Any, most: int, input_schema: Any = None) -> None:
        self.model = model
        self.most = max(1, most)
        # Columns whose object values MLflow passes through as they are (None: no signature).
        self._text: set[str] | None = None
        if input_schema is not None:
            self._text = {
                str(column.name)
                for column in getattr(input_schema, "inputs", None) or []
                if str(getattr(getattr(column, "type", None), "name", "")) in ("string", "binary")
            }
        self._turn = threading.Condition()  # guards _waiting and _busy
        self._waiting: list[_Pending] = []
        self._busy = False

    @property
    def waiting(self) -> int:
        """Requests waiting for their turn at the model."""
        with self._turn:
            return len(self._waiting)

    def predict(self, data: Any, params: dict[str, Any] | None, abandoned: threading.Event) -> Any:
        """The model's prediction of ``data``, made on this thread or by another waiting one."""
        pending = _Pending(data, params, abandoned)
        with self._turn:
            self._waiting.append(pending)
        while not pending.done:
            with self._turn:
                while self._busy and not pending.done:
                    self._turn.wait()
                if pending.done:
                    break
                self._busy = True
                batch, self._waiting = self._waiting[: self.most], self._waiting[self.most :]
            try:
                self._predict_batch(batch)
            finally:
                with self._turn:
                    self._busy = False
                    self._turn.notify_all()
        if pending.error is not None:
            raise pending.error
        return pending.result

    def _predict_batch(self, batch: list[_Pending]) -> None:
        for pending in batch:
            if pending.abandoned.is_set():
                pending.settle(error=TimeoutError("answered 504 before its turn"))
        live = [p for p in batch if not p.done]
        for group in self._groups(live) if len(live) > 1 else [live]:
            self._predict(group)

    def _groups(self, batch: list[_Pending]) -> list[list[_Pending]]:
        """``batch`` in groups that can be predicted together, in order of arrival."""
        groups: dict[Any, list[_Pending]] = {}
        for number, pending in enumerate(batch):
            key = self._key(pending)
            groups.setdefault(("alone", number) if key is None else key, []).append(pending)
        return list(groups.values())

    def _key(self, pending: _Pending) -> Any:
        import pandas as pd

        data = pending.data
        if (
            pending.params
            or not isinstance(data, pd.DataFrame)
            or not data.index.equals(pd.RangeIndex(len(data)))
        ):
            return None
        columns, types = tuple(data.columns), tuple(data.dtypes)
        if self._text is not None and any(
            getattr(kind, "kind", "") == "O" and str(column) not in self._text
            for column, kind in zip(columns, types, strict=True)
        ):
            return None
        return columns, types

    def _predict(self, group: list[_Pending]) -> None:
        if len(group) > 1:
            parts = self._together(group)
            if parts is not None:
                for pending, part in zip(group, parts, strict=True):
                    pending.settle(part)
                return
        for pending in group:
            try:
                pending.settle(self.model.predict(pending.data, params=pending.params))
            except BaseException as exc:  # the request's thread raises it
                pending.settle(error=exc)

    def _together(self, group: list[_Pending]) -> list[Any] | None:
        import pandas as pd

        try:
            joined = pd.concat([p.data for p in group], ignore_index=True)
            result = self.model.predict(joined, params=None)
        except Exception:
            return None
        return split_rows(result, [len(p.data) for p in group])


def split_rows(result: Any, sizes: list[int]) -> list[Any] | None:
    """``result``, a prediction of ``sum(sizes)`` rows, as one part per size, each as the
    model would have answered those rows alone; None when it cannot be split by rows."""
    import numpy as np
    import pandas as pd

    ends = list(itertools.accumulate(sizes))
    bounds = list(zip([0, *ends[:-1]], ends, strict=True))
    total = ends[-1] if ends else 0
    if isinstance(result, pd.DataFrame | pd.Series):
        if not result.index.equals(pd.RangeIndex(total)):
            return None
        return [result.iloc[start:end].reset_index(drop=True) for start, end in bounds]
    if isinstance(result, np.ndarray):
        if result.ndim == 0 or result.shape[0] != total:
            return None
        return [result[start:end] for start, end in bounds]
    if isinstance(result, list) and len(result) == total:
        return [result[start:end] for start, end in bounds]
    return None


# --- the app ------------------------------------------------------------------------------


class _RecordingModel:
    """The served model as MLflow's scoring function sees it for one request, keeping the rows
    it was given; with a batcher, they are predicted there."""

    def __init__(self, model: Any, batcher: Batcher | None = None) -> None:
        self._model = model
        self._batcher = batcher
        self.metadata = model.metadata
        self.inputs: Any = None
        self.abandoned = threading.Event()  # the client was answered 504

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        self.inputs = data
        if self._batcher is None:
            return self._model.predict(data, params=params)
        return self._batcher.predict(data, params, self.abandoned)


class ModelApp:
    """An ASGI app answering with MLflow's scoring function and logging what it answers.

    Requests are scored on one thread of their own, one at a time in order of arrival, while
    the event loop keeps reading requests and answering probes. MLflow's scoring (JSON, pandas,
    scikit-learn) holds the GIL for nearly all of a request, so several scoring threads in a
    worker (MLflow's server runs each request on asyncio's default pool) only take turns at
    it: every request in flight finishes later and the turns cost time of their own. The
    parallelism is the workers', one per CPU. At 16 connections this took the p99 to about
    0.7x of asyncio's pool of six (the README's serving benchmark). A request that times out
    is answered 504 at once; one still waiting for the thread is never scored, one being
    scored finishes first.

    With ``batch`` above 1 (:func:`batch_for_model`), up to that many requests are scored at once
    by MLflow's function, each on a thread of its own, and a :class:`Batcher` makes their
    predictions one call at a time, together where it can.
    """

    def __init__(
        self,
        model: Any,
        traffic: TrafficLog | None,
        timeout_seconds: float,
        protocol: str = "mlflow",
        model_name: str = "model",
        model_version: str = "",
        batch: int = 1,
    ) -> None:
        from mlflow.version import VERSION

        self.model = model
        self.input_schema = model.metadata.get_input_schema()
        self.traffic = traffic
        self.timeout_seconds = timeout_seconds
        self.mlflow_version = VERSION
        self.protocol = protocol
        self.model_name = model_name
        self.model_version = model_version
        self.scoring = ThreadPoolExecutor(max_workers=batch, thread_name_prefix="scoring")
        self.batcher = Batcher(model, batch, self.input_schema) if batch > 1 else None

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path in ("/ping", "/health") and method == "GET":
            await _respond(send, 200, "\n", "application/json")
        elif path == "/version" and method == "GET":
            await _respond(send, 200, self.mlflow_version, "application/json")
        elif path == "/metrics" and method == "GET":
            text = self.traffic.metrics() if self.traffic else ""
            await _respond(send, 200, text, "text/plain; version=0.0.4")
        elif self.protocol == "v2" and path.startswith("/v2"):
            await self._v2(scope, receive, send)
        elif path == "/invocations" and method == "POST" and self.protocol == "mlflow":
            await self._invocations(scope, receive, send)
        elif path in ("/ping", "/health", "/version", "/metrics") or (
            path == "/invocations" and self.protocol == "mlflow"
        ):
            await _respond(send, 405, '{"detail":"Method Not Allowed"}', "application/json")
        else:
            await _respond(send, 404, '{"detail":"Not Found"}', "application/json")

    async def _v2(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path in ("/v2/health/live", "/v2/health/ready") and method == "GET":
            await _respond(send, 200, "{}", "application/json")
            return
        if path == "/v2" and method == "GET":
            server = {"name": "mlops-model-server", "version": self.mlflow_version}
            await _respond(send, 200, json.dumps({**server, "extensions": []}), "application/json")
            return
        found = _V2_MODEL_PATH.match(path)
        if found is None:
            await _v2_error(send, 404, f"no route {path}")
            return
        name, version, action = found.groups()
        if name != self.model_name or (version is not None and version != self.model_version):
            served = f"'{self.model_name}' version '{self.model_version}'"
            asked = f"'{name}'" + (f" version '{version}'" if version is not None else "")
            await _v2_error(send, 404, f"model {asked} is not served here; this serves {served}")
        elif action == "infer" and method == "POST":
            await self._invocations(scope, receive, send, v2=True)
        elif action == "ready" and method == "GET":
            await _respond(send, 200, "{}", "application/json")
        elif action is None and method == "GET":
            metadata = v2_metadata(self.model_name, self.model_version, self.input_schema)
            await _respond(send, 200, json.dumps(metadata), "application/json")
        else:
            await _v2_error(send, 405, f"{method} {path} is not allowed")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.traffic:
                    self.traffic.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.scoring.shutdown)
                if self.traffic:
                    await asyncio.to_thread(self.traffic.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _invocations(
        self, scope: dict[str, Any], receive: Receive, send: Send, v2: bool = False
    ) -> None:
        received, started = time.time(), time.perf_counter()
        headers = _headers(scope)
        given = headers.get(REQUEST_ID_HEADER)
        body = await _body(receive)
        model = _RecordingModel(self.model, self.batcher)
        scored, content_type = body, headers.get("content-type", "")
        refused = None
        if v2:
            try:
                scored, v2_id = v2_to_dataframe_split(body)
                content_type, given = "application/json", given or v2_id
            except V2RequestError as exc:
                refused = json.dumps({"error_code": "BAD_REQUEST", "message": str(exc)})
                given = given or exc.request_id
        request_id = _request_id(given)
        if refused is None:
            status, content, mimetype = await self._score(scored, content_type, model, request_id)
        else:
            status, content, mimetype = 400, refused, "application/json"
        if not v2:
            await _respond(send, status, content, mimetype, request_id)
        elif status < 400:
            answer = v2_response(content, self.model_name, self.model_version, request_id)
            await _respond(send, status, answer, "application/json", request_id)
        else:
            await _v2_error(send, status, _error_message(content), request_id)
        if self.traffic is not None:
            answered = status < 400
            self.traffic.record(
                Exchange(
                    request_id=request_id,
                    received=received,
                    seconds=time.perf_counter() - started,
                    status=status,
                    inputs=model.inputs if answered else None,
                    answer=content if answered else "",
                    error="" if answered else content,
                    body=b"" if answered else body[:ERROR_BODY_LIMIT],
                )
            )

    async def _score(
        self, body: bytes, content_type: str, model: _RecordingModel, request_id: str
    ) -> tuple[int, str, str]:
        """MLflow's answer to ``body``: status, content and its type."""
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import invocations

        call = asyncio.get_running_loop().run_in_executor(
            self.scoring, invocations, body, content_type, model, self.input_schema
        )
        try:
            result = await asyncio.wait_for(call, timeout=self.timeout_seconds)
            return result.status, result.response, result.mimetype
        except MlflowException as exc:
            return exc.get_http_status_code(), exc.serialize_as_json(), "application/json"
        except TimeoutError:
            model.abandoned.set()
            return 504, "Request processing time exceeded limit", "application/json"
        except Exception:
            log.exception("request %s failed", request_id)
            return 500, "Internal Server Error", "text/plain"


async def _v2_error(send: Send, status: int, message: str, request_id: str | None = None) -> None:
    await _respond(send, status, json.dumps({"error": message}), "application/json", request_id)


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _request_id(given: str | None) -> str:
    """The client's request id when it is a usable one, else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(
    send: Send, status: int, content: str, mimetype: str, request_id: str | None = None
) -> None:
    data = content.encode()
    headers = [(b"content-type", mimetype.encode()), (b"content-length", str(len(data)).encode())]
    if request_id:
        headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def create_app() -> ModelApp:
    """The app of one worker: the model at MLOPS_SERVED_MODEL_PATH (MLflow's /opt/ml/model),
    and the traffic log its settings ask for."""
    # skops (which reads the model) before MLflow: its import scans every module loaded ahead
    # of SciPy once for each of SciPy's 232 ufuncs, and after MLflow that is some 2,000
    # modules. A worker is ready about 0.35 s sooner (2.6 s to 2.25 s on 2 cores).
    import skops.io  # noqa: F401
    from mlflow.environment_variables import (
        _MLFLOW_IS_IN_SERVING_ENVIRONMENT,
        MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT,
    )
    from mlflow.pyfunc.scoring_server import load_model_with_mlflow_config

    model_path = os.environ.get("MLOPS_SERVED_MODEL_PATH", MODEL_PATH)
    model = load_model_with_mlflow_config(model_path)
    batch, why = batch_for_model(model, serving_batch(os.environ), input_example(model, model_path))
    print(BATCHING_LINE.format(pid=os.getpid(), batch=batch, why=why), file=sys.stderr)
    os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = "true"  # as MLflow's server does
    settings = TrafficSettings.from_env(os.environ)
    traffic = None
    if settings.enabled:
        traffic = TrafficLog(
            sink_for(settings),
            os.environ.get("MLOPS_MODEL_NAME", "model"),
            os.environ.get("MLOPS_MODEL_VERSION", ""),
            settings.buffer_requests,
            settings.flush_seconds,
            counters_dir=os.environ.get(COUNTERS_DIR_ENV),
        )
    app = ModelApp(
        model,
        traffic,
        MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get(),
        serving_protocol(os.environ),
        os.environ.get("MLOPS_MODEL_NAME", "model"),
        os.environ.get("MLOPS_MODEL_VERSION", ""),
        batch,
    )
    # MLflow, pandas, scikit-learn and the model stay for the worker's life: leave them out of
    # the garbage collector's full passes. Each walked them all and held every request up;
    # with the traffic log keeping each request's rows for a moment, such passes came more
    # often: p99 at one connection went from 16 ms to 52 ms, and back to 17 with this.
    gc.freeze()
    return app


def input_example(model: Any, model_path: str) -> Any:
    """The input example saved with the model (MLflow's ``input_example.json``), or None when
    it has none or it cannot be read."""
    try:
        return model.metadata.load_input_example(model_path)
    except (OSError, ValueError) as error:
        print(f"serving: the model's input example is not readable: {error}", file=sys.stderr)
        return None


def size_server(environ: MutableMapping[str, str], cpu_max: str | None, usable_cpus: int) -> int:
    """Size the server to the container: sets MLFLOW_MODELS_WORKERS (unless given) and
    OMP_NUM_THREADS (likewise) in ``environ``; returns the workers.

    MLflow's default is one worker per CPU of the node: on a 64-CPU node a pod limited to
    2 CPUs would start 64 workers, each loading the model into its memory."""
    workers, threads = server_sizing(
        container_cpus(cpu_max, usable_cpus), environ.get("MLFLOW_MODELS_WORKERS")
    )
    environ["MLFLOW_MODELS_WORKERS"] = str(workers)
    environ.setdefault("OMP_NUM_THREADS", str(threads))
    return workers


def main() -> None:
    given = (os.environ.get("MLFLOW_MODELS_WORKERS"), os.environ.get("OMP_NUM_THREADS"))
    workers = size_server(os.environ, cgroup_cpu_max(), len(os.sched_getaffinity(0)))
    if given != (os.environ["MLFLOW_MODELS_WORKERS"], os.environ["OMP_NUM_THREADS"]):
        # Start again with the sizing in the process's own environment: numpy's thread pools
        # read it once, and a look at /proc (or `podman exec env`) shows what the server got.
        os.execve(sys.executable, [sys.executable, *sys.argv], os.environ)
    TrafficSettings.from_env(os.environ)  # a wrong setting stops the container at once
    protocol, batch = serving_protocol(os.environ), serving_batch(os.environ)
    threads = os.environ["OMP_NUM_THREADS"]
    batching = (
        f"up to {batch} request(s) predicted together"
        if batch is not None
        else "each worker decides from its model how many requests to predict together"
    )
    print(
        f"serving: {workers} worker(s), {threads} native thread(s) each, protocol {protocol}, "
        f"{batching}",
        file=sys.stderr,
    )

    import uvicorn

    # A fresh folder for this server's workers to share their counters in (see TrafficLog).
    shared: str | None = None
    try:
        shared = os.environ[COUNTERS_DIR_ENV] = tempfile.mkdtemp(prefix="mlops-counters-")
    except OSError as error:  # a read-only file system: each worker counts alone
        os.environ.pop(COUNTERS_DIR_ENV, None)
        print(
            f"serving: /metrics per worker: no folder to share counters ({error})", file=sys.stderr
        )
    try:
        uvicorn.run(
            f"{Path(__file__).stem}:create_app",
            factory=True,
            app_dir=str(Path(__file__).parent),
            host=os.environ.get("UVICORN_HOST", "0.0.0.0"),
            port=int(os.environ.get("MLOPS_SERVING_PORT", SERVING_PORT)),
            workers=workers,
            lifespan="on",
        )
    finally:
        if shared:  # only the folder this server made
            shutil.rmtree(shared, ignore_errors=True)


if __name__ == "__main__":
    main()
