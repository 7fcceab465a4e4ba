"""The server's process: ``python -m model_server`` in the image (``python -m
mlops_assets.model_server`` here). It sizes the server to its container, makes the folders its
workers share (the traffic log's journal; Prometheus' multiprocess values), and runs uvicorn with
one worker per CPU, each serving :func:`.app.create_app`; when they stop, it ships what they
left in the journal."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from .metrics import MULTIPROCESS_DIR_ENV
from .settings import SERVING_PORT, TrafficSettings, max_body_bytes, serving_batch, serving_protocol
from .sizing import cgroup_cpu_max, size_server
from .traffic_log import JOURNAL_DIR_ENV, JOURNAL_PREFIX, ship_what_workers_left

PACKAGE: str = (__spec__.parent if __spec__ else None) or "model_server"  # its name in the image
METRICS_PREFIX = "mlops-metrics-"


def main() -> None:
    given = (os.environ.get("MLFLOW_MODELS_WORKERS"), os.environ.get("OMP_NUM_THREADS"))
    workers = size_server(os.environ, cgroup_cpu_max(), len(os.sched_getaffinity(0)))
    if given != (os.environ["MLFLOW_MODELS_WORKERS"], os.environ["OMP_NUM_THREADS"]):
        # Start again with the sizing in the process's own environment: numpy's thread pools
        # read it once, and a look at /proc (or `podman exec env`) shows what the server got.
        os.execve(sys.executable, [sys.executable, "-m", PACKAGE, *sys.argv[1:]], os.environ)
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

    # A fresh folder for this server's workers' journals and counters (see TrafficLog), and
    # one for their Prometheus values (unless one is given).
    shared: str | None = None
    values: str | None = None
    if not os.environ.get(MULTIPROCESS_DIR_ENV):
        values = os.environ[MULTIPROCESS_DIR_ENV] = tempfile.mkdtemp(prefix=METRICS_PREFIX)
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
            f"{PACKAGE}.app:create_app",
            factory=True,
            app_dir=str(Path(__file__).parents[PACKAGE.count(".") + 1]),
            host=os.environ.get("UVICORN_HOST", "0.0.0.0"),
            port=int(os.environ.get("MLOPS_SERVING_PORT", SERVING_PORT)),
            workers=workers,
            lifespan="on",
        )
    finally:
        if shared:  # only the folder this server made
            ship_what_workers_left(traffic, shared)
            shutil.rmtree(shared, ignore_errors=True)
        if values:
            shutil.rmtree(values, ignore_errors=True)
        if terminated:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)


if __name__ == "__main__":
    main()
