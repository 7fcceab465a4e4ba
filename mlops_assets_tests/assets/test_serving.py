"""served_image with real parts: buildah builds MLflow's image from the debootstrapped base,
a real registry holds it, podman pulls and runs it, and it answers over HTTP."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.ml.estimator import model_input
from mlops_assets.ml.sample_data import generate_house_prices
from mlops_assets.ml.serving import (
    SERVING_PORT,
    TRAFFIC_STORE_IN_IMAGE,
    announced_batches,
    invocation_payload,
    v2_payload,
)
from mlops_assets.ml.spec import HOUSE_PRICES
from mlops_assets.ml.traffic import labels_day_prefix
from mlops_assets.resources.image_builder import (
    ImageBuilderResource,
    RunningContainer,
    wait_for_ping,
)
from mlops_assets.resources.oci_registry import ImageReference, RegistryClient
from mlops_assets.stack.process import free_port
from mlops_assets_tests.conftest import (
    LIFECYCLE_ASSETS,
    Lifecycle,
    check_evaluations,
    image_build_env,
    key,
    materialized,
    scope_of,
    step_failure,
)
from mlops_assets_tests.receivers import QuietHandler, loopback_http, untrusted_tls

pytestmark = pytest.mark.slow

MODEL = "house-price-regressor"


@pytest.fixture
def serving(
    trained: Lifecycle, base_image: str, oci_registry: Any, monkeypatch: pytest.MonkeyPatch
) -> Lifecycle:
    for name, value in image_build_env(base_image, f"{oci_registry.address}/mlops").items():
        monkeypatch.setenv(name, value)
    return trained


def record(state: Lifecycle) -> dict[str, Any] | None:
    path = state.home / "store" / "serving" / MODEL / "latest.json"
    return json.loads(path.read_text()) if path.exists() else None


def registry_client(oci_registry: Any) -> RegistryClient:
    return RegistryClient(ImageReference.parse(f"{oci_registry.address}/mlops/{MODEL}"), True)


def served_workers(image: str, run_args: str = "") -> tuple[int, set[str], list[str]]:
    """How many workers the image's scoring server starts under ``podman run run_args``, the
    OMP_NUM_THREADS its processes run with, and how many requests each worker said it predicts
    together; fails unless uvicorn's fast event loop and HTTP parser import in it."""
    builder = ImageBuilderResource()
    builder = ImageBuilderResource(container_run_args=f"{builder.container_run_args} {run_args}")
    container = builder.run("podman", image, SERVING_PORT, env={})
    try:
        wait_for_ping(container, 180)
        environments = container.exec(["sh", "-c", "cat /proc/[0-9]*/environ | tr '\\0' '\\n'"])
        container.exec(["python", "-c", "import httptools, uvloop"])
        announced = re.search(r"serving: (\d+) worker", container.log_tail(200))
        assert announced, container.log_tail(200)
        deadline = time.monotonic() + 120
        started = 0
        while started < int(announced.group(1)) and time.monotonic() < deadline:
            time.sleep(1)
            started = container.log_tail(200).count("Application startup complete")
        log = container.log_tail(200)
    finally:
        container.remove()
    threads = set(re.findall(r"^OMP_NUM_THREADS=(\d+)$", environments, re.MULTILINE))
    return started, threads, [str(batch) for batch, _ in announced_batches(log)]


def the_apps_pages(image: str, protocol: str) -> dict[str, Any]:
    """What the image's app serves besides answers, under ``protocol``: its API page and the
    Swagger UI files it loads, its OpenAPI document, a prediction, and then /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    container = ImageBuilderResource().run(
        "podman", image, SERVING_PORT, env={"MLOPS_SERVING_PROTOCOL": protocol}
    )
    try:
        wait_for_ping(container, 180)

        def get(path: str) -> bytes:
            with urllib.request.urlopen(f"{container.url}{path}", timeout=30) as response:
                return bytes(response.read())

        page = get("/docs").decode()
        bundle = get("/docs/swagger-ui-bundle.js")
        document = json.loads(get("/openapi.json"))
        rows = model_input(generate_house_prices(3, seed=5), HOUSE_PRICES)
        path, body = (
            (f"/v2/models/{MODEL}/infer", v2_payload(rows))
            if protocol == "v2"
            else ("/invocations", invocation_payload(rows))
        )
        request = urllib.request.Request(
            f"{container.url}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        metrics = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(get("/metrics").decode())
            for sample in family.samples
        }
    finally:
        container.remove()
    return {"page": page, "bundle": bundle, "openapi": document, "path": path,
            "answer": answer, "metrics": metrics}  # fmt: skip


def test_champion_is_built_pushed_pulled_and_answers_like_in_process(
    serving: Lifecycle, oci_registry: Any
) -> None:
    result = serving.run("serve_champion", partition=None)
    assert result.success, step_failure(result, "served_image")
    metadata = materialized(result)["served_image"]
    digest = metadata["digest"].value
    assert digest.startswith("sha256:")
    assert metadata["tag"].value == "v1"
    assert metadata["model_version"].value == "1"
    assert metadata["base_image"].value == "localhost/mlops-test-base:bookworm"
    assert metadata["size_bytes"].value > 50_000_000
    assert metadata["built"].value is True
    # The registry itself names the recorded digest under the version tag.
    assert registry_client(oci_registry).manifest_digest("v1") == digest
    assert record(serving)["digest"] == digest  # type: ignore[index]

    checks = check_evaluations(result)
    for name in ("image_exists_at_digest", "serves_champion_predictions", "runs_as_non_root"):
        assert checks[("served_image", name)].passed, checks[("served_image", name)].description
    smoke = checks[("served_image", "serves_champion_predictions")]
    assert "20 predictions match" in smoke.description
    assert "uid 10001" in checks[("served_image", "runs_as_non_root")].description
    # The smoke test says what the image's workers do under load: the default tree model's
    # requests are predicted up to 16 together.
    assert smoke.metadata["requests_predicted_together"].value == 16
    assert smoke.metadata["batching"].value.startswith("auto: every step answers each row")

    # The image's own labels say which model version it serves.
    labels = json.loads(
        subprocess.run(
            [
                "podman",
                "image",
                "inspect",
                "--format",
                "{{json .Labels}}",
                f"{oci_registry.address}/mlops/{MODEL}@{digest}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert labels["org.mlops-assets.model-version"] == "1"

    # One scoring worker per CPU the container may use: its CPU limit, else the machine's;
    # a native thread each, on uvicorn's fast event loop and HTTP parser. The champion is the
    # default tree model: each worker predicts up to 16 waiting requests together.
    image = f"{oci_registry.address}/mlops/{MODEL}@{digest}"
    assert served_workers(image, "--cpus 1") == (1, {"1"}, ["16"])
    cpus = len(os.sched_getaffinity(0))
    assert served_workers(image) == (cpus, {"1"}, ["16"] * cpus)

    # Its app's page, API description and metrics, under both protocols: Swagger UI's files
    # come from the image itself; the description names the model's own columns; /metrics
    # counts the prediction, labelled with the model's name and version.
    columns = list(model_input(generate_house_prices(1, seed=5), HOUSE_PRICES).columns)
    for protocol in ("mlflow", "v2"):
        pages = the_apps_pages(image, protocol)
        assert "/docs/swagger-ui-bundle.js" in pages["page"]
        assert len(pages["bundle"]) > 1_000_000
        operation = pages["openapi"]["paths"][pages["path"].replace(MODEL, "{name}")]["post"]
        example = operation["requestBody"]["content"]["application/json"]["example"]
        named = (
            [tensor["name"] for tensor in example["inputs"]]
            if protocol == "v2"
            else example["dataframe_split"]["columns"]
        )
        assert named == columns
        answered = (
            pages["answer"]["outputs"][0]["data"]
            if protocol == "v2"
            else (pages["answer"]["predictions"])
        )
        assert len(answered) == 3
        route = pages["path"].replace(MODEL, "{name}")
        labels = (("method", "POST"), ("model_name", MODEL), ("model_version", "1"),
                  ("route", route), ("status", "200"))  # fmt: skip
        assert pages["metrics"][("mlops_http_requests_total", labels)] == 1
        assert (
            pages["metrics"][
                ("mlops_rows_predicted_total", (("model_name", MODEL), ("model_version", "1")))
            ]
            == 3
        )

    # An unchanged champion builds nothing new: same digest, no build, registry untouched.
    again = serving.run("serve_champion", partition=None)
    assert again.success
    metadata = materialized(again)["served_image"]
    assert metadata["built"].value is False
    assert metadata["digest"].value == digest
    assert all(e.passed for e in check_evaluations(again).values())


def test_unreachable_registry_is_retried_then_fails_and_the_last_good_image_stays(
    serving: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = serving.run("serve_champion", partition=None)
    assert first.success, step_failure(first, "served_image")
    good = record(serving)

    closed = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLOPS_IMAGE_REGISTRY", f"{closed}/mlops")
    result = serving.run("serve_champion", partition=None)
    assert not result.success
    message = step_failure(result, "served_image")
    assert closed in message
    assert "connection refused" in message.lower() or "unreachable" in message.lower()
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 3
    assert record(serving) == good


def test_an_untrusted_package_index_fails_at_once_naming_the_setting_and_keeps_the_image(
    serving: Lifecycle, base_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The build's pip meets a certificate it does not trust (behind a TLS-intercepting proxy,
    without MLOPS_IMAGE_BUILD_CA_BUNDLE): a setting to fix, so served_image fails at once,
    with no retries, says what to set, and the last good image stays served."""
    first = serving.run("serve_champion", partition=None)
    assert first.success, step_failure(first, "served_image")
    good = record(serving)

    with loopback_http(QuietHandler, untrusted_tls(tmp_path)) as port:
        # A base whose pip asks that index (as a proxy's would), and gives up at once.
        base = f"localhost/mlops-test/untrusted-index-base:{port}"
        context = tmp_path / "base"
        context.mkdir()
        (context / "Dockerfile").write_text(
            f"FROM {base_image}\nRUN printf '[global]\\nindex-url = "
            f"https://127.0.0.1:{port}/simple\\nretries = 0\\n' > /etc/pip.conf\n"
        )
        subprocess.run(
            ["buildah", "bud", "-q", "-t", base, str(context)], check=True, capture_output=True
        )
        try:
            monkeypatch.setenv("MLOPS_IMAGE_BASE", base)
            monkeypatch.setenv("MLOPS_IMAGE_BUILD_CA_BUNDLE", "")
            result = serving.run("serve_champion", partition=None)
        finally:
            subprocess.run(["buildah", "rmi", base], capture_output=True)
    assert not result.success
    message = step_failure(result, "served_image")
    assert "set MLOPS_IMAGE_BUILD_CA_BUNDLE" in message
    assert 'building at STEP "RUN' in message
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries == []
    assert record(serving) == good


def test_a_base_image_that_cannot_be_pulled_fails_at_once_naming_the_setting(
    trained: Lifecycle, container_tools: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve_champion where the base image's registry cannot be reached, as a public one is
    from a machine without internet (here a host no resolver knows): buildah's pull fails,
    and served_image fails at once, its message ending with what failed, the setting and the
    README's paragraph; nothing is recorded as served."""
    base = "nonexistent.invalid/library/python:3.11-slim"
    monkeypatch.setenv("MLOPS_IMAGE_BUILDER", "buildah")
    monkeypatch.setenv("MLOPS_IMAGE_BASE", base)
    result = trained.run("serve_champion", partition=None)
    assert not result.success
    *said, last = step_failure(result, "served_image").splitlines()
    assert said[-1].startswith("Error: creating build container: "), said
    assert "nonexistent.invalid" in said[-1]
    assert last.startswith(
        f"(the base image {base} could not be pulled from its registry: set MLOPS_IMAGE_BASE "
    ), last
    assert 'the README\'s "No public registry?"' in last
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries == []
    assert record(trained) is None


def _tiny_server_image(tmp_path: Path, base_image: str, tag: str, script: str) -> str:
    """An image FROM the test base whose process is ``script`` (a stand-in server)."""
    context = tmp_path / tag.replace("/", "_").replace(":", "_")
    context.mkdir()
    (context / "server.py").write_text(script)
    (context / "Dockerfile").write_text(
        f"FROM {base_image}\nCOPY server.py /srv/server.py\nUSER 10001\n"
        'ENTRYPOINT ["python3", "/srv/server.py"]\n'
    )
    subprocess.run(
        ["buildah", "bud", "-q", "-t", tag, str(context)], check=True, capture_output=True
    )
    return tag


WRONG_ANSWERS = """
import http.server, json
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"\\n")
    def do_POST(self):
        rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({"predictions": [123.0] * len(rows["dataframe_split"]["data"])})
        self.send_response(200); self.end_headers(); self.wfile.write(body.encode())
http.server.HTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"""

NEVER_READY = """
import sys, time
print("loading model ... stuck on a missing dependency", flush=True)
time.sleep(3600)
"""


def _replace_served_image(state: Lifecycle, oci_registry: Any, local_tag: str) -> dict[str, Any]:
    """Fault injection: the registry's v1 and the record now name another image (as if the
    tag had been overwritten by hand). The recipe is unchanged, so nothing is rebuilt."""
    current = record(state)
    assert current is not None
    destination = f"{oci_registry.address}/mlops/{MODEL}:v1"
    digest_file = state.home / "digest"
    subprocess.run(
        [
            "buildah",
            "push",
            "--tls-verify=false",
            "--digestfile",
            str(digest_file),
            local_tag,
            f"docker://{destination}",
        ],
        check=True,
        capture_output=True,
    )
    digest = digest_file.read_text().strip()
    replaced = {
        **current,
        "digest": digest,
        "reference": f"{oci_registry.address}/mlops/{MODEL}@{digest}",
    }
    path = state.home / "store" / "serving" / MODEL / "latest.json"
    path.write_text(json.dumps(replaced))
    return replaced


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (WRONG_ANSWERS, "20 of 20 predictions differ"),
        (NEVER_READY, "stuck on a missing dependency"),
    ],
    ids=["wrong-answers", "never-ready"],
)
def test_a_container_that_answers_wrongly_or_not_at_all_fails_the_smoke_test(
    serving: Lifecycle,
    oci_registry: Any,
    base_image: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    script: str,
    expected: str,
) -> None:
    import mlops_assets.components.lifecycle.serving.image as serving_module

    first = serving.run("serve_champion", partition=None)
    assert first.success, step_failure(first, "served_image")
    tag = f"localhost/mlops-fault/{'wrong' if script is WRONG_ANSWERS else 'stuck'}:1"
    _replace_served_image(
        serving, oci_registry, _tiny_server_image(tmp_path, base_image, tag, script)
    )
    monkeypatch.setattr(serving_module, "SMOKE_PING_TIMEOUT", 15.0)

    result = serving.run("serve_champion", partition=None)
    smoke = check_evaluations(result)[("served_image", "serves_champion_predictions")]
    assert not smoke.passed
    assert expected in smoke.description
    if script is WRONG_ANSWERS:
        assert "123.0" in smoke.description  # the response itself is in the message


def test_without_any_builder_only_served_image_fails_and_says_how_to_enable_one(
    lifecycle: Lifecycle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import AssetSelection, Definitions, define_asset_job

    from mlops_assets.definitions import build_definitions

    no_tools = tmp_path / "bin"
    no_tools.mkdir()
    monkeypatch.setenv("PATH", str(no_tools))
    monkeypatch.setenv("LOKY_MAX_CPU_COUNT", "2")  # joblib would look for `cat`
    everything = define_asset_job("everything", selection=AssetSelection.groups("house_prices"))
    base = build_definitions()
    defs = Definitions(
        assets=list(base.assets or []),
        asset_checks=list(base.asset_checks or []),
        jobs=[everything],
        resources=base.resources,
    )
    result = defs.resolve_job_def("everything").execute_in_process(
        partition_key="2026-11-20", instance=lifecycle.instance, raise_on_error=False
    )

    message = step_failure(result, "served_image")
    assert "looked for docker, buildah, podman" in message
    assert "apt-get install buildah podman runc" in message
    assert "MLOPS_IMAGE_BUILDER=kaniko" in message
    retries = [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries == []  # a missing builder is not a transient fault
    # The rest materialises; served_traffic too, as the day's empty table (nothing served),
    # and its drift report, which has nothing to compare.
    assert set(materialized(result)) == LIFECYCLE_ASSETS | {
        "served_traffic",
        "traffic_drift_report",
    }
    assert lifecycle.state()["aliases"] == {"challenger": "1", "champion": "1"}


def test_without_a_registry_the_image_is_an_oci_archive_in_the_object_store(
    serving: Lifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLOPS_IMAGE_REGISTRY", "")
    result = serving.run("serve_champion", partition=None)
    assert result.success, step_failure(result, "served_image")
    metadata = materialized(result)["served_image"]
    saved = record(serving)
    assert saved is not None
    archive = serving.home / "store" / saved["archive_key"]
    assert archive.stat().st_size == metadata["size_bytes"].value
    # The archive's own index names the recorded digest.
    import tarfile

    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["digest"] == metadata["digest"].value
    # ... and its name, so that `podman load` names the image after the model and version.
    name = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    assert name == f"{MODEL}:v{metadata['model_version'].value}"
    checks = check_evaluations(result)
    for name in ("image_exists_at_digest", "serves_champion_predictions", "runs_as_non_root"):
        assert checks[("served_image", name)].passed, checks[("served_image", name)].description


# --- the traffic log of the real image ----------------------------------------------------


def run_image(
    image: str, env: dict[str, str], secret_env: dict[str, str], store: Path | None = None
) -> RunningContainer:
    """Run ``image`` on the host's network (SeaweedFS listens on loopback) with its server on a
    free port and ``store`` mounted where it logs traffic by default; ``secret_env`` reaches
    the container by name, never on a command line."""
    port = free_port()
    command = ["podman", "run", "--detach", "--network", "host",
               *shlex.split(ImageBuilderResource().container_run_args),
               "--env", f"MLOPS_SERVING_PORT={port}", "--env", "MLOPS_TRAFFIC_FLUSH_SECONDS=1"]  # fmt: skip
    for name, value in env.items():
        command += ["--env", f"{name}={value}"]
    for secret in secret_env:
        command += ["--env", secret]
    if store is not None:
        command += ["--volume", f"{store}:{TRAFFIC_STORE_IN_IMAGE}"]
    started = subprocess.run(
        [*command, image], capture_output=True, text=True, env={**os.environ, **secret_env}
    )
    assert started.returncode == 0, started.stderr
    container = RunningContainer("podman", started.stdout.strip().splitlines()[-1], port)
    wait_for_ping(container, 180)
    return container


def send_traffic(
    container: RunningContainer, label: str, requests_sent: int = 40, drift: bool = False
) -> dict[str, Any]:
    """Concurrent requests of one or two rows (of the drifted sample data with ``drift``),
    each with its own id, and two bad ones; returns each good request's rows (with their true
    price, which is not sent) and answer."""
    rows = generate_house_prices(2 * requests_sent, seed=11, drift=drift)
    requests = {f"{label}-{i}": rows.iloc[i * 2 : i * 2 + 1 + i % 2] for i in range(requests_sent)}

    def post(request_id: str, body: bytes) -> tuple[int, str]:
        request = urllib.request.Request(
            f"{container.url}/invocations",
            data=body,
            headers={"Content-Type": "application/json", "X-Request-ID": request_id},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def send(item: tuple[str, Any]) -> tuple[str, int, str]:
        request_id, frame = item
        payload = invocation_payload(model_input(frame, HOUSE_PRICES))
        return (request_id, *post(request_id, json.dumps(payload).encode()))

    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(send, requests.items()))
    assert {status for _, status, _ in answered} == {200}, answered[:3]
    missing = post(f"{label}-bad-columns", json.dumps(invocation_payload(rows[["area"]])).encode())
    typed = post(
        f"{label}-bad-types",
        json.dumps(invocation_payload(rows.head(1).assign(area="big"))).encode(),
    )
    assert (missing[0], typed[0]) == (400, 400), (missing, typed)
    return {rid: (requests[rid], json.loads(body)["predictions"]) for rid, _, body in answered}


def assert_logged_once(lines: list[dict[str, Any]], sent: dict[str, Any], label: str) -> None:
    answers = [line for line in lines if line["kind"] == "answer"]
    keys = [(line["request_id"], line["row"]) for line in answers]
    assert len(keys) == len(set(keys)), "a row was logged twice"
    assert set(keys) == {
        (rid, row) for rid, (frame, _) in sent.items() for row in range(len(frame))
    }
    for line in answers:
        frame, predictions = sent[line["request_id"]]
        assert line["prediction"] == predictions[line["row"]]
        assert line["inputs"]["area"] == pytest.approx(frame.iloc[line["row"]]["area"])
        assert (line["model_name"], line["model_version"]) == (MODEL, "1")
    errors = {line["request_id"]: line for line in lines if line["kind"] == "error"}
    assert set(errors) == {f"{label}-bad-columns", f"{label}-bad-types"}
    assert all(line["status"] == 400 for line in errors.values())
    assert not [line for line in lines if line["kind"] == "dropped"]


def collect_traffic(state: Lifecycle, day: str, only: str | None = None) -> Any:
    """The collect_traffic assets (or ``only`` one) for ``day``, which may be today: the
    shipped partitions end with the day that ended, so these run on partitions that include
    today."""
    import dataclasses

    from dagster import Definitions

    from mlops_assets.components.lifecycle.traffic.assets import build_traffic_assets
    from mlops_assets.definitions import build_resources

    model = dataclasses.replace(scope_of({}), partitions_start=day, partitions_end_offset=1)
    defs = build_traffic_assets(model)
    job = Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, resources=build_resources()
    ).resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=state.instance,
        partition_key=day,
        raise_on_error=False,
        asset_selection=[key(only)] if only else None,
    )


def test_the_served_image_logs_every_answered_request_once_across_sigterm(
    serving: Lifecycle, seaweed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = serving.run("serve_champion", partition=None)
    assert result.success, step_failure(result, "served_image")
    image = materialized(result)["served_image"]["reference"].value

    # The local store: the project's own store, mounted where the image writes by default
    # (as the README shows). The requests are a drifted stream.
    store = serving.home / "store"
    os.chown(store, 10001, 10001)  # the server's user; rootless podman: --userns keep-id
    container = run_image(image, {}, {}, store)
    try:
        sent = send_traffic(container, "local", requests_sent=80, drift=True)
        assert container.stop() in (0, 143), container.log_tail()
        assert container.log_tail(400).count("Application shutdown complete") >= 1
    finally:
        container.remove()
    files = sorted(store.glob(f"traffic/{MODEL}/date=*/*.jsonl"))
    assert files, container.log_tail()
    assert_logged_once([json.loads(line) for f in files for line in f.read_text().splitlines()],
                       sent, "local")  # fmt: skip
    # served_traffic and traffic_drift_report materialise from it, with the true prices as
    # late labels: every request, the refusals; drift, and quality below the champion's.
    day = files[0].parent.name.removeprefix("date=")
    labels = [
        (request_id, row, price)
        for request_id, (frame, _) in sent.items()
        for row, price in enumerate(frame["price"])
    ]
    folder = store / labels_day_prefix(MODEL, day)
    folder.mkdir(parents=True)
    (folder / "prices.csv").write_text(
        "request_id,row,price\n" + "".join(f"{i},{r},{p}\n" for i, r, p in labels)
    )
    result = collect_traffic(serving, day)
    assert result.success
    traffic = materialized(result)["served_traffic"]
    assert (traffic["requests_answered"].value, traffic["requests_refused"].value) == (80, 2)
    assert traffic["rows"].value == traffic["labelled_rows"].value == len(labels)
    checks = check_evaluations(result)
    assert checks[("served_traffic", "traffic_matches_signature")].passed
    assert checks[("served_traffic", "refused_share_below_threshold")].passed
    drift = checks[("traffic_drift_report", "drift_share_below_threshold")]
    quality = checks[("traffic_drift_report", "quality_not_degraded")]
    assert not drift.passed, drift.description
    assert not quality.passed, quality.description
    assert quality.description.startswith("traffic rmse ")
    assert serving.state()["aliases"]["champion"] == "1"

    # SeaweedFS: credentials from the environment, as the rollout gives them from its Secret.
    secrets = {k: v for k, v in seaweed.env().items() if k.startswith("AWS_")}
    settings = {k: v for k, v in seaweed.env().items() if not k.startswith("AWS_")}
    prefix = f"traffic-proof-{os.getpid()}"
    container = run_image(
        image, {**settings, "MLOPS_TRAFFIC_STORE": f"s3://{seaweed.bucket}/{prefix}"}, secrets
    )
    try:
        sent = send_traffic(container, "s3")
        assert container.stop() in (0, 143), container.log_tail()
        log = container.log_tail(400)
    finally:
        container.remove()
    assert secrets["AWS_SECRET_ACCESS_KEY"] not in log
    client = seaweed.client()
    listed = client.list_objects_v2(Bucket=seaweed.bucket, Prefix=f"{prefix}/traffic/{MODEL}/")
    keys = [item["Key"] for item in listed.get("Contents", [])]
    lines = [
        json.loads(line)
        for key in keys
        for line in client.get_object(Bucket=seaweed.bucket, Key=key)["Body"].read().splitlines()
    ]
    assert_logged_once(lines, sent, "s3")
    # served_traffic reads the day from the bucket as the project's S3 object store.
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLOPS_OBJECT_STORE_ROOT", f"s3://{seaweed.bucket}/{prefix}")
    s3_day = keys[0].split("date=")[1].split("/")[0]
    from_s3 = collect_traffic(serving, s3_day, only="served_traffic")
    assert from_s3.success
    collected = materialized(from_s3)["served_traffic"]
    assert (collected["requests_answered"].value, collected["requests_refused"].value) == (40, 2)
    assert str(collected["table"].value).startswith(f"s3://{seaweed.bucket}/{prefix}/")
