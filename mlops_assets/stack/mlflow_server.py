"""An MLflow tracking server: Postgres backend store, S3 artifacts served through the server."""

from __future__ import annotations

import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlops_assets.stack.postgres import LocalPostgres
from mlops_assets.stack.process import (
    LOOPBACK,
    ServerProcess,
    free_port,
    stopped_if_not_ready,
    wait_until,
)
from mlops_assets.stack.seaweedfs import SeaweedS3


@dataclass
class MlflowServer:
    backend_store_uri: str
    artifacts_destination: str
    log_dir: Path
    s3_env: dict[str, str]
    port: int = 0
    server: ServerProcess | None = None

    @classmethod
    def on_stack(cls, postgres: LocalPostgres, s3: SeaweedS3, log_dir: Path) -> MlflowServer:
        """The stack's layout: runs and registry in Postgres database 'mlflow', artifacts under
        mlartifacts/ in the S3 bucket."""
        return cls(
            # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the project ships psycopg2.
            backend_store_uri=postgres.url("mlflow", driver="postgresql+psycopg2"),
            artifacts_destination=f"s3://{s3.bucket}/mlartifacts",
            log_dir=log_dir,
            s3_env=s3.env(),
        )

    @property
    def tracking_uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 120) -> None:
        if not self.port:
            self.port = free_port()
        bin_dir = str(Path(sys.executable).parent)
        # MLflow 3 rejects Host headers it was not told about (403 "Invalid Host header").
        hosts = ",".join(f"{h}{p}" for h in (LOOPBACK, "localhost") for p in ("", f":{self.port}"))
        self.server = ServerProcess(
            name="mlflow",
            command=[
                os.path.join(bin_dir, "mlflow"),
                "server",
                "--artifacts-destination",
                self.artifacts_destination,
                "--serve-artifacts",
                "--host",
                LOOPBACK,
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--allowed-hosts",
                hosts,
            ],
            log=self.log_dir / "mlflow.log",
            inherit_env=False,
            env={
                # The store URI holds the Postgres password: in the environment, not in argv
                # where any user's `ps` would show it.
                "MLFLOW_BACKEND_STORE_URI": self.backend_store_uri,
                "MLFLOW_S3_ENDPOINT_URL": self.s3_env["MLOPS_S3_ENDPOINT_URL"],
                "AWS_ACCESS_KEY_ID": self.s3_env["AWS_ACCESS_KEY_ID"],
                "AWS_SECRET_ACCESS_KEY": self.s3_env["AWS_SECRET_ACCESS_KEY"],
                "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                "GIT_PYTHON_REFRESH": "quiet",
            },
        )

        def healthy() -> bool:
            with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=5) as response:
                return response.status == 200

        with stopped_if_not_ready(self.stop):
            self.server.start()
            wait_until(healthy, f"MLflow server on {self.tracking_uri}", timeout, self.server.log)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
