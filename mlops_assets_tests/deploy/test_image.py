"""deploy/Dockerfile builds (buildah, from the locally built Debian base), runs as uid 10001,
and its default command is a code server that passes the chart's readiness probe."""

from __future__ import annotations

import subprocess
import time

import pytest

from mlops_assets_tests.conftest import SYSTEM_CA_BUNDLE
from mlops_assets_tests.helm_chart import ROOT

pytestmark = pytest.mark.slow
TAG = "localhost/mlops-assets:test"
RUN_ARGS = ["--network", "host", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def test_user_code_image_builds_runs_non_root_and_serves_grpc(base_image: str) -> None:
    build = ["buildah", "bud", "--layers", "--network", "host", "--format", "oci",
             "--build-arg", f"BASE_IMAGE={base_image}", "-f", "deploy/Dockerfile", "-t", TAG]  # fmt: skip
    if SYSTEM_CA_BUNDLE.is_file():
        build += ["--secret", f"id=pip-ca,src={SYSTEM_CA_BUNDLE}"]
    built = subprocess.run([*build, "."], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    user = subprocess.run(["podman", "image", "inspect", "--format", "{{.Config.User}}", TAG],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert user == "10001"
    assert (
        "pip-ca"
        not in subprocess.run(
            ["podman", "run", "--rm", *RUN_ARGS, TAG, "ls", "/run/secrets"],
            capture_output=True,
            text=True,
        ).stdout
    ), "the build CA must not stay in the image"

    # The code location loads in the image: load_from_defs_folder finds the installed project.
    validated = subprocess.run(
        ["podman", "run", "--rm", *RUN_ARGS, TAG,
         "dagster", "definitions", "validate", "-m", "mlops_assets.definitions"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert validated.returncode == 0, validated.stdout[-3000:] + validated.stderr[-3000:]
    # The installed source is not writable by the runtime user.
    written = subprocess.run(
        ["podman", "run", "--rm", *RUN_ARGS, TAG, "touch", "/opt/dagster/project/mlops_assets/x"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert written.returncode != 0, "the runtime user can change the installed code"

    port = "39301"
    container = subprocess.run(
        ["podman", "run", "-d", "--rm", *RUN_ARGS, TAG,
         "dagster", "api", "grpc", "-h", "127.0.0.1", "-p", port, "-m", "mlops_assets.definitions"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        deadline, healthy = time.monotonic() + 120, None
        while time.monotonic() < deadline:
            healthy = subprocess.run(
                ["podman", "exec", container, "dagster", "api", "grpc-health-check", "-p", port],
                capture_output=True, text=True,
            )  # fmt: skip
            if healthy.returncode == 0:
                break
            time.sleep(2)
        logs = subprocess.run(["podman", "logs", container], capture_output=True, text=True)
        assert healthy is not None
        assert healthy.returncode == 0, logs.stdout[-2000:] + logs.stderr[-2000:]
        uid = subprocess.run(
            ["podman", "exec", container, "id", "-u"], capture_output=True, text=True
        )
        assert uid.stdout.strip() == "10001"
    finally:
        subprocess.run(["podman", "rm", "-f", container], capture_output=True)
