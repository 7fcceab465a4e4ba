"""The model server as a process, as the image runs it, and how a test talks to it."""

from __future__ import annotations

import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_assets.ml.serving import SERVER_PACKAGE
from mlops_assets.stack.process import ServerProcess, free_port, wait_until

MODEL_NAME = "diabetes"
MIB = 1024 * 1024


def features() -> pd.DataFrame:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).data


async def asgi_request(
    app: Any,
    method: str,
    path: str,
    body: bytes = b"",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    on_send: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """One request to the ASGI ``app`` in this process, a JSON body with ``headers`` besides:
    the messages its answer sent, each first given to ``on_send`` (if any) as it is sent."""
    sent: list[dict[str, Any]] = []
    received = iter([{"type": "http.request", "body": body, "more_body": False}])
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "scheme": "http",
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "headers": [(b"content-type", b"application/json"), *headers],
    }

    async def receive() -> dict[str, Any]:
        return next(received)

    async def send(message: dict[str, Any]) -> None:
        if on_send is not None:
            await on_send(message)
        sent.append(message)

    await app(scope, receive, send)
    return sent


class Served:
    """The model server as a process, and how a client talks to it."""

    def __init__(self, model: Path, log_dir: Path, env: dict[str, str], folder: Path) -> None:
        self.port = free_port()
        self.process = ServerProcess(
            "model-server",
            [sys.executable, "-m", SERVER_PACKAGE],
            log_dir / "model-server.log",
            env={
                "PYTHONPATH": str(folder),  # as the image's PYTHONPATH
                "MLOPS_SERVED_MODEL_PATH": str(model),
                "MLOPS_SERVING_PORT": str(self.port),
                "UVICORN_HOST": "127.0.0.1",
                "MLOPS_MODEL_NAME": MODEL_NAME,
                "MLOPS_MODEL_VERSION": "7",
                "OMP_NUM_THREADS": "1",
                **env,
            },
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process.start()
        wait_until(self._ready, "the model server", 90, self.process.log)

    def _ready(self) -> bool:
        try:
            return self.get("/ping")[0] == 200
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as response:
            return response.status, response.read().decode()

    def post(
        self, body: bytes, request_id: str | None = None, content_type: str = "application/json"
    ) -> tuple[int, str, str]:
        """(status, body, x-request-id) of POST /invocations."""
        headers = {"Content-Type": content_type}
        if request_id:
            headers["X-Request-ID"] = request_id
        request = urllib.request.Request(
            f"{self.url}/invocations", data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = response.read().decode()
                return response.status, answer, response.headers["x-request-id"]
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), error.headers["x-request-id"]

    def request(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, str, Any]:
        """(status, body, headers) of POST ``path``."""
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=body,
            headers={"Content-Type": "application/json", **(headers or {})},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode(), response.headers
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(), error.headers

    def terminate(self, timeout: float = 60) -> None:
        """SIGTERM to the server's parent process alone; it must shut down gracefully: its
        workers' apps shut down, and it exits by itself (0, or by the signal uvicorn raises
        again once a single-process server has shut down)."""
        process = self.process.process
        assert process is not None
        os.kill(process.pid, signal.SIGTERM)
        code = process.wait(timeout=timeout)
        self.process.stop()
        assert code in (0, -signal.SIGTERM), self.log()[-3000:]
        assert "Application shutdown complete" in self.log()

    def log(self) -> str:
        return self.process.log.read_text()

    @property
    def pid(self) -> int:
        """The server's process: its one worker, when it has one (uvicorn runs it in-process)."""
        process = self.process.process
        assert process is not None
        return process.pid


def payload(frame: pd.DataFrame) -> bytes:
    return json.dumps(
        {"dataframe_split": {"columns": list(frame.columns), "data": frame.values.tolist()}}
    ).encode()


def read_lines(root: Path) -> list[dict[str, Any]]:
    """Every line of every traffic log file below ``root``, each parsed as JSON."""
    files = sorted((root / "traffic" / MODEL_NAME).glob("date=*/*.jsonl"))
    return [json.loads(line) for file in files for line in file.read_text().splitlines()]


def scrape(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed as Prometheus parses it: each sample's value by its name and labels
    (the served model's name and version left out: every sample must carry them)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, text = served.get("/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = dict(sample.labels)
            model = (labels.pop("model_name", None), labels.pop("model_version", None))
            assert model == (MODEL_NAME, "7"), sample
            samples[(sample.name, tuple(sorted(labels.items())))] = sample.value
    return samples


def served_counters(served: Served) -> dict[str, int]:
    """The traffic log's counters at /metrics: the server's (all its workers')."""
    return {
        name: int(value)
        for (name, labels), value in scrape(served).items()
        if name.startswith("mlops_traffic_") and not labels
    }
