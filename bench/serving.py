"""Latency and throughput of the served image: single-row /invocations requests.

Runs the image (podman, or docker) with its port on loopback, waits for /ping, warms up,
then sends single-row requests at concurrency 1 and 16, each client on its own keep-alive
connection, and prints p50/p99 latency and requests per second for each.

    .venv/bin/python bench/serving.py                       # the image served_image recorded last
    .venv/bin/python bench/serving.py --image REF --workers 2
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.definitions import build_resources
from mlops_assets.ml.sample_data import generate_house_prices
from mlops_assets.ml.serving import SERVING_PORT, invocation_payload
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.train import model_input
from mlops_assets.resources.image_builder import ImageBuilderResource, wait_for_ping


def recorded_image(resources: dict[str, Any]) -> str:
    """The image served_image recorded last in this project's object store (pulled if needed)."""
    image = resources["image_builder"].published(  # type: ignore[attr-defined]
        resources["object_store"],
        resources["mlflow"].model_name,  # type: ignore[attr-defined]
    )
    if image is None:
        raise SystemExit("no served image recorded yet: materialise served_image, or pass --image")
    if image.archive_key:
        raise SystemExit("the recorded image is an OCI archive: load it and pass --image")
    return f"{image.repository}@{image.digest}"


def client_run(port: int, body: bytes, requests: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    headers = {"Content-Type": "application/json"}
    for _ in range(requests):
        started = time.perf_counter()
        connection.request("POST", "/invocations", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"/invocations answered {response.status}")
        latencies.append(time.perf_counter() - started)
    connection.close()
    return latencies


def measure(port: int, body: bytes, concurrency: int, requests_per_client: int) -> dict[str, float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        runs = list(
            pool.map(lambda _: client_run(port, body, requests_per_client), range(concurrency))
        )
    elapsed = time.perf_counter() - started
    latencies = sorted(latency for run in runs for latency in run)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "requests_per_second": len(latencies) / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=None, help="image reference; default: the recorded one")
    parser.add_argument("--workers", type=int, default=2, help="MLFLOW_MODELS_WORKERS")
    parser.add_argument("--requests", type=int, default=400, help="requests at concurrency 1")
    args = parser.parse_args()

    resources = build_resources()
    builder: ImageBuilderResource = resources["image_builder"]  # type: ignore[assignment]
    runtime = builder.runtime()
    image = args.image or recorded_image(resources)
    if "@" in image:
        builder.pull(runtime, image)
    container = builder.run(
        runtime, image, SERVING_PORT, env={"MLFLOW_MODELS_WORKERS": str(args.workers)}
    )
    try:
        ready = wait_for_ping(container, 180)
        row = model_input(generate_house_prices(1, seed=7), HOUSE_PRICES)
        body = json.dumps(invocation_payload(row)).encode()
        client_run(container.host_port, body, 50)  # warm-up
        results = [
            measure(container.host_port, body, 1, args.requests),
            measure(container.host_port, body, 16, max(25, args.requests // 8)),
        ]
    finally:
        container.remove()
    print(f"image {image} ({runtime}, {args.workers} workers), ready in {ready:.1f}s")
    print(f"{'concurrency':>11} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    for r in results:
        print(
            f"{r['concurrency']:>11.0f} {r['requests']:>8.0f} {r['p50_ms']:>8.1f} "
            f"{r['p99_ms']:>8.1f} {r['requests_per_second']:>8.1f}"
        )


if __name__ == "__main__":
    main()
