"""`mlops-demo`: run the mlops_lifecycle job once through the real dagster CLI (every asset
and check but served_image, which needs an image builder and has its own job).

It gives DAGSTER_HOME a persistent default under $MLOPS_HOME, so the run it
makes is there when you open `dagster dev` with the same DAGSTER_HOME.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from mlops_assets.settings import home

# A local instance: SQLite under DAGSTER_HOME, one registry alias move at a time.
DAGSTER_YAML = """\
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def dagster_home() -> Path:
    path = Path(os.environ.get("DAGSTER_HOME") or home() / "dagster_home").resolve()
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists():
        config.write_text(DAGSTER_YAML)
    return path


def main(argv: list[str] | None = None) -> int:
    from mlops_assets.partitions import daily_partitions

    parser = argparse.ArgumentParser(
        prog="mlops-demo",
        description="Materialise every asset and check of the lifecycle once "
        "(served_image has its own job, serve_champion).",
    )
    parser.add_argument(
        "--partition",
        default=daily_partitions().get_last_partition_key(),
        help="day of the incoming batch to score (default: the latest complete day)",
    )
    args = parser.parse_args(argv)
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home()))
    dagster = shutil.which("dagster", path=str(Path(sys.executable).parent)) or "dagster"
    command = [
        dagster,
        "job",
        "execute",
        "-m",
        "mlops_assets.definitions",
        "-j",
        "mlops_lifecycle",
        "--tags",
        f'{{"dagster/partition": "{args.partition}"}}',
    ]
    print("running:", " ".join(command), file=sys.stderr)
    code = subprocess.call(command, env=env)
    print(
        f"\n{'Done' if code == 0 else 'FAILED'}: mlops_lifecycle for partition {args.partition}.\n"
        "See it in the UI:\n"
        f"  DAGSTER_HOME={env['DAGSTER_HOME']} .venv/bin/dagster dev\n"
        "  then open http://127.0.0.1:3000/asset-groups",
        file=sys.stderr,
    )
    return code


if __name__ == "__main__":
    raise SystemExit(main())
