"""How big the server is: workers and native threads for the CPUs its container may use."""

from __future__ import annotations

import math
from collections.abc import MutableMapping

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
