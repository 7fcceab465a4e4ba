"""The traffic log: every request answered, journaled on local disk before its answer is sent,
and shipped to the object store (a folder or S3) by a background thread (:class:`TrafficLog`).
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import mmap
import os
import socket
import struct
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from .logs import Throttle, log
from .record import Exchange, dropped_line, dumps, exchange_lines, iso, traffic_key
from .settings import BUFFER_BYTES, TrafficSettings

# Set by main() for its workers: the folder of their traffic log's journals and counters.
JOURNAL_DIR_ENV = "MLOPS_TRAFFIC_JOURNAL_DIR"
JOURNAL_PREFIX = "mlops-traffic-"


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
        day = iso(exchange.received)[:10]
        counts = self._counts
        entry = b""
        if self._room(0):  # a full journal wastes no time on the lines it drops
            lines = exchange_lines(exchange, self.model_name, self.model_version)
            entry = "".join(f"{dumps(line)}\n" for line in lines).encode() + _REQUEST_END
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
            dropped = dropped_line(day, stamp, drops, worker, self.model_name, self.model_version)
            lines += f"{dumps(dropped)}\n".encode()
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

    def metric_values(self) -> list[tuple[str, str, str, int]]:
        """The server's :data:`COUNTERS` (name, kind, help text) and their values: all its
        workers together (see :meth:`server_counters`)."""
        return [
            (name, kind, text, value)
            for (name, kind, text), value in zip(self.COUNTERS, self.server_counters(), strict=True)
        ]


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
