"""The real Dagster daemon and webserver as subprocesses on a temporary DAGSTER_HOME."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_assets.demo import DAGSTER_YAML
from mlops_assets.stack.process import ServerProcess, free_port, wait_until
from mlops_assets.variables import all_settings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# What tests leave for a person to look at (CI keeps this folder): screenshots, timings.
ARTIFACTS = Path(os.environ.get("MLOPS_TEST_ARTIFACTS") or ROOT / "test-artifacts")


def project_env(home: Path, dagster_home: Path, **settings: str) -> dict[str, str]:
    """Every project setting at its default unless given, so the caller's shell cannot leak in."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    return {
        **{s.name: "" for s in all_settings()},
        "MLOPS_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "GIT_PYTHON_REFRESH": "quiet",
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        **settings,
    }


def daemon(env: dict[str, str], log: Path) -> ServerProcess:
    return ServerProcess(
        "dagster-daemon",
        [str(BIN / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
        log,
        env,
    )


def webserver(env: dict[str, str], log: Path) -> tuple[ServerProcess, str]:
    port = free_port()
    process = ServerProcess(
        "dagster-webserver",
        [
            str(BIN / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(ROOT / "workspace.yaml"),
        ],
        log,
        env,
    )
    return process, f"http://127.0.0.1:{port}"


def graphql(base: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """One GraphQL request to the webserver at ``base``; fails on any error it returns."""
    request = urllib.request.Request(
        f"{base}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        body = json.loads(response.read())
    assert "errors" not in body, body["errors"]
    return body["data"]


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float, logs: list[Path], interval: float = 1.0
) -> Any:
    """Poll until ``probe`` returns something truthy; on timeout, show the service logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    tails = []
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        tails.append(f"--- {log.name} ---\n" + "\n".join(text.splitlines()[-40:]))
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n" + "\n".join(tails))


__all__ = ["daemon", "project_env", "wait_for", "wait_until", "webserver"]
