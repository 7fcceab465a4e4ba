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
- **What a request may be**: a body over ``MLOPS_SERVING_MAX_BODY_BYTES`` is answered 413 as
  soon as its Content-Length or the bytes read so far say so, never held whole; JSON nested
  deeper than :data:`MAX_JSON_DEPTH` is answered 400 unparsed; a ``dataframe_split`` row with more or fewer values than columns, and
  a row whose values are all null, are answered 400 naming the rows. Columns the model's
  signature does not have are named in an ``x-ignored-columns`` header, a warning (once a
  minute at most) and the traffic log's lines (``ignored_columns``).
- **Traffic log**: every request answered (its id, time, model version, input rows and
  predictions, or its error) is appended to its worker's journal on local disk before the
  client has the answer, never sent to the store on the request's path. A background thread
  writes the journal to the object store as one JSON Lines file per worker and window
  (``traffic/<model>/date=<day>/...jsonl``), and the rest on shutdown (SIGTERM); what a killed
  worker left, the worker started in its place ships (see :class:`TrafficLog`). A journal
  holding ``MLOPS_TRAFFIC_BUFFER`` requests or ``MLOPS_TRAFFIC_BUFFER_BYTES`` bytes not yet in
  the store drops records and counts them: the count is logged, written to the store as a
  ``dropped`` line and served at ``/metrics``: the server's totals, whichever worker answers.

Settings (environment): ``MLOPS_SERVING_PROTOCOL`` (mlflow/v2), ``MLOPS_SERVING_BATCH``
(requests predicted together: ``auto``, the default, 16 for a model that answers each row
alone and 1 for any other; or 1 to 64), ``MLOPS_SERVING_MAX_BODY_BYTES`` (8 MiB),
``MLOPS_TRAFFIC_LOG`` (on/off), ``MLOPS_TRAFFIC_STORE`` (a folder, or ``s3://bucket/prefix``
with ``MLOPS_S3_ENDPOINT_URL``, ``MLOPS_S3_REGION`` and the standard AWS credential
variables), ``MLOPS_TRAFFIC_FLUSH_SECONDS``, ``MLOPS_TRAFFIC_BUFFER`` (requests, 10,000),
``MLOPS_TRAFFIC_BUFFER_BYTES`` (64 MiB); the journal's folder is made in ``TMPDIR``.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import gc
import itertools
import json
import logging
import math
import mmap
import os
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
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
# MLOPS_SERVING_MAX_BODY_BYTES's default. A body costs a worker some 30 times its size while it
# is parsed, scored and logged (a 28.8 MB one took a worker from 286 MB to 1.23 GB), so 8 MiB
# keeps one request under ~270 MB; it holds some 37,000 rows of a 10-feature table sent as
# dataframe_split (221 bytes a row), and tables larger than that are batch scoring's work.
MAX_BODY_BYTES = 8 * 1024 * 1024
# Deeper JSON is refused unread: the parser recurses once a level. A table's request is 4 or 5
# levels deep (dataframe_split: 4; V2 with [rows, 1] tensors: 5).
MAX_JSON_DEPTH = 32
MOST_NAMED = 10  # rows (or columns) a refusal or a warning names, at most
JSON = "application/json"
# MLOPS_TRAFFIC_BUFFER_BYTES's default: the bytes of a worker's journal not yet in the store (on
# local disk). The 10,000-request bound comes first for small requests (~450 bytes a row); this
# one for large ones: a few of the largest a worker reads (the lines of a row take ~2x its JSON).
BUFFER_BYTES = 64 * 1024 * 1024
IGNORED_COLUMNS_HEADER = "x-ignored-columns"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
PROTOCOLS = ("mlflow", "v2")
# Set by main() for its workers: the folder of their traffic log's journals and counters.
JOURNAL_DIR_ENV = "MLOPS_TRAFFIC_JOURNAL_DIR"
JOURNAL_PREFIX = "mlops-traffic-"
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
    buffer_bytes: int = BUFFER_BYTES
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
            buffer_bytes=int(env.get("MLOPS_TRAFFIC_BUFFER_BYTES") or default.buffer_bytes),
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
    ignored_columns: tuple[str, ...] = ()  # columns of the request the model does not take


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
    if exchange.ignored_columns:
        base["ignored_columns"] = list(exchange.ignored_columns)
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


# The journal's framing: each request's lines end with RS; each request dropped is one GS. JSON
# text never holds either byte as it is (json.dumps escapes every control character).
_REQUEST_END = b"\x1e"
_DROP = b"\x1d"
JOURNAL_SUFFIX = ".journal"
COUNTERS_SUFFIX = ".counters"
# A worker's counters file: these int64 slots, in this order.
_COUNTERS = struct.Struct("5q")
_RECORDED, _DROPPED, _WRITTEN_LINES, _SHIPPED_REQUESTS, _SHIPPED_DROPS = range(5)


def segment_name(day: str, stamp: str, sequence: int, worker: str) -> str:
    """A journal segment's file name: what the key of its file in the store is made from."""
    return f"{day}_{stamp}_{sequence:06d}_{worker}{JOURNAL_SUFFIX}"


def segment_fields(path: Path) -> tuple[str, str, int, str]:
    """The day, time stamp, sequence number and worker of a journal segment's file name."""
    day, stamp, sequence, worker = path.name.removesuffix(JOURNAL_SUFFIX).split("_", 3)
    return day, stamp, int(sequence), worker


@dataclass(frozen=True)
class Shipped:
    """What one journal segment held, now in the store."""

    requests: int
    drops: int
    lines: int
    size: int  # bytes of the segment's file


def _metric_values(counts: tuple[int, ...]) -> tuple[int, int, int, int]:
    """A counters file's slots as the values of :data:`TrafficLog.COUNTERS`."""
    held = max(0, counts[_RECORDED] - counts[_SHIPPED_REQUESTS])
    return counts[_RECORDED], counts[_DROPPED], counts[_WRITTEN_LINES], held


class Throttle:
    """When a warning that may repeat with every request is due: at most once every
    ``seconds``; :meth:`due` says how many times it was held back since it was last due."""

    def __init__(self, seconds: float = 60.0) -> None:
        self.seconds = seconds
        self._next = 0.0
        self._held_back = 0

    def due(self) -> int | None:
        now = time.monotonic()
        if now < self._next:
            self._held_back += 1
            return None
        self._next = now + self.seconds
        held_back, self._held_back = self._held_back, 0
        return held_back


class TrafficLog:
    """One worker's traffic log: a journal on local disk, and a thread that ships it to a sink.

    :meth:`record` turns an exchange into its log lines and appends them to the worker's journal
    in one ``os.write`` (O_APPEND), before the response is sent: an answered request is on disk
    even when the worker is killed the next moment (SIGKILL, the OOM killer), and memory holds
    no request. An exchange that would take the journal's part not yet in the store past
    ``capacity`` requests or ``capacity_bytes`` bytes is dropped, and counted with one byte
    appended to the journal (so a count survives the worker too).

    The journal is a series of segment files, each of one day. Every ``flush_seconds`` the
    thread closes the segment being written and writes each closed one to the sink as one JSON
    Lines file, under a key made from the segment's own name, then deletes it: a segment
    written again after a crash overwrites its own file, and never adds its lines twice.

    The server's workers share one folder (``folder``, which the server's process makes; without
    one the log makes its own). Each worker's counters are a file there that it maps into memory
    and keeps locked for its life. A counters file no process holds locked is a worker that has
    ended: the first worker to lock it ships the segments it left and counts them in its
    counters (when it starts, as uvicorn starts a worker in place of a killed one, and at each
    flush), and the server's process does so once more when it stops. /metrics sums the
    counters of every worker the server has had.
    """

    SEGMENT_BYTES = 4 * 1024 * 1024  # a longer segment is closed: what one write of it holds

    def __init__(
        self,
        sink: Sink,
        model_name: str,
        model_version: str,
        capacity: int,
        flush_seconds: float,
        worker: str | None = None,
        folder: str | None = None,
        capacity_bytes: int = BUFFER_BYTES,
    ) -> None:
        self.sink = sink
        self.model_name = model_name
        self.model_version = model_version
        self.capacity = max(1, capacity)
        self.capacity_bytes = max(1, capacity_bytes)
        self.flush_seconds = flush_seconds
        self.worker = worker or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.shared = folder is not None
        self._own_folder: tempfile.TemporaryDirectory[str] | None = None
        if folder is None:
            self._own_folder = tempfile.TemporaryDirectory(prefix=JOURNAL_PREFIX)
            folder = self._own_folder.name
        self.folder = Path(folder)
        self._counts, self._counters_map, self._counters_fd = self._claim_counters()
        self._segment: int | None = None  # the file descriptor of the segment being written
        self._segment_path = Path()
        self._segment_day = ""
        self._segment_bytes = 0
        self._closed: list[Path] = []  # segments closed and not yet shipped, oldest first
        self._unshipped = 0  # bytes in this worker's segments
        self._sequence = itertools.count(1)
        self._lock = threading.Lock()  # the segments and the counters
        self._flush_lock = threading.Lock()  # one flush at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._journal_failing = Throttle()

    @classmethod
    def from_settings(
        cls, settings: TrafficSettings, folder: str | None, worker: str | None = None
    ) -> TrafficLog:
        """The log of the model this process serves (MLOPS_MODEL_NAME, MLOPS_MODEL_VERSION)."""
        return cls(
            sink_for(settings),
            os.environ.get("MLOPS_MODEL_NAME", "model"),
            os.environ.get("MLOPS_MODEL_VERSION", ""),
            settings.buffer_requests,
            settings.flush_seconds,
            worker=worker,
            folder=folder,
            capacity_bytes=settings.buffer_bytes,
        )

    def _claim_counters(self) -> tuple[memoryview, mmap.mmap, int]:
        """This worker's counters file, locked for the worker's life; made under another name and
        then renamed, so that no other worker ever finds it unlocked and takes it for an ended
        one's."""
        partial = self.folder / f".{self.worker}{COUNTERS_SUFFIX}.partial"
        fd = os.open(partial, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, _COUNTERS.size)
        counters = mmap.mmap(fd, _COUNTERS.size)
        os.replace(partial, self.folder / f"{self.worker}{COUNTERS_SUFFIX}")
        return memoryview(counters).cast("q"), counters, fd

    def record(self, exchange: Exchange) -> bool:
        """Journal ``exchange``; False when it was dropped (and counted) instead."""
        day = _iso(exchange.received)[:10]
        counts = self._counts
        entry = b""
        if self._room(0):  # a full journal wastes no time on the lines it drops
            lines = exchange_lines(exchange, self.model_name, self.model_version)
            entry = "".join(f"{_dumps(line)}\n" for line in lines).encode() + _REQUEST_END
        with self._lock:
            if entry and self._room(len(entry)):
                try:
                    self._append(day, entry)
                    counts[_RECORDED] += 1
                    return True
                except OSError as error:
                    self._say_journal_failed(error)
            try:
                self._append(day, _DROP)
            except OSError as error:  # counted here alone: a worker killed now loses the count
                self._say_journal_failed(error)
            counts[_DROPPED] += 1
            return False

    def _room(self, size: int) -> bool:
        """Whether the journal takes another request of ``size`` bytes."""
        held = self._counts[_RECORDED] - self._counts[_SHIPPED_REQUESTS]
        return held < self.capacity and self._unshipped + size <= self.capacity_bytes

    def _append(self, day: str, data: bytes) -> None:
        """Append ``data`` whole to the segment being written (under _lock): a new segment for
        another day or past SEGMENT_BYTES. Raises OSError when the disk takes none or part of it
        (the part is taken back)."""
        segment = self._segment
        if segment is None or day != self._segment_day or self._segment_bytes >= self.SEGMENT_BYTES:
            self._close_segment()
            stamp = datetime.now(UTC).strftime("%H%M%S")
            path = self.folder / segment_name(day, stamp, next(self._sequence), self.worker)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
            segment = self._segment = os.open(path, flags, 0o600)
            self._segment_path, self._segment_day, self._segment_bytes = path, day, 0
        written = os.write(segment, data)
        if written != len(data):
            os.ftruncate(segment, self._segment_bytes)
            raise OSError(
                errno.ENOSPC, f"{written} of {len(data)} bytes written", self._segment_path
            )
        self._segment_bytes += written
        self._unshipped += written

    def _close_segment(self) -> None:
        if self._segment is not None:
            os.close(self._segment)
            self._closed.append(self._segment_path)
            self._segment = None

    def _say_journal_failed(self, error: OSError) -> None:
        skipped = self._journal_failing.due()
        if skipped is not None:
            log.error(
                "traffic log: cannot write its journal in %s, requests are dropped (%d more such "
                "failures since the last said): %s",
                self.folder,
                skipped,
                error,
            )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="traffic-log", daemon=True)
        self._thread.start()
        log.info(
            "traffic log on: %s, every %gs, journal in %s of up to %d requests or %d bytes "
            "(worker %s)",
            self.sink.describe(),
            self.flush_seconds,
            self.folder,
            self.capacity,
            self.capacity_bytes,
            self.worker,
        )

    def close(self) -> None:
        """Stop the thread and ship what is left (on shutdown); a segment the store did not take
        stays in the folder, for the server's process to try once more."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.flush()
        except Exception:
            log.exception("traffic log: writing to %s failed", self.sink.describe())
        lost = self.counters()[3]
        self._counts.release()
        self._counters_map.close()
        os.close(self._counters_fd)  # unlocks: what is left is an ended worker's
        if lost:
            log.error("traffic log: %d requests could not be written to the store", lost)

    def _run(self) -> None:
        ship: Callable[[], object] = self.adopt  # at once: it may replace a worker killed
        while True:
            try:
                ship()
            except Exception:  # the next flush tries again; answering goes on
                log.exception("traffic log: writing to %s failed", self.sink.describe())
            if self._stop.wait(self.flush_seconds):
                return
            ship = self.flush

    def flush(self) -> None:
        """Close the segment being written and ship every closed segment, oldest first, then
        what ended workers left (:meth:`adopt`). Raises when the sink fails: the segments not
        shipped wait for the next flush."""
        with self._flush_lock:
            with self._lock:
                self._close_segment()
                segments = list(self._closed)
            for path in segments:
                shipped = self._ship(path)
                with self._lock:
                    self._closed.remove(path)
                    self._unshipped -= shipped.size
                    self._count_shipped(self._counts, shipped)
                path.unlink()
                if shipped.drops:
                    log.warning(
                        "traffic log: buffer full: requests not logged since the last write: %d",
                        shipped.drops,
                    )
            self.adopt()

    def _ship(self, path: Path) -> Shipped:
        """Write the journal segment at ``path`` to the sink, under the key its name gives."""
        day, stamp, sequence, worker = segment_fields(path)
        data = path.read_bytes()
        size = len(data)
        # A worker killed in the middle of a write leaves the start of an entry: a request it
        # never answered, since the entry is written first.
        data = data[: max(data.rfind(_REQUEST_END), data.rfind(_DROP)) + 1]
        requests, drops = data.count(_REQUEST_END), data.count(_DROP)
        lines = data.replace(_REQUEST_END, b"").replace(_DROP, b"")
        if drops:
            clock = f"{stamp[:2]}:{stamp[2:4]}:{stamp[4:]}"  # when the segment was begun
            dropped = {"kind": "dropped", "time": f"{day}T{clock}.000+00:00",
                       "count": drops, "worker": worker, "model_name": self.model_name,
                       "model_version": self.model_version}  # fmt: skip
            lines += f"{_dumps(dropped)}\n".encode()
        if lines:
            self.sink.write(traffic_key(self.model_name, day, stamp, worker, sequence), lines)
        return Shipped(requests, drops, lines.count(b"\n"), size)

    @staticmethod
    def _count_shipped(counts: memoryview, shipped: Shipped) -> None:
        counts[_SHIPPED_REQUESTS] += shipped.requests
        counts[_SHIPPED_DROPS] += shipped.drops
        counts[_WRITTEN_LINES] += shipped.lines

    def adopt(self) -> int:
        """Ship what the workers that ended left (their counters files, no longer locked), count
        it in their counters, and return the requests of theirs still not in the store (the
        store failed; the next call tries again)."""
        left = 0
        for path in self.folder.glob(f"*{COUNTERS_SUFFIX}"):
            worker = path.name.removesuffix(COUNTERS_SUFFIX)
            if worker == self.worker:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while its worker runs
                with mmap.mmap(fd, _COUNTERS.size) as counters:
                    left += self._ship_ended(worker, counters)
            except (BlockingIOError, ValueError):  # running (or another adopts it); not ours
                pass
            finally:
                os.close(fd)
        return left

    def _ship_ended(self, worker: str, counters: mmap.mmap) -> int:
        segments = sorted(
            path
            for path in self.folder.glob(f"*_{worker}{JOURNAL_SUFFIX}")
            if segment_fields(path)[3] == worker
        )
        counts = memoryview(counters).cast("q")
        try:
            for path in segments:
                try:
                    shipped = self._ship(path)
                except Exception as error:
                    log.warning(
                        "traffic log: what worker %s left is not written yet: %s", worker, error
                    )
                    break
                self._count_shipped(counts, shipped)
                path.unlink()
            else:  # all of it shipped: the journal is the truth, even where a kill between a
                # write and its count left the count short
                counts[_RECORDED] = max(counts[_RECORDED], counts[_SHIPPED_REQUESTS])
                counts[_DROPPED] = max(counts[_DROPPED], counts[_SHIPPED_DROPS])
            return max(0, counts[_RECORDED] - counts[_SHIPPED_REQUESTS])
        finally:
            counts.release()

    COUNTERS = (
        ("mlops_traffic_recorded_total", "counter", "Requests written to the log's journal."),
        ("mlops_traffic_dropped_total", "counter", "Requests not logged: the journal was full."),
        ("mlops_traffic_written_lines_total", "counter", "Log lines written to the store."),
        ("mlops_traffic_held_requests", "gauge", "Requests journaled, not yet in the store."),
    )

    def counters(self) -> tuple[int, ...]:
        """This worker's values of :data:`COUNTERS`, in their order."""
        with self._lock:
            return _metric_values(struct.unpack_from(_COUNTERS.format, self._counters_map))

    def server_counters(self) -> tuple[int, ...]:
        """The server's values of :data:`COUNTERS`: summed over every worker it has had (a
        worker that ended still counts what it did, and holds what it left until another
        worker ships it)."""
        totals = [0] * len(self.COUNTERS)
        for path in self.folder.glob(f"*{COUNTERS_SUFFIX}"):
            try:
                with (
                    open(path, "rb") as file,
                    mmap.mmap(file.fileno(), _COUNTERS.size, access=mmap.ACCESS_READ) as counters,
                ):
                    values = _metric_values(struct.unpack_from(_COUNTERS.format, counters))
            except (OSError, ValueError):  # removed meanwhile, or not a counters file
                continue
            totals = [total + value for total, value in zip(totals, values, strict=True)]
        return tuple(totals)

    def metrics(self) -> str:
        """The server's counters in Prometheus' text format: all its workers together, or, in a
        folder of its own, this worker's, labelled with its name."""
        label = "" if self.shared else f'{{worker="{self.worker}"}}'
        return "".join(
            f"# HELP {name} {text}\n# TYPE {name} {kind}\n{name}{label} {value}\n"
            for (name, kind, text), value in zip(self.COUNTERS, self.server_counters(), strict=True)
        )


def _dumps(line: dict[str, Any]) -> str:
    return json.dumps(line, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    if hasattr(value, "isoformat"):  # timestamps and dates
        return value.isoformat()
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    return str(value)


# --- what a request may be -----------------------------------------------------------------


def max_body_bytes(env: Mapping[str, str]) -> int:
    """MLOPS_SERVING_MAX_BODY_BYTES of ``env``: the largest request body a worker reads, in
    bytes (:data:`MAX_BODY_BYTES` when unset); anything but a whole number above 0 is named."""
    text = env.get("MLOPS_SERVING_MAX_BODY_BYTES", "").strip()
    if not text:
        return MAX_BODY_BYTES
    if not text.isdigit() or int(text) < 1:
        raise ValueError(
            f"MLOPS_SERVING_MAX_BODY_BYTES must be a whole number of bytes above 0, not '{text}'"
        )
    return int(text)


def too_large(limit: int) -> str:
    """What a request whose body is over ``limit`` bytes is answered (413), as MLflow words an
    error."""
    message = (
        f"the request body is larger than {limit:,} bytes, the most this server reads "
        "(MLOPS_SERVING_MAX_BODY_BYTES): send its rows in several requests"
    )
    return json.dumps({"error_code": "RESOURCE_LIMIT_EXCEEDED", "message": message})


def bad_request(message: str) -> str:
    """A 400's body, as MLflow words an error."""
    return json.dumps({"error_code": "BAD_REQUEST", "message": message})


class RequestRefused(ValueError):
    """A request refused before the model sees it (answered 400), and why."""


# A JSON string, escapes and all (the loop unrolled: a tight loop for the regex engine).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_beyond(body: bytes, limit: int) -> int:
    """How deep the JSON text ``body`` nests arrays and objects, when that is deeper than
    ``limit``; else 0. Read without parsing: a body with no more opening brackets than
    ``limit`` cannot be deeper (a single row's request, in well under a microsecond); any other
    is measured by its brackets outside strings (in C and numpy: ~2 ms for 1 MB of table)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return 0
    import numpy as np

    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    # "[" and "{" have bit 1 set, "]" and "}" do not: one level in, one out.
    steps = (np.frombuffer(brackets, np.uint8) & 2).astype(np.int8) - 1
    depth = int(np.cumsum(steps, dtype=np.int32).max()) if len(steps) else 0
    return depth if depth > limit else 0


def read_json(body: bytes) -> Any:
    """``body`` parsed as JSON. Raises :class:`RequestRefused` for JSON nested deeper than
    :data:`MAX_JSON_DEPTH` (unparsed) or that the parser cannot hold, and JSONDecodeError or
    UnicodeDecodeError for a body that is not JSON."""
    depth = nesting_beyond(body, MAX_JSON_DEPTH)
    if depth:
        raise RequestRefused(
            f"the request's JSON is nested {depth} levels deep; this server reads at most "
            f"{MAX_JSON_DEPTH} (a table's request is 4 or 5)"
        )
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise
    except (ValueError, RecursionError) as exc:  # such as an integer of over 4,300 digits
        raise RequestRefused(f"the request's JSON cannot be read: {exc}") from None


def refuse_ragged_rows(document: dict[str, Any]) -> None:
    """Raise :class:`RequestRefused` when a ``dataframe_split`` request has a row with more or
    fewer values than it has columns: pandas fills a short row with nulls, and it was scored."""
    split = document.get("dataframe_split")
    columns = split.get("columns") if isinstance(split, dict) else None
    rows = split.get("data") if isinstance(split, dict) else None
    if not isinstance(columns, list) or not isinstance(rows, list):
        return
    try:
        lengths = list(map(len, rows))
    except TypeError:  # a row that is not a list: MLflow's own error says so
        return
    if lengths.count(len(columns)) == len(lengths):
        return
    wrong = [row for row, length in enumerate(lengths) if length != len(columns)]
    verb = "has" if len(wrong) == 1 else "have"
    raise RequestRefused(
        f"{_rows_named(wrong)} {verb} {_named([lengths[row] for row in wrong])} values for "
        f"{len(columns)} columns: a row needs one value for each column (null for a missing one)"
    )


def rows_without_values(frame: Any) -> list[int]:
    """The positions of the rows of the table ``frame`` whose every value is missing (on its
    values as one array: 4 us for a row of numbers, where ``frame.isna()`` takes 12)."""
    import numpy as np
    import pandas as pd

    return np.flatnonzero(pd.isna(frame.to_numpy()).all(axis=1)).tolist()


def _rows_named(rows: list[int]) -> str:
    return f"row {rows[0]}" if len(rows) == 1 else f"rows {_named(rows)}"


def _named(items: list[Any]) -> str:
    """``items`` as a list for a message: the first :data:`MOST_NAMED`, and how many more."""
    named = ", ".join(str(item) for item in items[:MOST_NAMED])
    return named if len(items) <= MOST_NAMED else f"{named} and {len(items) - MOST_NAMED} more"


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


def v2_to_dataframe_split(body: bytes) -> tuple[dict[str, Any], str | None]:
    """A V2 inference request whose input tensors are a table's columns (each of shape [n] or
    [n, 1], ``BYTES`` for text), as MLflow's ``dataframe_split`` document; and the request's
    ``id``, if it gave one. Raises :class:`V2RequestError` saying what is wrong, or
    :class:`RequestRefused` for JSON nested too deep to read."""
    try:
        document = read_json(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise V2RequestError(f"the request body is not JSON: {exc}") from None
    given = document.get("id") if isinstance(document, dict) else None
    given = given if isinstance(given, str) else None
    try:
        split = _v2_columns(document)
    except V2RequestError as exc:
        raise V2RequestError(str(exc), given) from None
    return split, given


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
    it was given; with a batcher, they are predicted there. A table with a row of no values at
    all is refused here, before the model (it would be scored); the columns the model does not
    take (MLflow drops them without a word) are noted."""

    def __init__(
        self, model: Any, batcher: Batcher | None = None, columns: frozenset[str] | None = None
    ) -> None:
        self._model = model
        self._batcher = batcher
        self._columns = columns  # the signature's, if it names them
        self.metadata = model.metadata
        self.inputs: Any = None
        self.ignored: tuple[str, ...] = ()
        self.refused = ""  # why the rows were refused (MLflow's function wraps the exception)
        self.abandoned = threading.Event()  # the client was answered 504

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        self.inputs = data
        if isinstance(data, pd.DataFrame):
            empty = rows_without_values(data)
            if empty:
                verb = "has" if len(empty) == 1 else "have"
                self.refused = f"{_rows_named(empty)} {verb} no values (all null): nothing to score"
                raise RequestRefused(self.refused)
            if self._columns is not None:
                self.ignored = tuple(str(c) for c in data.columns if str(c) not in self._columns)
        if self._batcher is None:
            return self._model.predict(data, params=params)
        return self._batcher.predict(data, params, self.abandoned)


@dataclass(frozen=True)
class Answer:
    """What a request is answered (status, content and its type, as MLflow's function words
    them), and what its scoring learnt: a V2 request's ``id``, the columns the model ignored."""

    status: int
    content: str
    mimetype: str = JSON
    v2_id: str | None = None
    ignored_columns: tuple[str, ...] = ()


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
        max_body_bytes: int = MAX_BODY_BYTES,
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
        self.max_body_bytes = max_body_bytes
        named = self.input_schema is not None and self.input_schema.has_input_names()
        self.input_columns = (
            frozenset(str(name) for name in self.input_schema.input_names()) if named else None
        )
        self._ignoring = Throttle()  # the warning about ignored columns

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
        body, whole = await _body(receive, headers, self.max_body_bytes)
        model = _RecordingModel(self.model, self.batcher, self.input_columns)
        if whole:
            answer = await self._score(body, headers.get("content-type", ""), model, v2, given)
        else:
            answer = Answer(413, too_large(self.max_body_bytes))
        request_id = _request_id(given or answer.v2_id)
        status, content, mimetype = answer.status, answer.content, answer.mimetype
        if v2 and status < 400:
            content = v2_response(content, self.model_name, self.model_version, request_id)
        elif v2:
            content, mimetype = json.dumps({"error": _error_message(content)}), JSON
        extra = []
        if answer.ignored_columns:
            self._say_ignored(request_id, answer.ignored_columns)
            named = ignored_columns_header(answer.ignored_columns)
            extra.append((IGNORED_COLUMNS_HEADER.encode(), named))
        if self.traffic is not None:  # journaled before the client has its answer
            answered = status < 400
            self.traffic.record(
                Exchange(
                    request_id=request_id,
                    received=received,
                    seconds=time.perf_counter() - started,
                    status=status,
                    inputs=model.inputs if answered else None,
                    answer=answer.content if answered else "",
                    error="" if answered else answer.content,
                    body=b"" if answered else body[:ERROR_BODY_LIMIT],
                    ignored_columns=answer.ignored_columns,
                )
            )
        await _respond(send, status, content, mimetype, request_id, extra)

    def _say_ignored(self, request_id: str, columns: tuple[str, ...]) -> None:
        held_back = self._ignoring.due()
        if held_back is not None:
            log.warning(
                "request %s has columns the model does not take, ignored: %s (and %d more such "
                "requests since this was last said)",
                request_id,
                _named(list(columns)),
                held_back,
            )

    async def _score(
        self, body: bytes, content_type: str, model: _RecordingModel, v2: bool, given: str | None
    ) -> Answer:
        """The answer to ``body``, made on a scoring thread within the timeout."""
        call = asyncio.get_running_loop().run_in_executor(
            self.scoring, self._answer, body, content_type, model, v2
        )
        try:
            return await asyncio.wait_for(call, timeout=self.timeout_seconds)
        except TimeoutError:
            model.abandoned.set()
            return Answer(504, "Request processing time exceeded limit")
        except Exception:
            log.exception("a request failed (x-request-id %s)", given)
            return Answer(500, "Internal Server Error", "text/plain")

    def _answer(self, body: bytes, content_type: str, model: _RecordingModel, v2: bool) -> Answer:
        """MLflow's answer to a request (on a scoring thread). A JSON body is read here, once,
        held to what a request may be (:func:`read_json`, :func:`refuse_ragged_rows`), and
        given to MLflow's function as the document it is (the text, it would read twice)."""
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import invocations

        v2_id = None
        try:
            if v2:
                data, v2_id = v2_to_dataframe_split(body)
                content_type = JSON
            else:
                data = _json_document(body, content_type)
            result = invocations(data, content_type, model, self.input_schema)
            return Answer(result.status, result.response, result.mimetype, v2_id, model.ignored)
        except V2RequestError as exc:
            return Answer(400, bad_request(str(exc)), JSON, exc.request_id)
        except RequestRefused as exc:
            return Answer(400, bad_request(str(exc)), JSON, v2_id)
        except MlflowException as exc:
            if model.refused:  # raised by the model's predict, and wrapped by MLflow's function
                return Answer(400, bad_request(model.refused), JSON, v2_id)
            return Answer(exc.get_http_status_code(), exc.serialize_as_json(), JSON, v2_id)


def _json_document(body: bytes, content_type: str) -> Any:
    """The JSON object a request of JSON ``content_type`` holds; any other body as it is, for
    MLflow's function to read or to say what is wrong with it."""
    if content_type.partition(";")[0].strip() != JSON:
        return body
    try:
        document = read_json(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return body
    if not isinstance(document, dict):
        return body
    refuse_ragged_rows(document)
    return document


def ignored_columns_header(columns: tuple[str, ...]) -> bytes:
    """Columns as a header's value: comma-separated, each percent-encoded where it must be (a
    comma, a space, a character not ASCII); the first :data:`MOST_NAMED` and how many more."""
    listed = ",".join(urllib.parse.quote(column, safe="") for column in columns[:MOST_NAMED])
    more = len(columns) - MOST_NAMED
    return (listed if more <= 0 else f"{listed} (+{more} more)").encode()


async def _v2_error(send: Send, status: int, message: str, request_id: str | None = None) -> None:
    await _respond(send, status, json.dumps({"error": message}), "application/json", request_id)


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _request_id(given: str | None) -> str:
    """The client's request id when it is a usable one, else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


async def _body(receive: Receive, headers: dict[str, str], limit: int) -> tuple[bytes, bool]:
    """The request's body, and whether it is whole. Reading stops once it is past ``limit``
    bytes, so a body over the limit is never held whole, and only its first bytes are kept (for
    the log); one its Content-Length says is over is refused having read only those (or none,
    from a client that waits to be asked for it: Expect: 100-continue). uvicorn reads and drops
    the rest after the answer, so that a client that sends it all still reads the answer."""
    declared = headers.get("content-length", "")
    over = declared.isdigit() and int(declared) > limit
    if over and headers.get("expect", "").lower() == "100-continue":
        return b"", False
    keep = min(limit, ERROR_BODY_LIMIT) if over else limit
    chunks, size, more = [], 0, True
    while more and size <= keep:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    body = b"".join(chunks)
    if over or size > limit:
        return body[:ERROR_BODY_LIMIT], False
    return body, True


async def _respond(
    send: Send,
    status: int,
    content: str,
    mimetype: str,
    request_id: str | None = None,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = content.encode()
    headers = [(b"content-type", mimetype.encode()), (b"content-length", str(len(data)).encode())]
    headers.extend(extra or ())
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
        traffic = TrafficLog.from_settings(settings, folder=os.environ.get(JOURNAL_DIR_ENV))
    app = ModelApp(
        model,
        traffic,
        MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get(),
        serving_protocol(os.environ),
        os.environ.get("MLOPS_MODEL_NAME", "model"),
        os.environ.get("MLOPS_MODEL_VERSION", ""),
        batch,
        max_body_bytes(os.environ),
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
    traffic = TrafficSettings.from_env(os.environ)  # a wrong setting stops the container at once
    protocol, batch = serving_protocol(os.environ), serving_batch(os.environ)
    max_body_bytes(os.environ)
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

    # A fresh folder for this server's workers' journals and counters (see TrafficLog).
    shared: str | None = None
    if traffic.enabled:
        try:
            shared = os.environ[JOURNAL_DIR_ENV] = tempfile.mkdtemp(prefix=JOURNAL_PREFIX)
        except OSError as error:
            raise SystemExit(
                f"serving: the traffic log needs a folder on local disk for its journal ({error});"
                " set TMPDIR to a writable one, or MLOPS_TRAFFIC_LOG=off"
            ) from None
    # A single-process uvicorn raises the SIGTERM that stopped it again once it has stopped,
    # with the handler it found put back: this one, so that the process ends by SystemExit, the
    # journal's folder is seen to, and then by the signal, as uvicorn means it to.
    terminated: list[int] = []

    def terminate(number: int, frame: object) -> None:
        terminated.append(number)
        raise SystemExit(128 + number)

    signal.signal(signal.SIGTERM, terminate)
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
            ship_what_workers_left(traffic, shared)
            shutil.rmtree(shared, ignore_errors=True)
        if terminated:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)


def ship_what_workers_left(settings: TrafficSettings, folder: str) -> None:
    """Once the workers have stopped: ship what any of them left in the journal ``folder`` (one
    killed and not replaced, or whose store failed when it stopped), and say what could not be."""
    last = TrafficLog.from_settings(
        settings, folder=folder, worker=f"{socket.gethostname()}-{os.getpid()}-server"
    )
    left = last.adopt()
    if left:
        print(
            f"serving: traffic log: {left} requests could not be written to the store",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
