"""Leases (resources/leases.py) on the object store's compare-and-swap: a local folder and a
real SeaweedFS bucket; holders in real processes, killed with real signals."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.resources.leases import (
    Lease,
    LeaseLost,
    LeaseRecord,
    LeaseTimeout,
    ProcessRef,
)
from mlops_assets.resources.object_store import ObjectStoreResource


def local_store(tmp_path: Path) -> ObjectStoreResource:
    return ObjectStoreResource(root=str(tmp_path / "store"))


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStoreResource:
    if request.param == "local":
        return local_store(tmp_path)
    seaweed = request.getfixturevalue("seaweed")
    monkeypatch = request.getfixturevalue("monkeypatch")
    from mlops_assets.resources.object_store import S3Config

    for name, value in seaweed.env().items():  # boto3 reads the credentials from here
        monkeypatch.setenv(name, value)
    return ObjectStoreResource(
        root=f"s3://{seaweed.bucket}/leases-{request.node.name[-20:]}".replace("[", "-").rstrip(
            "]"
        ),
        s3=S3Config(endpoint_url=seaweed.endpoint_url),
    )


def test_put_if_writes_only_over_the_version_it_was_given(store: ObjectStoreResource) -> None:
    first = store.put_if("thing.json", b"one", None)
    assert first is not None
    assert store.put_if("thing.json", b"two", None) is None  # it exists now
    second = store.put_if("thing.json", b"three", first)
    assert second is not None
    assert store.put_if("thing.json", b"four", first) is None  # first is stale
    assert store.read_versioned("thing.json") == (b"three", second)
    assert store.read_versioned("missing.json") is None


def _hold_in_turn(root: str, name: str, log: str, rounds: int) -> None:
    """A process that takes the lease ``rounds`` times and records when it held it."""
    store = ObjectStoreResource(root=root)
    for _ in range(rounds):
        with Lease(store, name, f"pid {os.getpid()}", poll_seconds=0.01):
            start = time.time()
            time.sleep(0.02)
            end = time.time()
        with open(log, "a") as handle:
            handle.write(f"{start} {end}\n")


def test_processes_never_hold_the_same_lease_at_once(tmp_path: Path) -> None:
    root, log = str(tmp_path / "store"), str(tmp_path / "held.txt")
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_hold_in_turn, args=(root, "models/m", log, 8)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    spans = sorted(tuple(map(float, line.split())) for line in Path(log).read_text().splitlines())
    assert len(spans) == 32
    overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert overlaps == []


def test_threads_on_s3_never_hold_the_same_lease_at_once(store: ObjectStoreResource) -> None:
    spans: list[tuple[float, float]] = []
    start = threading.Barrier(4)

    def hold() -> None:
        start.wait()
        for _ in range(4):
            with Lease(store, "models/m", threading.current_thread().name, poll_seconds=0.01):
                began = time.time()
                time.sleep(0.02)
                spans.append((began, time.time()))

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    spans.sort()
    assert len(spans) == 16
    assert [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]] == []


def _hold_forever(root: str, ready: Any) -> None:
    store = ObjectStoreResource(root=root)
    lease = Lease(store, "models/m", "the killed holder", run_id="dead-run")
    lease.acquire()
    ready.set()
    time.sleep(600)


def test_a_holder_killed_by_sigkill_frees_the_lease_at_once(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold_forever, args=(root, ready))
    holder.start()
    assert ready.wait(60)
    os.kill(holder.pid, signal.SIGKILL)  # type: ignore[arg-type]
    holder.join()

    started = time.monotonic()
    lease = Lease(local_store(tmp_path), "models/m", "the next holder", wait_seconds=5)
    takeovers = lease.acquire()
    lease.release()

    assert time.monotonic() - started < 2  # not its 60 s expiry
    assert len(takeovers) == 1
    assert takeovers[0].holder_dead
    assert takeovers[0].previous.run_id == "dead-run"
    assert f"pid {holder.pid}" in takeovers[0].why
    assert "is gone" in takeovers[0].why


def _record(store: ObjectStoreResource, **changes: Any) -> None:
    record = LeaseRecord(
        name="models/m",
        holder="run elsewhere (mlops_lifecycle), step registered_model",
        run_id="elsewhere",
        process=ProcessRef("another-host", "another-boot", 4242, 1),
        nonce="n",
        acquired_at=time.time() - 30,
        expires_at=time.time() + 60,
    )
    data = json.dumps({**record.__dict__, "process": record.process.__dict__, **changes})
    store.put_bytes("leases/models/m.json", data.encode())


def test_a_live_holder_on_another_machine_is_waited_for_then_named(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    _record(store)
    waits: list[float] = []
    lease = Lease(store, "models/m", "me", wait_seconds=1.0, poll_seconds=0.1,
                  on_wait=lambda record, waited: waits.append(waited))  # fmt: skip
    with pytest.raises(LeaseTimeout) as raised:
        lease.acquire()
    assert "still held by run elsewhere (mlops_lifecycle), step registered_model" in str(
        raised.value
    )
    assert "nothing was changed" in str(raised.value)
    assert len(waits) >= 5


def test_an_expired_lease_on_another_machine_is_taken_but_its_run_not_called_dead(
    tmp_path: Path,
) -> None:
    store = local_store(tmp_path)
    _record(store, expires_at=time.time() - 1)
    lease = Lease(store, "models/m", "me", wait_seconds=1.0)
    takeovers = lease.acquire()
    lease.release()
    assert [t.holder_dead for t in takeovers] == [False]
    assert "expired" in takeovers[0].why


def test_a_holder_whose_lease_was_taken_stops_before_changing_anything(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    lease = Lease(store, "models/m", "me", ttl_seconds=60)
    lease.acquire()
    lease.ensure_held()
    _record(store)  # another holder took it (as after this one stalled past the expiry)
    lease.renew()
    with pytest.raises(LeaseLost):
        lease.ensure_held()
    lease.release()
    assert json.loads(store.get_bytes("leases/models/m.json"))["run_id"] == "elsewhere"


def test_a_stalled_holder_knows_its_lease_may_be_gone(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    lease = Lease(store, "models/m", "me", ttl_seconds=0.4)
    lease.acquire()
    lease._stop.set()  # the heartbeat stops, as in a process stopped with SIGSTOP
    time.sleep(0.5)
    with pytest.raises(LeaseLost, match="not renewed"):
        lease.ensure_held()
    lease.release()


def test_the_heartbeat_keeps_a_long_holder_s_lease(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    with Lease(store, "models/m", "me", ttl_seconds=0.4) as lease:
        time.sleep(1.2)  # three expiries
        lease.ensure_held()
        other = Lease(store, "models/m", "other", wait_seconds=0.2, poll_seconds=0.05)
        with pytest.raises(LeaseTimeout):
            other.acquire()
    assert json.loads(store.get_bytes("leases/models/m.json"))["released"] is True
