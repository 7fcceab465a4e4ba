"""`mlops-stack up` as a user meets it: start, point the project at it, run, stop cleanly."""

import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from mlops_assets_tests.conftest import project_free_env, run_mlops_demo

# Starts Postgres, SeaweedFS and an MLflow server, and runs the dagster CLI.
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = shlex.split(value)[0]
    return values


def port_open(url: str) -> bool:
    host, port = url.split("//")[1].split(":")
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def test_stack_runs_the_graph_on_postgres_storage_and_stops_clean(tmp_path):
    parent = Path(tempfile.mkdtemp(prefix="mlops-stack-cli-"))
    parent.chmod(0o755)  # the postgres service user must reach the state folder
    state = parent / "stack"
    base_env = project_free_env()
    stack = subprocess.Popen(
        [str(BIN / "mlops-stack"), "up", "--dir", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=base_env,
    )
    output: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = stack.stdout.readline()
            assert line, "mlops-stack exited early:\n" + "".join(output)
            output.append(line)
            if line.startswith("stop with Ctrl-C"):
                break
        env_file = state / "env.sh"
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        settings = read_env_file(env_file)
        printed = "".join(output)
        for secret in (settings["AWS_SECRET_ACCESS_KEY"], settings["MLOPS_DAGSTER_POSTGRES_URL"]):
            assert secret not in printed

        assert "OCI registry     http://" in printed
        registry = settings["MLOPS_IMAGE_REGISTRY"].removesuffix("/mlops")
        with urllib.request.urlopen(f"http://{registry}/v2/", timeout=5) as response:
            assert response.status == 200
        assert settings["MLOPS_IMAGE_REGISTRY_INSECURE"] == "true"

        demo = run_mlops_demo(tmp_path / "mlops", cwd=tmp_path, extra_env=settings)
        assert demo.returncode == 0, demo.stderr[-4000:]

        os.environ["MLOPS_DAGSTER_POSTGRES_URL"] = settings["MLOPS_DAGSTER_POSTGRES_URL"]
        try:
            with DagsterInstance.from_config(settings["DAGSTER_HOME"]) as instance:
                assert type(instance.run_storage).__name__ == "PostgresRunStorage"
                [run] = instance.get_runs()
                assert run.status == DagsterRunStatus.SUCCESS
                # Runs whose processes die are found by run monitoring (lib/dead_runs.py).
                assert type(instance.run_launcher).__name__ == "LocalRunLauncher"
                assert instance.run_monitoring_enabled
        finally:
            del os.environ["MLOPS_DAGSTER_POSTGRES_URL"]
        assert not (tmp_path / "mlops" / "store").exists()  # data went to S3
    finally:
        stack.send_signal(signal.SIGTERM)
        rest, _ = stack.communicate(timeout=120)
        output.append(rest)
    assert stack.returncode == 0, "".join(output)
    assert not (state / "env.sh").exists()
    for url in (settings["MLOPS_S3_ENDPOINT_URL"], settings["MLFLOW_TRACKING_URI"]):
        assert not port_open(url), f"{url} still answers after stop"


def test_a_failed_instance_setup_says_why_without_the_database_password(tmp_path):
    """prepare_dagster_home runs `dagster instance migrate`; when that fails (here:
    nothing listens where the URL points), the error carries the CLI's own message, and
    neither the URL's password nor the URL with it."""
    from mlops_assets.stack.cli import prepare_dagster_home

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    password = "pw-" + "x7Kq2" * 4
    url = f"postgresql+psycopg2://dagster:{password}@127.0.0.1:{port}/dagster"
    with pytest.raises(RuntimeError) as failure:
        prepare_dagster_home(tmp_path / "dagster_home", url)
    message = str(failure.value)
    assert "`dagster instance migrate` failed" in message
    assert f"***@127.0.0.1:{port}" in message
    assert "Connection refused" in message or "could not connect" in message, message
    assert password not in message


def test_the_stacks_servers_get_only_the_environment_they_need(tmp_path, monkeypatch):
    """Found by a drill: `mlops-stack up` passed the caller's whole environment to SeaweedFS,
    which made the caller's AWS key pair an admin identity of its own and logged its access
    key id in a log file any user could read. A server gets only what it needs now, and its
    log is private."""
    from mlops_assets.stack.seaweedfs import SeaweedS3

    caller_key = "AKIACALLERSOWNKEY0001"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", caller_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "callers-own-secret-not-for-seaweedfs")
    monkeypatch.setenv("MLOPS_SOME_SETTING", "not for servers")
    server = SeaweedS3(data_dir=tmp_path / "data", log_dir=tmp_path / "logs")
    server.start()
    try:
        for process in (server.server, server.gateway):
            assert process is not None
            assert process.pid is not None
            environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
            names = {entry.split(b"=", 1)[0].decode() for entry in environ if entry}
            assert "AWS_ACCESS_KEY_ID" not in names
            assert "AWS_SECRET_ACCESS_KEY" not in names
            assert "MLOPS_SOME_SETTING" not in names
            assert "PATH" in names
        # A client with the caller's key is refused: it is no identity of this server.
        import boto3
        from botocore.exceptions import ClientError

        intruder = boto3.client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=caller_key,
            aws_secret_access_key="callers-own-secret-not-for-seaweedfs",
        )
        with pytest.raises(ClientError):
            intruder.list_objects_v2(Bucket=server.bucket)
        server.client().list_objects_v2(Bucket=server.bucket)  # its own identity works
    finally:
        server.stop(grace_seconds=0)
    for log in (tmp_path / "logs").iterdir():
        assert oct(log.stat().st_mode & 0o777) == "0o600", log
