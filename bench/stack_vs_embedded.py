"""The whole graph on embedded defaults vs on the local stack, in one run of this script.

Starts SeaweedFS, PostgreSQL and an MLflow tracking server (as `mlops-stack` does), then runs
``mlops_lifecycle`` for one partition twice in fresh worker processes: once on embedded
defaults (local folder, SQLite MLflow) and once against the servers (S3 store, MLflow on
Postgres with S3 artifacts). Prints both wall times (imports excluded) and their ratio.

    .venv/bin/python bench/stack_vs_embedded.py --rows 10000
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from graph_vs_plain import measure

from mlops_assets.stack.mlflow_server import MlflowServer
from mlops_assets.stack.postgres import LocalPostgres
from mlops_assets.stack.seaweedfs import SeaweedS3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="mlops-bench-stack-"))
    base.chmod(0o755)  # the postgres service user must reach its data
    s3 = SeaweedS3(data_dir=base / "s3", log_dir=base / "logs")
    postgres = LocalPostgres(data_dir=base / "postgres", log_dir=base / "logs")
    started: list[SeaweedS3 | LocalPostgres | MlflowServer] = []
    try:
        s3.start()
        started.append(s3)
        postgres.start()
        started.append(postgres)
        mlflow = MlflowServer.on_stack(postgres, s3, base / "logs")
        mlflow.start()
        started.append(mlflow)
        stack_env = {
            **s3.env(),
            "MLOPS_OBJECT_STORE_ROOT": f"s3://{s3.bucket}/store",
            "MLFLOW_TRACKING_URI": mlflow.tracking_uri,
        }
        embedded = measure("graph", args.rows)
        on_stack = measure("graph", args.rows, extra_env=stack_env)
    finally:
        for service in reversed(started):
            service.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'rows':>10} {'embedded s':>11} {'stack s':>9} {'ratio':>6}")
    print(
        f"{args.rows:>10,} {embedded['seconds']:>11.1f} {on_stack['seconds']:>9.1f} "
        f"{on_stack['seconds'] / embedded['seconds']:>6.2f}"
    )


if __name__ == "__main__":
    main()
