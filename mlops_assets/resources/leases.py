"""Leases: one holder at a time of a named thing (a model's registry and aliases, a dataset's
tags and refs), kept in the object store beside the thing itself, and surviving crashes.

A lease is a small JSON record at ``leases/<name>.json``, taken and renewed by
compare-and-swap (:meth:`ObjectStoreResource.put_if`: a conditional PUT on S3, a locked
read-compare-write in a local folder), so two processes on any machines that share the store
can never both hold it. The holder renews it from a background thread; a holder that stops
renewing (a killed process, a lost node) loses it when it expires, and a holder whose process
is gone from this very machine loses it at once. Whoever takes a lease that was not released
learns from whom (:class:`Takeover`), so it can mark that run failed.

A holder checks :meth:`Lease.ensure_held` right before each change it makes: a holder that was
stalled past the expiry (and so may have been taken over) stops instead of writing.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

LEASE_PREFIX = "leases"
TTL_SECONDS = 60.0
# How long a step waits for a lease held by a live holder: a registration or a publication
# takes seconds; an hour means something is wrong, and saying so beats waiting forever.
WAIT_SECONDS = 3600.0


class VersionedStore(Protocol):
    def read_versioned(self, key: str) -> tuple[bytes, str] | None: ...

    def put_if(self, key: str, data: bytes, token: str | None) -> str | None: ...


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (``/proc/<pid>/stat``'s 22nd
    field); None when there is no such process (or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces; fields follow it.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True)
class ProcessRef:
    """A process as another process of any machine can recognise it: the machine (host name
    and boot), its pid and when it started (so a pid reused later is not taken for it)."""

    host: str
    boot_id: str
    pid: int
    started: int

    @classmethod
    def current(cls) -> ProcessRef:
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), pid, process_start_ticks(pid) or 0)

    def alive(self) -> bool | None:
        """True or False on this machine (same host and boot); None on another machine."""
        here = ProcessRef.current()
        if (self.host, self.boot_id) != (here.host, here.boot_id) or not self.boot_id:
            return None
        started = process_start_ticks(self.pid)
        return started is not None and (not self.started or started == self.started)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


@dataclass(frozen=True)
class LeaseRecord:
    name: str
    holder: str  # as a person reads it: which run and step
    run_id: str
    process: ProcessRef
    nonce: str  # makes every write unique, so compare-and-swap can tell writers apart
    acquired_at: float
    expires_at: float
    released: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LeaseRecord | None:
        """The record, or None for bytes that are not one (treated as a free lease)."""
        try:
            document: dict[str, Any] = json.loads(data)
            return cls(**{**document, "process": ProcessRef(**document["process"])})
        except (ValueError, TypeError, KeyError):
            return None


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Takeover:
    """A lease taken from a holder that did not release it, and why that was allowed."""

    previous: LeaseRecord
    why: str
    holder_dead: bool  # its process is known to be gone (not merely silent)

    def describe(self) -> str:
        return f"took the lease '{self.previous.name}' from {self.previous.holder}: {self.why}"


class LeaseLost(RuntimeError):
    """The lease expired or was taken over while its holder still worked under it."""


class LeaseTimeout(RuntimeError):
    """A live holder kept the lease for longer than the waiter would wait."""


class Lease:
    """``with Lease(store, name, holder, run_id) as lease:`` holds ``leases/<name>.json``
    until the block ends; :attr:`takeovers` says whose unreleased lease it took."""

    def __init__(
        self,
        store: VersionedStore,
        name: str,
        holder: str,
        run_id: str = "",
        ttl_seconds: float = TTL_SECONDS,
        wait_seconds: float = WAIT_SECONDS,
        poll_seconds: float = 0.5,
        on_wait: Callable[[LeaseRecord, float], None] | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.key = f"{LEASE_PREFIX}/{name}.json"
        self.holder = holder
        self.run_id = run_id
        self.ttl = ttl_seconds
        self.wait_seconds = wait_seconds
        self.poll_seconds = poll_seconds
        self.on_wait = on_wait
        self.takeovers: list[Takeover] = []
        self._process = ProcessRef.current()
        self._token: str | None = None
        self._renewed = 0.0  # monotonic time of the last successful write
        self._acquired_at = 0.0
        self._lost = False
        self._lock = threading.Lock()  # the token, between the heartbeat and release
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _record(self, released: bool = False) -> LeaseRecord:
        now = time.time()
        return LeaseRecord(
            name=self.name,
            holder=self.holder,
            run_id=self.run_id,
            process=self._process,
            nonce=secrets.token_hex(8),
            acquired_at=self._acquired_at or now,
            expires_at=now + self.ttl,
            released=released,
        )

    @staticmethod
    def free_because(record: LeaseRecord | None, now: float) -> tuple[str, bool] | None:
        """Why the lease ``record`` may be taken (and whether its holder is known dead), or
        None while its holder holds it."""
        if record is None:
            return "its record is unreadable", False
        if record.released:
            return "released", False
        alive = record.process.alive()
        if alive is False:
            return f"its process ({record.process.describe()}) is gone", True
        if record.expires_at < now:
            return f"it expired at {_when(record.expires_at)} without being renewed", False
        return None

    def acquire(self) -> list[Takeover]:
        """Take the lease, waiting while a live holder has it; raises LeaseTimeout after
        ``wait_seconds``."""
        started = time.monotonic()
        while True:
            current = self.store.read_versioned(self.key)
            self._acquired_at = time.time()
            mine = self._record()
            if current is None:
                token = self.store.put_if(self.key, mine.to_json(), None)
                found = None
            else:
                found = LeaseRecord.from_json(current[0])
                free = self.free_because(found, time.time())
                token = None
                if free is not None:
                    token = self.store.put_if(self.key, mine.to_json(), current[1])
                    if token is not None and found is not None and not found.released:
                        self.takeovers.append(Takeover(found, free[0], free[1]))
            if token is not None:
                self._token, self._renewed = token, time.monotonic()
                self._start_heartbeat()
                return self.takeovers
            waited = time.monotonic() - started
            if found is not None and self.on_wait is not None:
                self.on_wait(found, waited)
            if waited >= self.wait_seconds:
                holder = f"{found.holder} since {_when(found.acquired_at)}" if found else "another"
                raise LeaseTimeout(
                    f"the lease '{self.name}' is still held by {holder} after waiting "
                    f"{waited:.0f} s; nothing was changed"
                )
            time.sleep(self.poll_seconds)

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._heartbeat = threading.Thread(
            target=self._renew_until_stopped, name=f"lease-{self.name}", daemon=True
        )
        self._heartbeat.start()

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            try:
                self.renew()
            except Exception:  # the next beat tries again; ensure_held judges by the clock
                continue
            if self._lost:
                return

    def renew(self) -> None:
        with self._lock:
            if self._token is None or self._lost:
                return
            token = self.store.put_if(self.key, self._record().to_json(), self._token)
            if token is None:
                self._lost = True
            else:
                self._token, self._renewed = token, time.monotonic()

    def ensure_held(self) -> None:
        """Raise LeaseLost unless the lease is still this holder's: call it right before each
        change made under the lease."""
        silent = time.monotonic() - self._renewed
        if self._token is None or self._lost or silent >= self.ttl:
            self._lost = True
            raise LeaseLost(
                f"the lease '{self.name}' was lost (not renewed for {silent:.0f} s, the lease "
                f"lasts {self.ttl:.0f} s); stopping before changing anything more"
            )

    def release(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        with self._lock:
            if self._token is not None and not self._lost:
                # A failed release is harmless: the lease expires on its own.
                with contextlib.suppress(Exception):
                    self.store.put_if(self.key, self._record(released=True).to_json(), self._token)
            self._token = None

    def __enter__(self) -> Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
