"""One step at a time changes a model's registry and aliases, or a dataset's tags and refs:
the step holds the lease on it (resources/leases.py) for as long as it changes them.

The lease replaces a Dagster concurrency pool, which could not do this job: on SQLite a slot
claim is a read then a write (two steps that ask together both get it), a killed run keeps
its slot forever, and runs that do not go through the run queue (``mlops-demo``, ``dg
launch``) would pass a queue limit by. A lease lives in the object store every run shares,
is taken by compare-and-swap, and is freed by its holder's death.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from dagster import AssetExecutionContext, Failure, OpExecutionContext

from mlops_assets.lib.dead_runs import fail_dead_run
from mlops_assets.resources.leases import WAIT_SECONDS, Lease, LeaseRecord, LeaseTimeout
from mlops_assets.resources.object_store import ObjectStoreResource

# How often a waiting step says who it waits for.
WAIT_NOTE_SECONDS = 30.0


def model_lease(model_name: str) -> str:
    return f"models/{model_name}"


def dataset_lease(dataset_name: str) -> str:
    return f"datasets/{dataset_name}"


@contextmanager
def exclusive(
    context: AssetExecutionContext | OpExecutionContext,
    object_store: ObjectStoreResource,
    name: str,
    on_dead_run: Callable[[str], object] | None = None,
    wait_seconds: float = WAIT_SECONDS,
) -> Iterator[Lease]:
    """Hold the lease ``name`` for the block: wait (saying for whom) while a live holder has
    it; take it from a dead or expired one. A holder whose process is known to be gone left
    its run STARTED: that run is marked failed, and ``on_dead_run(run_id)`` is called (to mark
    its MLflow runs failed too)."""
    op_context = (
        context.op_execution_context if isinstance(context, AssetExecutionContext) else context
    )
    run_id, step = context.run.run_id, op_context.op_handle.name
    holder = f"run {run_id} ({context.run.job_name}), step {step}"
    noted = [0.0]

    def note_wait(record: LeaseRecord, waited: float) -> None:
        if waited - noted[0] >= WAIT_NOTE_SECONDS or noted[0] == 0.0:
            since = datetime.fromtimestamp(record.acquired_at, UTC).isoformat(timespec="seconds")
            context.log.info(
                f"waiting for the lease '{name}': held by {record.holder} since {since} "
                f"({waited:.0f} s so far)"
            )
            noted[0] = max(waited, 1e-9)

    lease = Lease(object_store, name, holder, run_id, wait_seconds=wait_seconds, on_wait=note_wait)
    started = time.monotonic()
    try:
        takeovers = lease.acquire()
    except LeaseTimeout as exc:
        raise Failure(allow_retries=False, description=str(exc)) from exc
    waited = time.monotonic() - started
    if waited >= 1.0:
        context.log.info(f"holding the lease '{name}' after waiting {waited:.1f} s")
    for takeover in takeovers:
        context.log.warning(takeover.describe())
        dead_run = takeover.previous.run_id
        if takeover.holder_dead and dead_run and dead_run != run_id:
            if fail_dead_run(context.instance, dead_run, f"it died holding '{name}'"):
                context.log.warning(f"run {dead_run} died holding '{name}': marked failed")
            if on_dead_run is not None:
                on_dead_run(dead_run)
    try:
        yield lease
    finally:
        lease.release()
