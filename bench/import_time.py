"""Cost of importing the code location, which every run worker and step process pays.

    .venv/bin/python bench/import_time.py [--runs 5]

Prints the median and worst wall time of ``import mlops_assets.definitions`` in a fresh
interpreter, and of that and building the definitions (``build_definitions()`` and its
repository: what loading the code location costs), and which heavy libraries they pulled in
(there should be none).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

CODE = (
    "import time, sys; t = time.perf_counter(); import mlops_assets.definitions as d; "
    "i = time.perf_counter() - t; d.build_definitions().get_repository_def(); "
    "print(i, time.perf_counter() - t); "
    "print(','.join(m for m in ('mlflow', 'evidently', 'sklearn', 'scipy') if m in sys.modules))"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times: list[float] = []
    built: list[float] = []
    heavy: set[str] = set()
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-c", CODE], capture_output=True, text=True, check=True
        )
        seconds, loaded = out.stdout.strip().split("\n") + [""] * (
            2 - len(out.stdout.strip().split("\n"))
        )
        imported, loaded_location = (float(x) for x in seconds.split())
        times.append(imported)
        built.append(loaded_location)
        heavy.update(filter(None, loaded.split(",")))
    print(
        f"import mlops_assets.definitions: median {statistics.median(times):.2f}s, "
        f"worst {max(times):.2f}s; with the definitions built: median "
        f"{statistics.median(built):.2f}s, worst {max(built):.2f}s; over {args.runs} runs; "
        f"heavy modules loaded: {sorted(heavy) or 'none'}"
    )


if __name__ == "__main__":
    main()
