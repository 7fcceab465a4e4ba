"""`mlops-stack up`: SeaweedFS (S3), PostgreSQL, an MLflow tracking server and (when Debian's
docker-registry is installed) an OCI registry, on loopback.

It writes the settings a shell needs to ``<dir>/env.sh`` (mode 600, credentials included, so
they are never printed), runs until SIGINT or SIGTERM, then stops every server it started.
Data and credentials stay in ``<dir>`` for the next start.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shlex
import signal
import sys
import threading
from pathlib import Path

from mlops_assets.instance_config import LOCAL_RUNS_YAML
from mlops_assets.model_server.record import EXCEPTION_LINE
from mlops_assets.settings import home
from mlops_assets.stack.mlflow_server import MlflowServer
from mlops_assets.stack.postgres import LocalPostgres
from mlops_assets.stack.registry import LocalRegistry, registry_binary
from mlops_assets.stack.seaweedfs import SeaweedS3

DAGSTER_YAML = f"""\
# Dagster instance of the local stack: runs, events and schedules in PostgreSQL.
storage:
  postgres:
    postgres_url:
      env: MLOPS_DAGSTER_POSTGRES_URL
{LOCAL_RUNS_YAML}telemetry:
  enabled: false
"""


def prepare_dagster_home(dagster_home: Path, postgres_url: str) -> None:
    """The stack's Dagster instance: its ``dagster.yaml`` (runs, events and schedules in
    PostgreSQL), and its tables, made once here with ``dagster instance migrate``: left to
    the first runs, two processes creating them at the same moment collide on a unique key
    and one run fails."""
    import os
    import subprocess

    from mlops_assets.lib.metadata import redact_uri

    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    dagster = Path(sys.executable).parent / "dagster"
    command = ["instance", "migrate"]
    completed = subprocess.run(
        [str(dagster), *command],
        env={
            **os.environ,
            "DAGSTER_HOME": str(dagster_home),
            "MLOPS_DAGSTER_POSTGRES_URL": postgres_url,  # what dagster.yaml reads
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    if completed.returncode != 0:
        output = completed.stderr or completed.stdout
        # The exceptions it raised (each once, the cause first), else the end of its output.
        raised = EXCEPTION_LINE.findall(output)
        raise RuntimeError(
            f"`dagster {' '.join(command)}` failed (exit {completed.returncode}) on the "
            f"instance in {dagster_home} ({redact_uri(postgres_url)}):\n"
            + _without(postgres_url, "\n".join(dict.fromkeys(raised)) or output[-3000:])
        )


def _without(url: str, text: str) -> str:
    """``text`` with ``url``'s password (and the URL itself) taken out, to be shown."""
    import urllib.parse

    from mlops_assets.lib.metadata import redact_uri

    text = text.replace(url, redact_uri(url))
    password = urllib.parse.urlsplit(url).password
    return text.replace(password, "***") if password else text


def _credentials(state: Path) -> dict[str, str]:
    path = state / "credentials.json"
    if path.exists():
        return json.loads(path.read_text())
    credentials = {
        "s3_access_key": "mlops-" + secrets.token_hex(4),
        "s3_secret_key": secrets.token_urlsafe(24),
        "postgres_password": secrets.token_urlsafe(18),
    }
    path.touch(mode=0o600)
    path.write_text(json.dumps(credentials))
    return credentials


def _write_private(path: Path, text: str) -> None:
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def up(state: Path) -> int:
    state.mkdir(parents=True, exist_ok=True)
    state.chmod(0o755)  # the postgres service user must reach its data folder
    logs = state / "logs"
    credentials = _credentials(state)
    s3 = SeaweedS3(
        data_dir=state / "seaweedfs",
        log_dir=logs,
        access_key=credentials["s3_access_key"],
        secret_key=credentials["s3_secret_key"],
    )
    postgres = LocalPostgres(
        data_dir=state / "postgres", log_dir=logs, password=credentials["postgres_password"]
    )
    started: list[SeaweedS3 | LocalPostgres | MlflowServer | LocalRegistry] = []
    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    try:
        print("starting SeaweedFS S3 ...", flush=True)
        started.append(s3)
        s3.start()
        print("starting PostgreSQL ...", flush=True)
        started.append(postgres)
        postgres.start()
        mlflow = MlflowServer.on_stack(postgres, s3, logs)
        print("starting MLflow tracking server ...", flush=True)
        started.append(mlflow)
        mlflow.start()

        registry_line = "  OCI registry     not started: apt-get install docker-registry\n"
        registry_settings: dict[str, str] = {}
        try:
            registry_binary()
        except FileNotFoundError:
            pass
        else:
            registry = LocalRegistry(data_dir=state / "registry", log_dir=logs)
            print("starting OCI registry ...", flush=True)
            started.append(registry)
            registry.start()
            registry_line = f"  OCI registry     http://{registry.address}  (served images)\n"
            registry_settings = {
                "MLOPS_IMAGE_REGISTRY": f"{registry.address}/mlops",
                "MLOPS_IMAGE_REGISTRY_INSECURE": "true",
            }

        dagster_home = state / "dagster_home"
        dagster_postgres = postgres.url("dagster", driver="postgresql+psycopg2")
        prepare_dagster_home(dagster_home, dagster_postgres)
        settings = {
            **s3.env(),
            "MLOPS_OBJECT_STORE_ROOT": f"s3://{s3.bucket}/store",
            "MLFLOW_TRACKING_URI": mlflow.tracking_uri,
            "DAGSTER_HOME": str(dagster_home),
            "MLOPS_DAGSTER_POSTGRES_URL": dagster_postgres,
            **registry_settings,
        }
        env_file = state / "env.sh"
        _write_private(
            env_file,
            "".join(f"export {key}={shlex.quote(value)}\n" for key, value in settings.items()),
        )
        print(
            "\nready:\n"
            f"  S3 (SeaweedFS)   {s3.endpoint_url}  bucket '{s3.bucket}'\n"
            f"  PostgreSQL       127.0.0.1:{postgres.port}  databases mlflow, dagster\n"
            f"  MLflow           {mlflow.tracking_uri}\n"
            f"{registry_line}"
            f"  logs             {logs}\n"
            f"point the project at it:  source {env_file}\n"
            "stop with Ctrl-C (or SIGTERM to this process)",
            flush=True,
        )
        stop_requested.wait()
        return 0
    finally:
        print("stopping ...", flush=True)
        for started_service in reversed(started):
            started_service.stop()
        (state / "env.sh").unlink(missing_ok=True)
        print("stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops-stack", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start the stack and run until interrupted")
    start.add_argument(
        "--dir", type=Path, default=None, help="state folder (default: $MLOPS_HOME/stack)"
    )
    args = parser.parse_args(argv)
    return up((args.dir or home() / "stack").resolve())


if __name__ == "__main__":
    sys.exit(main())
