"""The served image against another image of the same model (built from an earlier commit, say):
paired rounds on the same load, so that a change to the server shows as a ratio, not as the
drift of a machine between two runs.

Both images run at once, each as it starts by default (traffic log on, into a folder mounted as
its store; batching auto), under the same --cpus. Each round runs wrk (single-row
POST /invocations on keep-alive connections) on one, then the other, alternating which goes
first; both must first answer the same 50 rows identically. Prints each round, the medians and
the median of the per-round ratios (image / baseline) of throughput and p99, with their range.

    .venv/bin/python bench/serving_against.py BASELINE_IMAGE [--image REF] [--rounds 8]
        [--seconds 10] [--connections 16] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlops_assets.definitions import build_resources
from mlops_assets.ml.estimator import model_input
from mlops_assets.ml.sample_data import generate_house_prices
from mlops_assets.ml.serving import (
    SERVING_PORT,
    compare_answers,
    invocation_payload,
    parse_answers,
)
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.resources.image_builder import ImageBuilderResource, wait_for_ping

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving import WRK_SCRIPT, limited, post, recorded_image, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("baseline", help="the image to compare against")
    parser.add_argument("--image", default=None, help="default: the one served_image recorded")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration of each run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--cpus", default="2", help="each container's CPU limit")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")

    resources = build_resources()
    builder: ImageBuilderResource = resources["image_builder"]  # type: ignore[assignment]
    runtime = builder.runtime()
    images = {
        "image": args.image or recorded_image(builder, resources, runtime),
        "baseline": args.baseline,
    }
    rows = model_input(generate_house_prices(50, seed=7), HOUSE_PRICES)
    logs = Path(tempfile.mkdtemp(prefix="bench-serving-against-"))
    containers = {}
    try:
        for name, image in images.items():
            containers[name] = limited(builder, args.cpus, logs / f"store-{name}").run(
                runtime, image, SERVING_PORT, env={}
            )
        for container in containers.values():
            wait_for_ping(container, 180)
        many = json.dumps(invocation_payload(rows)).encode()
        endpoints = {name: f"{c.url}/invocations" for name, c in containers.items()}
        answers = {name: parse_answers(post(url, many)) for name, url in endpoints.items()}
        same = compare_answers(answers["image"], answers["baseline"], tolerance=0.0)
        if not same.matches:
            raise SystemExit(f"the two images answer differently: {same.describe()}")
        body, script = logs / "body.json", logs / "post.lua"
        body.write_text(json.dumps(invocation_payload(rows.head(1))))
        script.write_text(WRK_SCRIPT)
        for container in containers.values():  # warm-up
            wrk(f"{container.url}/invocations", body, script, 4, 3)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in containers}
        for number in range(args.rounds):
            order = list(containers) if number % 2 == 0 else list(reversed(containers))
            for name in order:
                result = wrk(endpoints[name], body, script, args.connections, args.seconds)
                results[name].append(result)
            image, base = results["image"][-1], results["baseline"][-1]
            print(
                f"round {number + 1} ({order[0]} first): image {image['rps']:.1f} req/s p99 "
                f"{image['p99_ms']:.1f} ms; baseline {base['rps']:.1f} req/s p99 "
                f"{base['p99_ms']:.1f} ms",
                flush=True,
            )
    finally:
        for container in containers.values():
            container.remove()
        shutil.rmtree(logs, ignore_errors=True)

    print(f"image {images['image']}; baseline {images['baseline']}; {same.describe()}")
    print(
        f"{args.rounds} rounds of {args.seconds} s at {args.connections} connections, "
        f"--cpus {args.cpus}, {os.cpu_count()} cores"
    )
    for name, runs in results.items():
        print(
            f"{name:>8}: median {statistics.median(r['rps'] for r in runs):.1f} req/s, p99 "
            f"{statistics.median(r['p99_ms'] for r in runs):.1f} ms, errors "
            f"{sum(r['errors'] for r in runs):.0f}"
        )
    for key, label in (("rps", "throughput"), ("p99_ms", "p99")):
        ratios = [
            i[key] / b[key] for i, b in zip(results["image"], results["baseline"], strict=True)
        ]
        print(
            f"{label} image / baseline: median {statistics.median(ratios):.2f}x "
            f"({min(ratios):.2f}x-{max(ratios):.2f}x)"
        )


if __name__ == "__main__":
    main()
