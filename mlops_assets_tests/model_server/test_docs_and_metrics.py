"""What a user of the served model sees besides its answers: the API's page (/docs, Swagger UI
served by the app itself) and its description (/openapi.json) of the model's own columns,
tried in headless Chromium; and Prometheus' metrics, scraped under load from a server of two
workers, adding up to the requests sent."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mlops_assets.ml.serving import v2_payload
from mlops_assets_tests.browser import browser
from mlops_assets_tests.model_server.served import (
    MODEL_NAME,
    asgi_request,
    features,
    payload,
    read_lines,
    scrape,
)


def openapi(served: Any) -> dict[str, Any]:
    status, text = served.get("/openapi.json")
    assert status == 200
    return dict(json.loads(text))


@pytest.mark.slow
def test_the_api_description_is_the_models_own_columns_and_answer(serve: Any) -> None:
    columns = list(features().columns)
    served = serve(MLOPS_TRAFFIC_LOG="off", MLFLOW_MODELS_WORKERS="1")
    document = openapi(served)
    assert document["info"]["title"] == f"{MODEL_NAME} version 7"
    operation = document["paths"]["/invocations"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    split, records = body["schema"]["oneOf"]
    assert split["properties"]["dataframe_split"]["properties"]["columns"]["items"]["enum"] == (
        columns
    )
    record = records["properties"]["dataframe_records"]["items"]
    assert list(record["properties"]) == columns
    assert {column["type"] for column in record["properties"].values()} == {"number"}
    assert record["required"] == columns
    # The page's example request is the model's own input example (its first rows).
    assert body["example"]["dataframe_split"]["columns"] == columns
    assert body["example"]["dataframe_split"]["data"][0] == pytest.approx(
        features().iloc[0].tolist()
    )
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer["properties"]["predictions"]["items"] == {"type": "number"}
    assert "/v2/models/{name}/infer" not in document["paths"]  # the other protocol's
    served.terminate()

    v2 = serve(MLOPS_TRAFFIC_LOG="off", MLFLOW_MODELS_WORKERS="1", MLOPS_SERVING_PROTOCOL="v2")
    document = openapi(v2)
    assert "/invocations" not in document["paths"]
    operation = document["paths"]["/v2/models/{name}/infer"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    tensor = body["schema"]["properties"]["inputs"]["items"]
    assert tensor["properties"]["name"]["enum"] == columns
    assert [i["name"] for i in body["example"]["inputs"]] == columns
    assert {i["datatype"] for i in body["example"]["inputs"]} == {"FP64"}
    outputs = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert outputs["properties"]["outputs"]["items"]["properties"]["name"]["enum"] == ["prediction"]
    v2.terminate()


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["mlflow", "v2"])
def test_the_docs_page_tries_a_prediction_in_a_browser(
    serve: Any, tmp_path: Path, protocol: str
) -> None:
    """/docs loads in headless Chromium with nothing from outside (Swagger UI's files are the
    app's own), and its "Try it out" sends the example request: the model answers it."""
    store = tmp_path / "store"
    served = serve(
        MLFLOW_MODELS_WORKERS="1", MLOPS_SERVING_PROTOCOL=protocol, MLOPS_TRAFFIC_STORE=str(store)
    )
    path = "/invocations" if protocol == "mlflow" else "/v2/models/{name}/infer"
    with browser(tmp_path / "profile", tmp_path) as page:
        page.open(f"{served.url}/docs")
        operation = page.wait_for(
            f"//*[contains(@class, 'opblock-summary-path')]//*[normalize-space(.)='{path}']"
            f" | //*[contains(@class, 'opblock-summary-path') and normalize-space(.)='{path}']",
            f"the operation {path} on the page",
        )
        title = page.wait_for(
            "//*[contains(@class, 'info')]//*[contains(@class, 'title')]", "title"
        )
        assert page.text(title).startswith(f"{MODEL_NAME} version 7")
        page.click(operation)
        page.click(page.wait_for("//button[contains(., 'Try it out')]", "Try it out"))
        if protocol == "v2":  # the path's model name: the one served
            field = page.wait_for("//input[@placeholder='name']", "the name field")
            page.type(field, MODEL_NAME)
        page.click(page.wait_for("//button[contains(., 'Execute')]", "Execute"))
        status = page.wait_for(
            "//table[contains(@class, 'live-responses-table')]"
            "//tbody//td[contains(@class, 'response-col_status')]",
            "the response",
        )
        assert page.text(status).strip().startswith("200"), page.text(status)
        shown = page.wait_for(
            "//table[contains(@class, 'live-responses-table')]//tbody"
            "//div[contains(@class, 'highlight-code')]//pre",
            "the response body",
        )
        answer = json.loads(page.text(shown))
    if protocol == "mlflow":
        assert len(answer["predictions"]) == 2  # the example's two rows
    else:
        assert answer["model_name"] == MODEL_NAME
        assert answer["outputs"][0]["shape"] == [2]
    served.terminate()
    # The page's request is in the traffic log, as any other: its two rows.
    assert [line["row"] for line in read_lines(store) if line["kind"] == "answer"] == [0, 1]


def _post(url: str, body: bytes) -> int:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.mark.slow
def test_metrics_under_load_add_up_to_the_requests_sent(serve: Any, tmp_path: Path) -> None:
    """Two workers, batching on, 16 requests at a time: whichever worker answers the scrape,
    the counts by route and status, the rows predicted, the requests in the model's calls and
    the traffic log's records are the server's and add up to what was sent."""
    served = serve(
        MLFLOW_MODELS_WORKERS="2",
        MLOPS_SERVING_BATCH="8",
        MLOPS_TRAFFIC_STORE=str(tmp_path / "store"),
        MLOPS_TRAFFIC_FLUSH_SECONDS="0.5",
    )
    rows = features()
    good = [payload(rows.iloc[i : i + 1 + i % 3]) for i in range(120)]  # 1 to 3 rows each
    ragged = json.dumps({"dataframe_split": {"columns": ["age", "sex"], "data": [[1.0]]}})
    bad = [ragged.encode()] * 7
    url = f"{served.url}/invocations"
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda body: _post(url, body), good + bad))
    assert statuses == [200] * len(good) + [400] * len(bad)

    for _ in range(6):  # scrapes reach either worker: the same totals
        metrics = scrape(served)
        by_status = {
            dict(labels)["status"]: value
            for (name, labels), value in metrics.items()
            if name == "mlops_http_requests_total" and dict(labels)["route"] == "/invocations"
        }
        assert by_status == {"200": len(good), "400": len(bad)}
        latency = {
            dict(labels)["status"]: value
            for (name, labels), value in metrics.items()
            if name == "mlops_http_request_duration_seconds_count"
            and dict(labels)["route"] == "/invocations"
        }
        assert latency == by_status
        assert metrics[("mlops_rows_predicted_total", ())] == sum(1 + i % 3 for i in range(120))
        # Each answered request was in exactly one call of the model; some calls held several.
        assert metrics[("mlops_prediction_batch_requests_sum", ())] == len(good)
        calls = metrics[("mlops_prediction_batch_requests_count", ())]
        assert calls <= len(good)
        assert metrics[("mlops_traffic_recorded_total", ())] == len(good) + len(bad)
        assert metrics[("mlops_traffic_dropped_total", ())] == 0
    print(f"{len(good)} requests predicted in {calls:.0f} calls of the model")

    v2 = json.dumps(v2_payload(rows.head(1))).encode()  # not this server's protocol
    assert _post(f"{served.url}/v2/models/{MODEL_NAME}/infer", v2) == 404
    unmatched = scrape(served)
    assert (
        unmatched[
            (
                "mlops_http_requests_total",
                (("method", "POST"), ("route", "unmatched"), ("status", "404")),
            )
        ]
        == 1
    )
    served.terminate()


@pytest.mark.parametrize(
    ("protocol", "method", "path", "route", "status"),
    [
        ("mlflow", "POST", "/invocations", "/invocations", "200"),
        ("v2", "POST", f"/v2/models/{MODEL_NAME}/infer", "/v2/models/{name}/infer", "200"),
        ("v2", "POST", "/v2/models/another/infer", "/v2/models/{name}/infer", "404"),
        ("mlflow", "GET", "/openapi.json", "/openapi.json", "200"),
        ("mlflow", "GET", "/docs", "/docs", "200"),
        ("mlflow", "GET", "/invocations", "/invocations", "405"),
        ("mlflow", "POST", "/v2/models/x/infer", "unmatched", "404"),
    ],
)
def test_a_request_is_counted_before_its_client_has_the_answer(
    diabetes_model: Path, protocol: str, method: str, path: str, route: str, status: str
) -> None:
    """A client that has its answer and then scrapes /metrics, maybe from another worker,
    finds the request counted: each route counts it before the answer's last part is sent.
    (Counted after it, a scrape on a second connection raced the count: the served-image test
    once read a V2 prediction's count as missing.)"""
    import asyncio

    import mlflow
    from prometheus_client.parser import text_string_to_metric_families

    from mlops_assets.model_server.app import ModelApp

    app = ModelApp(
        mlflow.pyfunc.load_model(str(diabetes_model)),
        None,
        30,
        protocol=protocol,
        model_name=MODEL_NAME,
        model_version="7",
    )
    rows = features().head(2)
    body = json.dumps(v2_payload(rows)).encode() if protocol == "v2" else payload(rows)
    labels = {"model_name": MODEL_NAME, "model_version": "7", "method": method,
              "route": route, "status": status}  # fmt: skip

    def counted() -> float:
        return sum(
            sample.value
            for family in text_string_to_metric_families(app.metrics.exposition().decode())
            for sample in family.samples
            if sample.name == "mlops_http_requests_total" and sample.labels == labels
        )

    seen: list[tuple[str, float]] = []

    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            seen.append(("status", message["status"]))
        elif not message.get("more_body", False):
            seen.append(("counted as the answer ends", counted()))

    asyncio.run(asgi_request(app, method, path, body, on_send=sending))
    assert seen == [("status", int(status)), ("counted as the answer ends", 1)]
    assert counted() == 1  # and once only
