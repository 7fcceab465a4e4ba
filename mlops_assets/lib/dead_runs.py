"""Runs whose processes are gone: found, and marked failed, so they hold nothing forever.

A run killed by SIGKILL (the OOM killer, a lost node, ``kill -9``) writes no failure event: it
stays STARTED, its concurrency slots stay claimed and its MLflow run stays RUNNING. On a local
instance (``DefaultRunLauncher``, ``mlops-demo``, ``dg launch``) nothing else notices: Dagster's
run monitoring asks the run launcher whether the run's worker is alive, and the default
launcher cannot say. :class:`LocalRunLauncher` can: every Dagster event records the pid of the
process that wrote it, so a run is dead when every process that wrote its events is gone (or
its pid now belongs to a process that started later). With ``run_monitoring`` enabled, the
daemon then marks the run failed (and frees its slots after
``free_slots_after_run_end_seconds``); ``mlops-demo`` does the same for the runs of its
instance when it starts, since no daemon may be running.

This judges pids of this machine, so it is for instances whose runs all run here: the local
SQLite instance and the stack's PostgreSQL one. On Kubernetes, K8sRunLauncher asks the
cluster instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    DefaultRunLauncher,
    RunsFilter,
)
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus  # no public home

from mlops_assets.resources.leases import process_start_ticks


def _boot_time() -> float | None:
    try:
        with open("/proc/stat") as handle:
            for line in handle:
                if line.startswith("btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def pid_alive_since(pid: int, seen_at: float) -> bool:
    """Whether process ``pid`` is running and is the one that was seen at ``seen_at`` (it
    started no later than that; a pid reused by a newer process does not count)."""
    ticks = process_start_ticks(pid)
    if ticks is None:
        return False
    boot = _boot_time()
    if boot is None:
        return True  # no way to tell a reused pid; alive is the safe answer
    started = boot + ticks / os.sysconf("SC_CLK_TCK")
    return started <= seen_at + 1.0


def run_processes(instance: DagsterInstance, run_id: str) -> dict[int, float]:
    """The pids that wrote ``run_id``'s events from its RUN_START on (its run worker and step
    processes; what launched it wrote before), each with the time it first wrote one."""
    first_seen: dict[int, float] = {}
    started = False
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        started = started or event.event_type == DagsterEventType.RUN_START
        if started and event.pid is not None and event.pid not in first_seen:
            first_seen[event.pid] = entry.timestamp
    return first_seen


def why_dead(instance: DagsterInstance, run: DagsterRun) -> str | None:
    """Why a STARTED run is dead (every process that wrote its events is gone), or None when
    it may be alive or cannot be judged."""
    if run.status != DagsterRunStatus.STARTED:
        return None
    pids = run_processes(instance, run.run_id)
    if not pids:
        return None
    if any(pid_alive_since(pid, seen) for pid, seen in pids.items()):
        return None
    shown = ", ".join(str(pid) for pid in sorted(pids))
    return f"every process that ran it is gone (pid {shown}): killed, or its machine lost"


def fail_dead_run(instance: DagsterInstance, run_id: str, reason: str) -> bool:
    """Mark a run that is not finished as failed, with ``reason``, and free the concurrency
    slots it holds. Returns whether it changed anything."""
    run = instance.get_run_by_id(run_id)
    if run is None or run.is_finished:
        return False
    instance.report_run_failed(run, f"Marked failed: {reason}")
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return True


def sweep_dead_runs(
    instance: DagsterInstance, on_dead: Callable[[str, str], None] | None = None
) -> list[tuple[str, str]]:
    """Mark every dead STARTED run of ``instance`` failed; ``on_dead(run_id, reason)`` is
    called for each (to fail its MLflow runs too). Returns (run id, reason) pairs."""
    found = []
    for run in instance.get_runs(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        reason = why_dead(instance, run)
        if reason is not None and fail_dead_run(instance, run.run_id, reason):
            found.append((run.run_id, reason))
            if on_dead is not None:
                on_dead(run.run_id, reason)
    return found


class LocalRunLauncher(DefaultRunLauncher):
    """Dagster's default launcher, plus the health check run monitoring needs: a run's worker
    is FAILED when every process that wrote its events is gone. Configure it in
    ``dagster.yaml`` (``run_launcher: {module: mlops_assets.lib.dead_runs, class:
    LocalRunLauncher}``) with ``run_monitoring: {enabled: true}``; ``mlops-demo`` and
    ``mlops-stack`` write both."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        reason = why_dead(self._instance, run)
        if reason is not None:
            return CheckRunHealthResult(WorkerStatus.FAILED, reason)
        return CheckRunHealthResult(WorkerStatus.RUNNING)
