"""Cost of importing the code location, which every run worker and step process pays.

    .venv/bin/python bench/import_time.py [--runs 5]

Prints the median and worst wall time of ``import mlops_assets.definitions`` in a fresh
interpreter, and which heavy libraries that import pulled in (there should be none).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CODE = (
    "import time, sys; t = time.perf_counter(); import mlops_assets.definitions; "
    "print(time.perf_counter() - t); "
    "print(','.join(m for m in ('mlflow', 'evidently', 'sklearn', 'scipy') if m in sys.modules))"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times, heavy = [], set()
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", CODE], capture_output=True, text=True, check=True
        )
        seconds, loaded = out.stdout.strip().split("\n") + [""] * (
            2 - len(out.stdout.strip().split("\n"))
        )
        times.append(float(seconds))
        heavy.update(filter(None, loaded.split(",")))
    print(
        f"import mlops_assets.definitions: median {statistics.median(times):.2f}s, "
        f"worst {max(times):.2f}s over {args.runs} runs; heavy modules loaded: "
        f"{sorted(heavy) or 'none'}"
    )


if __name__ == "__main__":
    main()
