"""The served image against MLflow's own server: same model, same load generator, one run.

Starts the image (podman or docker; the one served_image recorded last, pulled from its
registry or its OCI archive loaded from the object store; or --image) with its port on
loopback, under --cpus (its entry point starts one scoring worker per CPU of that limit),
and `mlflow models serve` of the same model version as MLflow starts it by default (one
worker, the local environment). Both must answer the same rows identically. The image runs
three times: as it starts by default, with its traffic log on (into a folder mounted as its
store) and MLOPS_SERVING_BATCH=auto (each worker batches when its model answers each row alone:
the default tree model does), whose answers to single-row requests sent 16 at a time must be
MLflow's exactly; with the log off (MLOPS_TRAFFIC_LOG=off); and with the log on and each
request predicted alone (MLOPS_SERVING_BATCH=1, as MLflow's server does; its own store). Then
wrk (Debian package `wrk`) sends single-row POST /invocations on keep-alive connections at
concurrency 1 and 16, for --seconds each, and the table gives requests per second and the
p50 / p99 latency of each server, their throughput ratios, the traffic log's and batching's
effect, and how many of the requests they answered the two logging images wrote to their
stores.

    .venv/bin/python bench/serving.py [--image REF] [--cpus 2] [--seconds 15]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.definitions import build_resources, model_scopes
from mlops_assets.ml.estimator import model_input
from mlops_assets.ml.sample_data import generate_house_prices
from mlops_assets.ml.serving import (
    SERVING_PORT,
    SERVING_UID,
    TRAFFIC_STORE_IN_IMAGE,
    announced_batches,
    compare_answers,
    invocation_payload,
    parse_answers,
)
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.traffic import read_traffic
from mlops_assets.resources.image_builder import ImageBuilderResource, wait_for_ping
from mlops_assets.stack.process import ServerProcess, free_port, wait_until

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BENCH_BODY")):read("*a")
done = function(summary, latency, requests)
  io.write(string.format("RESULT %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read
      + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def house_mlflow(resources: dict[str, Any]) -> Any:
    """The deployment's MLflow resource as the house-price model (the one served here) sees it."""
    return model_scopes()["house_prices"].view("mlflow", resources["mlflow"])


def recorded_image(builder: ImageBuilderResource, resources: dict[str, Any], runtime: str) -> str:
    """The image served_image recorded last, in ``runtime``'s store: pulled by digest from
    its registry, or its OCI archive loaded from the object store (no registry), as the
    smoke test fetches it."""
    store = resources["object_store"]
    image = builder.published(store, house_mlflow(resources).registered_name)
    if image is None:
        raise SystemExit("no served image recorded yet: run the serve_champion job first")
    return builder.fetch_for_test(runtime, image, store)


def image_labels(runtime: str, image: str) -> dict[str, str]:
    labels = subprocess.run(
        [runtime, "image", "inspect", "--format", "{{json .Labels}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(labels))


def worker_batches(container: Any) -> list[int]:
    """How many requests each of the container's workers said it predicts together, once all
    of them have started."""
    announced = re.search(r"serving: (\d+) worker", container.log_tail(200))
    workers = int(announced.group(1)) if announced else 1
    wait_until(
        lambda: len(announced_batches(container.log_tail(200))) >= workers,
        "every worker's batching line",
        120,
        None,
    )
    return [batch for batch, _ in announced_batches(container.log_tail(200))]


def post(url: str, body: bytes) -> str:
    request = urllib.request.Request(
        f"{url}/invocations", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(response.read().decode())


def wrk(
    url: str, body_file: Path, script: Path, connections: int, seconds: int
) -> dict[str, float]:
    threads = min(connections, 2)
    output = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            f"{url}/invocations",
        ],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, BENCH_BODY=str(body_file)),
    ).stdout
    found = re.search(r"^RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)$", output, re.MULTILINE)
    if not found:
        raise SystemExit(f"wrk printed no result:\n{output}")
    requests, micros, errors, p50, p99, worst = (int(g) for g in found.groups())
    return {
        "requests": requests,
        "errors": errors,
        "rps": requests / (micros / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "max_ms": worst / 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=None, help="image reference; default: the recorded one")
    parser.add_argument("--cpus", default="2", help="the container's CPU limit (podman --cpus)")
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration per measurement")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")

    resources = build_resources()
    builder: ImageBuilderResource = resources["image_builder"]  # type: ignore[assignment]
    mlflow_resource: Any = house_mlflow(resources)
    runtime = builder.runtime()
    image = args.image or recorded_image(builder, resources, runtime)
    labels = image_labels(runtime, image)
    version = labels["org.mlops-assets.model-version"]
    if mlflow_resource.model_version(version).run_id != labels["org.mlops-assets.mlflow-run-id"]:
        raise SystemExit(
            f"{image} serves another registry's model (its run is "
            f"{labels['org.mlops-assets.mlflow-run-id']}): point MLOPS_HOME or "
            "MLFLOW_TRACKING_URI at the registry it was built from"
        )
    model_uri = f"models:/{mlflow_resource.registered_name}/{version}"

    rows = model_input(generate_house_prices(50, seed=7), HOUSE_PRICES)
    single = json.dumps(invocation_payload(rows.head(1))).encode()
    many = json.dumps(invocation_payload(rows)).encode()
    port = free_port()
    mlflow_url = f"http://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    logs = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    server = ServerProcess(
        "mlflow models serve",
        [
            *(str(bin_dir / "mlflow"), "models", "serve", "-m", model_uri),
            *("--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)),
        ],
        log=logs / "mlflow-serve.log",
        env={
            "MLFLOW_TRACKING_URI": mlflow_resource.tracking_uri,
            "MLFLOW_REGISTRY_URI": mlflow_resource.registry_uri or mlflow_resource.tracking_uri,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # it runs `uvicorn`
        },
    )

    def answers_ping() -> bool:
        with urllib.request.urlopen(f"{mlflow_url}/ping", timeout=2) as response:
            return response.status == 200

    stores = {"image": logs / "store", "image, alone": logs / "store-alone"}
    for folder in stores.values():
        folder.mkdir()
        os.chown(folder, SERVING_UID, SERVING_UID)  # the image's server user writes the log

    def limited(store: Path | None) -> ImageBuilderResource:
        """Runs containers under --cpus, with ``store`` mounted as the traffic log's store."""
        mount = f" --volume {store}:{TRAFFIC_STORE_IN_IMAGE}" if store else ""
        return ImageBuilderResource(
            container_run_args=f"{builder.container_run_args} --cpus {args.cpus}{mount}"
        )

    server.start()
    container = silent = alone = None
    try:
        started = time.monotonic()
        wait_until(answers_ping, f"mlflow models serve on {mlflow_url}", 180, server.log)
        mlflow_ready = time.monotonic() - started
        container = limited(stores["image"]).run(runtime, image, SERVING_PORT, env={})
        image_ready = wait_for_ping(container, 180)
        silent = limited(None).run(runtime, image, SERVING_PORT, env={"MLOPS_TRAFFIC_LOG": "off"})
        wait_for_ping(silent, 180)
        alone = limited(stores["image, alone"]).run(
            runtime, image, SERVING_PORT, env={"MLOPS_SERVING_BATCH": "1"}
        )
        wait_for_ping(alone, 180)
        batching = {  # what each image's workers said they predict together
            name: worker_batches(running)
            for name, running in (("image", container), ("image, alone", alone))
        }
        expected = parse_answers(post(mlflow_url, many))
        comparison = compare_answers(parse_answers(post(container.url, many)), expected)
        if not comparison.matches:
            raise SystemExit(f"the two servers answer differently: {comparison.describe()}")
        bodies = [json.dumps(invocation_payload(rows.iloc[[i]])).encode() for i in range(len(rows))]
        for _ in range(3):  # rows sent 16 at a time, so that they are predicted together
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(lambda body: post(container.url, body), bodies))
            together = compare_answers(  # exactly: a tree model's rows are scored alone
                pd.concat([parse_answers(answer) for answer in answers], ignore_index=True),
                expected,
                tolerance=0.0,
            )
            if not together.matches:
                raise SystemExit(f"batched answers differ from mlflow's: {together.describe()}")
        with tempfile.TemporaryDirectory() as tmp:
            body_file, script = Path(tmp) / "body.json", Path(tmp) / "post.lua"
            body_file.write_bytes(single)
            script.write_text(WRK_SCRIPT)
            servers = {
                "image": container.url,
                "image, log off": silent.url,
                "image, alone": alone.url,
                "mlflow serve": mlflow_url,
            }
            sent = {"image": 1 + 3 * len(bodies), "image, alone": 0}  # the answers compared
            for name, url in servers.items():  # warm-up
                warm = int(wrk(url, body_file, script, 4, 3)["requests"])
                if name in sent:
                    sent[name] += warm
            results = {
                (name, connections): wrk(url, body_file, script, connections, args.seconds)
                for connections in (1, 16)
                for name, url in servers.items()
            }
        for (name, _), result in results.items():
            if name in sent:
                sent[name] += int(result["requests"])
        container.stop()
        alone.stop()
        logged = {name: logged_requests(folder) for name, folder in stores.items()}
    finally:
        for running in (container, silent, alone):
            if running is not None:
                running.remove()
        server.stop()
        shutil.rmtree(logs, ignore_errors=True)

    print(
        f"model {model_uri}; image {image} ({runtime}, --cpus {args.cpus}, ready in "
        f"{image_ready:.1f} s); mlflow models serve (1 worker, ready in {mlflow_ready:.1f} s); "
        f"{os.cpu_count()} cores; wrk {args.seconds} s per line; {comparison.describe()}; "
        f"single rows sent 16 at a time: {together.describe()}; requests each worker predicts "
        f"together: {batching}"
    )
    print(
        f"{'server':>14} {'conns':>5} {'requests':>8} {'errors':>6} {'req/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    for (name, connections), r in results.items():
        print(
            f"{name:>14} {connections:>5} {r['requests']:>8.0f} {r['errors']:>6.0f} "
            f"{r['rps']:>8.1f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['max_ms']:>7.1f}"
        )
    for connections in (1, 16):
        ratio = (
            results[("image", connections)]["rps"] / results[("mlflow serve", connections)]["rps"]
        )
        print(f"throughput image / mlflow serve at {connections} connection(s): {ratio:.2f}x")
    for connections in (1, 16):
        batched, each = results[("image", connections)], results[("image, alone", connections)]
        print(
            f"the image as it starts at {connections} connection(s): p99 "
            f"{batched['p99_ms'] / each['p99_ms']:.2f}x, throughput "
            f"{batched['rps'] / each['rps']:.2f}x of the image predicting each request alone"
        )
    for connections in (1, 16):
        on, off = results[("image", connections)], results[("image, log off", connections)]
        print(
            f"traffic log at {connections} connection(s): p99 {on['p99_ms'] / off['p99_ms']:.2f}x, "
            f"throughput {on['rps'] / off['rps']:.2f}x of the image with the log off"
        )
    # wrk does not count the requests in flight when it stops, which the server still answers.
    for name, written in logged.items():
        print(
            f"traffic log of {name}: {written['requests']} answered requests written to the "
            f"store ({sent[name]} counted completed), each once: {written['unique']}; "
            f"{written['dropped']} dropped (buffer full)"
        )


def logged_requests(store: Path) -> dict[str, Any]:
    """What the image's traffic log wrote below ``store``, read as served_traffic reads it:
    answered rows (one per request here), whether each is there once, and how many requests
    it dropped."""
    files = [(f.name, f.read_bytes()) for f in store.glob("traffic/*/date=*/*.jsonl")]
    day = read_traffic(files, HOUSE_PRICES)
    unique = not day.frame.duplicated(["request_id", "row"]).any()
    return {"requests": len(day.frame), "unique": unique, "dropped": day.dropped}


if __name__ == "__main__":
    main()
