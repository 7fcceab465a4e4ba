"""The UI a team uses, with the real `dagster-webserver` (and daemon) in subprocesses.

GraphQL lists every asset and check of the graph; "Materialize all", launched the way the UI
launches it, materialises the whole graph (served_image included: a real image build); and
headless Chromium, driven through chromedriver's WebDriver HTTP API, saves a screenshot of the
asset graph page as a test artifact.
"""

from __future__ import annotations

import base64
import struct
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mlops_assets_tests.browser import browser
from mlops_assets_tests.conftest import (
    MODEL,
    PARTITION,
    TEST_INCOMING,
    TEST_SOURCE,
    image_build_env,
)
from mlops_assets_tests.dagster_services import (
    ARTIFACTS,
    daemon,
    graphql,
    project_env,
    wait_for,
    wait_until,
    webserver,
)
from mlops_assets_tests.test_definitions import EXPECTED_CHECKS, MODELS

pytestmark = pytest.mark.slow

LOCATION = "mlops_assets"
REPOSITORY = "__repository__"


ASSETS_AND_CHECKS = """
{
  assetNodes {
    assetKey { path }
    isPartitioned
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
  repositoryOrError(repositorySelector: {repositoryName: "__repository__",
                                         repositoryLocationName: "mlops_assets"}) {
    ... on Repository { jobs { name } sensors { name } schedules { name } }
  }
}
"""

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUN = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run { status assetMaterializations { assetKey { path } } }
  }
}
"""


def materialize_all(base: str, asset_job: str) -> str:
    """What the UI's "Materialize all" sends from the house-price model's group: the implicit
    asset job, every asset and check of the group, and the partition picked in its dialog."""
    params = {
        "selector": {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "jobName": asset_job,
            "assetSelection": [{"path": [MODEL, asset]} for asset in sorted(EXPECTED_CHECKS)],
            "assetCheckSelection": [
                {"assetKey": {"path": [MODEL, asset]}, "name": check}
                for asset, checks in sorted(EXPECTED_CHECKS.items())
                for check in sorted(checks)
            ],
        },
        "mode": "default",
        "runConfigData": {},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": PARTITION}]},
    }
    result = graphql(base, LAUNCH, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return str(result["run"]["runId"])


# --- headless Chromium (mlops_assets_tests/browser.py) --------------------------------------


def node_label(asset: str) -> str:
    """XPath of an asset's label in the graph: its name, or (zoomed out) the name shortened
    in the middle as the UI does it ("traffic_dr…_report")."""
    head, tail = asset[:6], asset[-6:]
    return (
        f"//*[text()='{asset}' or (contains(text(), '\u2026') and starts-with(text(), '{head}') "
        f"and substring(text(), string-length(text()) - 5) = '{tail}')]"
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def screenshot_asset_graph(ui: str, tmp_path: Path, logs: Path) -> Path:
    with browser(tmp_path / "chromium-profile", logs) as page:
        # A fresh instance greets its first visitor with a dialog; mark it seen, as its Skip
        # button does, so it cannot cover the graph.
        graphql(ui, "mutation { setNuxSeen }")
        page.open(f"{ui}/asset-groups")
        ui_logs = [logs / "webserver.log"]
        wait_for("the asset groups", lambda: page.find(f"//*[text()='{MODEL}']"), 90, ui_logs)
        # Groups start collapsed; Alt+E is the graph's "expand all groups" shortcut.
        alt = "\ue00a"
        keys = [
            {"type": "keyDown", "value": alt},
            {"type": "keyDown", "value": "e"},
            {"type": "keyUp", "value": "e"},
            {"type": "keyUp", "value": alt},
        ]
        page.call(
            "POST", "/actions", {"actions": [{"type": "key", "id": "keyboard", "actions": keys}]}
        )
        wait_for(
            "the asset graph to show every asset",
            lambda: all(page.find(node_label(asset)) for asset in EXPECTED_CHECKS),
            60,
            ui_logs,
        )
        time.sleep(2)  # let the graph finish its layout animation
        png = base64.b64decode(page.call("GET", "/screenshot"))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    target = ARTIFACTS / "asset_graph.png"
    target.write_bytes(png)
    width, height = png_size(png)
    assert width >= 1000, (width, height)
    assert height >= 600, (width, height)
    assert len(png) > 30_000, "the screenshot looks empty"
    return target


def test_webserver_lists_the_graph_materializes_all_and_renders_it(
    tmp_path: Path, base_image: str, oci_registry: Any
) -> None:
    dagster_home, logs = tmp_path / "dagster_home", tmp_path / "logs"
    env = project_env(
        tmp_path / "mlops",
        dagster_home,
        MLOPS_SOURCE_URI=TEST_SOURCE,
        MLOPS_INCOMING_URI=TEST_INCOMING,
        **image_build_env(base_image, f"{oci_registry.address}/webserver-test"),
    )
    from dagster import DagsterInstance

    DagsterInstance.from_config(str(dagster_home)).dispose()  # databases first, then servers
    server, ui = webserver(env, logs / "webserver.log")
    runner = daemon(env, logs / "daemon.log")  # the queued "Materialize all" run needs it
    server.start()
    runner.start()
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"{ui}/server_info", timeout=5).status == 200,
            "dagster-webserver",
            180,
            server.log,
        )

        def graph_listed() -> dict[str, Any] | None:
            data = graphql(ui, ASSETS_AND_CHECKS)
            return data if data["assetNodes"] else None

        data = wait_for("the code location to load", graph_listed, 180, [server.log])

        # 1. Every asset and check of both models' graphs, as the UI lists them.
        listed = {
            "/".join(node["assetKey"]["path"]): {
                c["name"] for c in node["assetChecksOrError"]["checks"]
            }
            for node in data["assetNodes"]
        }
        assert listed == {
            f"{model}/{asset}": checks
            for model in MODELS
            for asset, checks in EXPECTED_CHECKS.items()
        }
        partitioned = {
            "/".join(n["assetKey"]["path"]) for n in data["assetNodes"] if n["isPartitioned"]
        }
        assert partitioned == {
            f"{model}/{asset}"
            for model in MODELS
            for asset in ("predictions", "drift_report", "served_traffic", "traffic_drift_report")
        }
        repository = data["repositoryOrError"]
        assert {"asset_check_alerts", f"{MODEL}_drift_policy"} <= {
            s["name"] for s in repository["sensors"]
        }
        assert {s["name"] for s in repository["schedules"]} == {
            f"{model}_{schedule}"
            for model in MODELS
            for schedule in ("daily_scoring", "periodic_retrain", "daily_traffic")
        }

        # 2. "Materialize all" succeeds.
        asset_job = next(
            j["name"] for j in repository["jobs"] if j["name"].startswith("__ASSET_JOB")
        )
        run_id = materialize_all(ui, asset_job)

        def run_finished() -> dict[str, Any] | None:
            run = graphql(ui, RUN, {"runId": run_id})["runOrError"]
            return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

        run = wait_for(
            "the Materialize all run to finish",
            run_finished,
            900,
            [server.log, logs / "daemon.log"],
            interval=3,
        )
        assert run["status"] == "SUCCESS", f"run {run_id} ended {run['status']}"
        materialized = {m["assetKey"]["path"][-1] for m in run["assetMaterializations"]}
        assert {m["assetKey"]["path"][0] for m in run["assetMaterializations"]} == {MODEL}
        # No cluster here: model_deployment skips itself (its own tests cover the rollout);
        # no model was served, so served_traffic is the day's empty table (its drift report
        # compares nothing).
        assert materialized == set(EXPECTED_CHECKS) - {"model_deployment"}

        # 3. The asset graph page, rendered by headless Chromium.
        shot = screenshot_asset_graph(ui, tmp_path, logs)
        print(f"\nasset graph screenshot: {shot}")
    finally:
        runner.stop()
        server.stop()
