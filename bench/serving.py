"""The served image against its peers: MLflow's own server, MLServer and KServe's scikit-learn
server, serving the same model under the same load generator, in one run.

Starts the image (podman or docker; the one served_image recorded last, pulled from its
registry or its OCI archive loaded from the object store; or --image) with its port on
loopback, under --cpus (its entry point starts one scoring worker per CPU of that limit);
`mlflow models serve` of the same model version as MLflow starts it by default (one worker, the
local environment); and the peers (bench/serving_peers.py, whose docstring says what each runs
and why): MLServer with its MLflow runtime, and KServe's scikit-learn server (installed from a
kserve checkout, --kserve-source: it is not on PyPI), each from a venv of its own under
.mlops/bench-venvs made from its committed pins, as host processes on 127.0.0.1, each at its
defaults and again with 2 workers (MLServer's parallel_workers, KServe's --workers: the image
runs 2), there with the native threads shared out among them as the image shares them
(OMP_NUM_THREADS=1 each on 2 cores), speaking the Open Inference Protocol (V2).

The image runs four times: as it starts by default, with its traffic log on (into a folder
mounted as its store) and MLOPS_SERVING_BATCH=auto (each worker batches when its model answers
each row alone: the default tree model does), whose answers to single-row requests sent 16 at a
time must be MLflow's exactly; with the log off (MLOPS_TRAFFIC_LOG=off); with the log on and
each request predicted alone (MLOPS_SERVING_BATCH=1, as MLflow's server does; its own store);
and as it starts but serving V2 (MLOPS_SERVING_PROTOCOL=v2; its own store). Before any load,
every server answers the same 50 rows in one request, and must answer them as `mlflow models
serve` does: the image's /invocations within 1e-6, the V2 servers (the image's and the peers')
exactly; a server that does not stops the bench, named with the difference. Then wrk (Debian
package `wrk`) sends one row per POST on keep-alive connections (/invocations, or
/v2/models/<model>/infer with the same row) at concurrency 1 and 16, for --seconds each, and
the table gives each server's requests per second, p50 / p99 / max latency and errors; then the
image's throughput over mlflow serve's and over each peer's, over the best peer's at 16
connections with its p99 (the target: >= 2x, p99 < 100 ms), the traffic log's and batching's
effect, and how many of the requests they answered the logging images wrote to their stores.

    .venv/bin/python bench/serving.py [--image REF] [--cpus 2] [--seconds 15]
        [--peers mlserver,kserve] [--kserve-source KSERVE_CHECKOUT]
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
    v2_payload,
)
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.traffic import read_traffic
from mlops_assets.resources.image_builder import ImageBuilderResource, wait_for_ping
from mlops_assets.stack.process import ServerProcess, free_port, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_peers import (
    KSERVE_SOURCE_ENV,
    PEERS,
    PeerSetup,
    kserve_source,
    prepare_peers,
    v2_answers,
)

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


def limited(builder: ImageBuilderResource, cpus: str, store: Path | None) -> ImageBuilderResource:
    """``builder``'s containers under ``--cpus cpus``, with ``store`` mounted as the traffic
    log's store (made here, owned by the image's server user, who writes the log)."""
    mount = ""
    if store is not None:
        store.mkdir(exist_ok=True)
        os.chown(store, SERVING_UID, SERVING_UID)
        mount = f" --volume {store}:{TRAFFIC_STORE_IN_IMAGE}"
    return ImageBuilderResource(
        container_run_args=f"{builder.container_run_args} --cpus {cpus}{mount}"
    )


def post(endpoint: str, body: bytes) -> str:
    request = urllib.request.Request(endpoint, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return str(response.read().decode())


def answers_200(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)


def wait_all_ready(
    servers: dict[str, tuple[str, ServerProcess]], timeout: float
) -> dict[str, float]:
    """Seconds until each server's readiness URL answered 200, all started together; stops
    the bench, with its log's tail, when one exits or is not ready by ``timeout``."""
    started = time.monotonic()
    ready: dict[str, float] = {}
    while len(ready) < len(servers):
        for name, (url, process) in servers.items():
            if name in ready:
                continue
            try:
                if answers_200(url):
                    ready[name] = time.monotonic() - started
                    continue
            except OSError:
                pass
            if not process.running() or time.monotonic() - started > timeout:
                tail = "\n".join(process.log.read_text(errors="replace").splitlines()[-30:])
                state = (
                    "exited" if not process.running() else f"was not ready after {timeout:.0f} s"
                )
                raise SystemExit(f"{name} {state} ({url}); {process.log.name} ends:\n{tail}")
        time.sleep(0.3)
    return ready


def answer_as_mlflow(
    servers: dict[str, tuple[str, bytes]], expected: pd.DataFrame
) -> dict[str, float]:
    """Each V2 server's answer to its request (endpoint, body) for the rows ``expected``
    answers, which must be mlflow serve's exactly; stops the bench naming the first that is
    not. Returns each one's max abs diff (0)."""
    identical = {}
    for name, (endpoint, body) in servers.items():
        same = compare_answers(v2_answers(post(endpoint, body)), expected, tolerance=0.0)
        if not same.matches:
            raise SystemExit(
                f"{name} answers the {len(expected)} rows differently from mlflow models serve "
                f"(its answers are the in-process predictions here): {same.describe()}"
            )
        identical[name] = same.max_abs_diff
    return identical


def wrk(
    endpoint: str, body_file: Path, script: Path, connections: int, seconds: int
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
            endpoint,
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


def load(
    servers: dict[str, tuple[str, bytes]], seconds: int
) -> tuple[dict[tuple[str, int], dict[str, float]], dict[str, int]]:
    """wrk on each server (endpoint, single-row body): a 3 s warm-up at 4 connections, then
    ``seconds`` at 1 and at 16. Returns the results by (server, connections), and the
    requests each server completed in all of it."""
    completed = dict.fromkeys(servers, 0)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        bodies = {}
        for number, (name, (_, body)) in enumerate(servers.items()):
            bodies[name] = Path(tmp) / f"body-{number}.json"
            bodies[name].write_bytes(body)
        for name, (endpoint, _) in servers.items():
            completed[name] += int(wrk(endpoint, bodies[name], script, 4, 3)["requests"])
        results = {
            (name, connections): wrk(endpoint, bodies[name], script, connections, seconds)
            for connections in (1, 16)
            for name, (endpoint, _) in servers.items()
        }
    for (name, _), result in results.items():
        completed[name] += int(result["requests"])
    return results, completed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default=None, help="image reference; default: the recorded one")
    parser.add_argument("--cpus", default="2", help="the container's CPU limit (podman --cpus)")
    parser.add_argument("--seconds", type=int, default=15, help="wrk duration per measurement")
    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"the peers to run beside the image and mlflow serve, comma-separated, of: "
        f"{', '.join(PEERS)} (empty: none)",
    )
    parser.add_argument(
        "--kserve-source",
        default=None,
        help="a checkout of the kserve repository, whose python/sklearnserver (not on PyPI) the "
        f"KServe peer's venv installs; default ${KSERVE_SOURCE_ENV}",
    )
    args = parser.parse_args()
    chosen = [peer.strip() for peer in args.peers.split(",") if peer.strip()]
    if set(chosen) - set(PEERS):
        parser.error(f"--peers: unknown {sorted(set(chosen) - set(PEERS))}; known: {PEERS}")
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
    model_name = mlflow_resource.registered_name
    model_uri = f"models:/{model_name}/{version}"
    registry_uri = mlflow_resource.registry_uri or mlflow_resource.tracking_uri

    rows = model_input(generate_house_prices(50, seed=7), HOUSE_PRICES)
    first = rows.head(1)
    single = json.dumps(invocation_payload(first)).encode()
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
            "MLFLOW_REGISTRY_URI": registry_uri,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # it runs `uvicorn`
        },
    )

    stores = {
        "image": logs / "store",
        "image, alone": logs / "store-alone",
        "image, v2": logs / "store-v2",
    }

    def v2_endpoint(url: str) -> str:
        return f"{url}/v2/models/{model_name}/infer"

    setup = PeerSetup()
    containers: list[Any] = []
    try:
        setup = prepare_peers(
            chosen,
            model_uri,
            model_name,
            mlflow_resource.tracking_uri,
            registry_uri,
            logs / "peers",
            kserve_source(args.kserve_source),
        )
        server.start()
        for peer in setup.peers:
            peer.process.start()
        ready = wait_all_ready(
            {
                "mlflow serve": (f"{mlflow_url}/ping", server),
                **{peer.name: (peer.ready_url, peer.process) for peer in setup.peers},
            },
            180,
        )
        container = limited(builder, args.cpus, stores["image"]).run(
            runtime, image, SERVING_PORT, env={}
        )
        containers.append(container)
        image_ready = wait_for_ping(container, 180)
        silent = limited(builder, args.cpus, None).run(
            runtime, image, SERVING_PORT, env={"MLOPS_TRAFFIC_LOG": "off"}
        )
        containers.append(silent)
        wait_for_ping(silent, 180)
        alone = limited(builder, args.cpus, stores["image, alone"]).run(
            runtime, image, SERVING_PORT, env={"MLOPS_SERVING_BATCH": "1"}
        )
        containers.append(alone)
        wait_for_ping(alone, 180)
        v2 = limited(builder, args.cpus, stores["image, v2"]).run(
            runtime, image, SERVING_PORT, env={"MLOPS_SERVING_PROTOCOL": "v2"}
        )
        containers.append(v2)
        wait_for_ping(v2, 180)
        batching = {  # what each image's workers said they predict together
            name: worker_batches(running)
            for name, running in (("image", container), ("image, alone", alone), ("image, v2", v2))
        }
        expected = parse_answers(post(f"{mlflow_url}/invocations", many))
        comparison = compare_answers(
            parse_answers(post(f"{container.url}/invocations", many)), expected
        )
        if not comparison.matches:
            raise SystemExit(
                f"the image and mlflow serve answer differently: {comparison.describe()}"
            )
        v2_servers = {
            "image, v2": (v2_endpoint(v2.url), json.dumps(v2_payload(rows)).encode()),
            **{peer.name: (peer.endpoint, peer.body(rows)) for peer in setup.peers},
        }
        identical = answer_as_mlflow(v2_servers, expected)
        bodies = [json.dumps(invocation_payload(rows.iloc[[i]])).encode() for i in range(len(rows))]
        for _ in range(3):  # rows sent 16 at a time, so that they are predicted together
            with ThreadPoolExecutor(16) as pool:
                answers = list(
                    pool.map(lambda body: post(f"{container.url}/invocations", body), bodies)
                )
            together = compare_answers(  # exactly: a tree model's rows are scored alone
                pd.concat([parse_answers(answer) for answer in answers], ignore_index=True),
                expected,
                tolerance=0.0,
            )
            if not together.matches:
                raise SystemExit(f"batched answers differ from mlflow's: {together.describe()}")
        results, completed = load(
            {
                "image": (f"{container.url}/invocations", single),
                "image, log off": (f"{silent.url}/invocations", single),
                "image, alone": (f"{alone.url}/invocations", single),
                "image, v2": (v2_endpoint(v2.url), json.dumps(v2_payload(first)).encode()),
                "mlflow serve": (f"{mlflow_url}/invocations", single),
                **{peer.name: (peer.endpoint, peer.body(first)) for peer in setup.peers},
            },
            args.seconds,
        )
        sent = {  # the requests of the answer checks, and wrk's
            "image": 1 + 3 * len(bodies) + completed["image"],
            "image, alone": completed["image, alone"],
            "image, v2": 1 + completed["image, v2"],
        }
        for running in (container, alone, v2):
            running.stop()
        logged = {name: logged_requests(folder) for name, folder in stores.items()}
    finally:
        for running in containers:
            running.remove()
        for peer in setup.peers:
            peer.process.stop()
        server.stop()
        shutil.rmtree(logs, ignore_errors=True)

    peers = [peer.name for peer in setup.peers]
    print(
        f"model {model_uri}; image {image} ({runtime}, --cpus {args.cpus}, ready in "
        f"{image_ready:.1f} s); mlflow models serve (1 worker, ready in "
        f"{ready['mlflow serve']:.1f} s); {os.cpu_count()} cores; wrk {args.seconds} s per line; "
        f"image /invocations vs mlflow serve: {comparison.describe()}; single rows sent 16 at a "
        f"time: {together.describe()}; requests each worker predicts together: {batching}"
    )
    if setup.peers:
        print(
            f"peers (own venvs, host processes on 127.0.0.1, V2): {'; '.join(setup.described)}; "
            + ", ".join(f"{p.name} ({p.about}) ready in {ready[p.name]:.1f} s" for p in setup.peers)
        )
    print(
        f"V2 answers to the same {len(rows)} rows, max abs diff from mlflow serve's: "
        + ", ".join(f"{name} {diff:.3g}" for name, diff in identical.items())
    )
    for left_out, why in setup.left_out.items():
        print(f"NOT RUN: {left_out}: {why}")
    print(
        f"{'server':>19} {'conns':>5} {'requests':>8} {'errors':>6} {'req/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    for (name, connections), r in results.items():
        print(
            f"{name:>19} {connections:>5} {r['requests']:>8.0f} {r['errors']:>6.0f} "
            f"{r['rps']:>8.1f} {r['p50_ms']:>7.1f} {r['p99_ms']:>7.1f} {r['max_ms']:>7.1f}"
        )
    for connections in (1, 16):
        ratio = (
            results[("image", connections)]["rps"] / results[("mlflow serve", connections)]["rps"]
        )
        print(f"throughput image / mlflow serve at {connections} connection(s): {ratio:.2f}x")
    image16 = results[("image", 16)]
    for name in peers:
        print(
            f"throughput image / {name} at 16 connections: "
            f"{image16['rps'] / results[(name, 16)]['rps']:.2f}x"
        )
    best = max(["mlflow serve", *peers], key=lambda name: results[(name, 16)]["rps"])
    best_rps = results[(best, 16)]["rps"]
    for name in ("image", "image, v2"):
        print(
            f"{name} at 16 connections: {results[(name, 16)]['rps'] / best_rps:.2f}x the best "
            f"peer ({best}), p99 {results[(name, 16)]['p99_ms']:.1f} ms "
            "(target: >= 2x, p99 < 100 ms)"
        )
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
    the answered requests (request ids: the 50-row answer check is one request of 50 rows),
    whether each row is there once, and how many requests it dropped."""
    files = [(f.name, f.read_bytes()) for f in store.glob("traffic/*/date=*/*.jsonl")]
    day = read_traffic(files, HOUSE_PRICES)
    unique = not day.frame.duplicated(["request_id", "row"]).any()
    requests = day.frame["request_id"].nunique()  # the 50-row answer check is one request
    return {"requests": requests, "unique": unique, "dropped": day.dropped}


if __name__ == "__main__":
    main()
