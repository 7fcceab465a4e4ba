"""The app of one worker: FastAPI routes around MLflow's scoring function, the traffic log and
the metrics.

Answers are MLflow's own (``mlflow.pyfunc.scoring_server.invocations``), byte for byte (where
requests' rows are read together, by the same function's reading and writing); with
``MLOPS_SERVING_PROTOCOL=v2`` the same function answers the Open Inference Protocol's
``infer`` (:mod:`.v2`). ``/docs`` is Swagger UI, served by the app itself (no CDN), over
``/openapi.json``, which describes the model's own columns and answer (:mod:`.openapi`);
``/metrics`` is Prometheus' (:mod:`.metrics`). Routes:

- both protocols: ``GET /ping``, ``/health``, ``/version``, ``/metrics``, ``/docs``,
  ``/openapi.json``;
- ``mlflow`` (the default): ``POST /invocations``;
- ``v2``: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/<name>[/versions/<v>]`` (metadata), ``.../ready``; ``POST .../infer``.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.exceptions import HTTPException

from . import openapi
from .batching import BATCHING_LINE, Batcher, PredictAlone, batch_for_model
from .limits import (
    IGNORED_COLUMNS_HEADER,
    JSON,
    RequestRefused,
    bad_request,
    ignored_columns_header,
    json_document,
    rows_without_values,
    too_large,
)
from .logs import Throttle, log, named, rows_named
from .metrics import CONTENT_TYPE, Counted, Metrics, RequestMetrics
from .record import ERROR_BODY_LIMIT, Exchange, error_message
from .settings import (
    MAX_BODY_BYTES,
    MODEL_PATH,
    TrafficSettings,
    max_body_bytes,
    serving_batch,
    serving_protocol,
)
from .traffic_log import JOURNAL_DIR_ENV, TrafficLog
from .v2 import V2RequestError, v2_metadata, v2_response, v2_to_dataframe_split

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SERVER_NAME = "mlops-model-server"
# Swagger UI's files, as the fastapi-swagger package ships them (Swagger UI 5: OpenAPI 3.1).
SWAGGER_PACKAGE = "fastapi_swagger.resources"
SWAGGER_FILES = {"swagger-ui-bundle.js": "application/javascript", "swagger-ui.css": "text/css"}


class _RecordingModel:
    """The served model as MLflow's scoring function sees it for one request, keeping the rows
    it was given; with a batcher, they are predicted there. A table with a row of no values at
    all is refused here, before the model (it would be scored); the columns the model does not
    take (MLflow drops them without a word) are noted."""

    def __init__(
        self,
        model: Any,
        batcher: Batcher | None = None,
        columns: frozenset[str] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._model = model
        self._batcher = batcher
        self._metrics = metrics
        self._columns = columns  # the signature's, if it names them
        self.metadata = model.metadata
        self.inputs: Any = None
        self.ignored: tuple[str, ...] = ()
        self.refused = ""  # why the rows were refused (MLflow's function wraps the exception)
        self.abandoned = threading.Event()  # the client was answered 504
        self.arrived: threading.Event | None = None  # see Batcher.coming
        self.alone = False  # its rows failed with others': predicted in a call of their own

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        self.inputs = data
        if isinstance(data, pd.DataFrame):
            empty = rows_without_values(data)
            if empty:
                verb = "has" if len(empty) == 1 else "have"
                self.refused = f"{rows_named(empty)} {verb} no values (all null): nothing to score"
                raise RequestRefused(self.refused)
            if self._columns is not None:
                self.ignored = tuple(str(c) for c in data.columns if str(c) not in self._columns)
        if self._batcher is None:
            if self._metrics is not None:
                self._metrics.batches.observe(1)
            return self._model.predict(data, params=params)
        return self._batcher.predict(data, params, self.abandoned, self.arrived, self.alone)


@dataclass(frozen=True)
class Answer:
    """What a request is answered (status, content and its type, as MLflow's function words
    them), and what its scoring learnt: a V2 request's ``id``, the columns the model ignored."""

    status: int
    content: str
    mimetype: str = JSON
    v2_id: str | None = None
    ignored_columns: tuple[str, ...] = ()


class ModelApp:
    """The ASGI app of one worker: answers with MLflow's scoring function, logs what it answers,
    counts it.

    Requests are scored on one thread of their own, one at a time in order of arrival, while
    the event loop keeps reading requests and answering probes. MLflow's scoring (JSON, pandas,
    scikit-learn) holds the GIL for nearly all of a request, so several scoring threads in a
    worker (MLflow's server runs each request on asyncio's default pool) only take turns at
    it: every request in flight finishes later and the turns cost time of their own. The
    parallelism is the workers', one per CPU. At 16 connections this took the p99 to about
    0.7x of asyncio's pool of six (the README's serving benchmark). A request that times out
    is answered 504 at once; one still waiting for the thread is never scored, one being
    scored finishes first.

    With ``batch`` above 1 (:func:`batch_for_model`), up to that many requests are scored at once
    by MLflow's function, each on a thread of its own, and a :class:`Batcher` makes their
    predictions one call at a time, together where it can; a plain ``dataframe_split``
    request's rows are read there too, with the others' (:meth:`Batcher.predict_rows`), and
    answered by MLflow's writing of its own rows' prediction.
    """

    def __init__(
        self,
        model: Any,
        traffic: TrafficLog | None,
        timeout_seconds: float,
        protocol: str = "mlflow",
        model_name: str = "model",
        model_version: str = "",
        batch: int = 1,
        max_body_bytes: int = MAX_BODY_BYTES,
        example: Any = None,
    ) -> None:
        from mlflow.version import VERSION

        self.model = model
        self.input_schema = model.metadata.get_input_schema()
        self.output_schema = model.metadata.get_output_schema()
        self.traffic = traffic
        self.timeout_seconds = timeout_seconds
        self.mlflow_version = VERSION
        self.protocol = protocol
        self.model_name = model_name
        self.model_version = model_version
        self.metrics = Metrics(
            model_name, model_version, traffic.metric_values if traffic else None
        )
        self.scoring = ThreadPoolExecutor(max_workers=batch, thread_name_prefix="scoring")
        self.batcher = (
            Batcher(
                model,
                batch,
                self.input_schema,
                self.metrics.batches.observe,
                None if _typed_by_hint(model) else self._read_split,
            )
            if batch > 1
            else None
        )
        self.max_body_bytes = max_body_bytes
        named_inputs = self.input_schema is not None and self.input_schema.has_input_names()
        self.input_columns = (
            frozenset(str(name) for name in self.input_schema.input_names())
            if named_inputs
            else None
        )
        self._ignoring = Throttle()  # the warning about ignored columns
        self.routes = self._routes(example)
        self._asgi = RequestMetrics(self.routes, self.metrics)
        # The prediction route's own paths (the served model's, for V2), and its template.
        self._predicting: dict[str, str] = (
            {
                f"/v2/models/{model_name}/infer": "/v2/models/{name}/infer",
                f"/v2/models/{model_name}/versions/{model_version}/infer": (
                    "/v2/models/{name}/versions/{version}/infer"
                ),
            }
            if protocol == "v2"
            else {"/invocations": "/invocations"}
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """A prediction (``POST`` to the served model's own prediction path) goes straight to
        the handler its route in :meth:`_routes` calls, counted and timed as any route; every
        other request goes through FastAPI (its routing, middleware and error handlers). A
        prediction is the one request a worker answers hundreds of times a second, and the
        framework's layers on its path cost it throughput for nothing it uses (the paired
        benchmark against the image before FastAPI, bench/serving_against.py: 0.83x with them,
        see the README)."""
        route = self._predicting.get(scope["path"]) if scope["type"] == "http" else None
        if route is None or scope["method"] != "POST":
            await self._asgi(scope, receive, send)
            return
        answer = Counted(self.metrics, "POST", lambda: route, send)
        try:
            response = await self._invocations(Request(scope, receive), v2=self.protocol == "v2")
            await response(scope, receive, answer.send)
        finally:
            answer.end()

    # --- routes ---------------------------------------------------------------------------

    def _routes(self, example: Any) -> Any:

        version = f" version {self.model_version}" if self.model_version else ""
        app = FastAPI(
            title=f"{self.model_name}{version}",
            version=self.model_version or "unversioned",
            description=self._description(),
            lifespan=self._lifespan,
            docs_url=None,  # Swagger UI from the image's own files, below
            redoc_url=None,
            swagger_ui_oauth2_redirect_url=None,
        )
        plain: dict[str, Any] = {"response_class": Response}
        probe: dict[str, Any] = {**plain, "tags": ["health"]}

        async def ping() -> Response:
            return Response("\n", media_type=JSON)

        async def mlflow_version() -> Response:
            return Response(self.mlflow_version, media_type=JSON)

        async def metrics() -> Response:
            return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

        app.add_api_route("/ping", ping, methods=["GET"], summary="Is it up", **probe)
        app.add_api_route("/health", ping, methods=["GET"], summary="Is it up", **probe)
        app.add_api_route(
            "/version", mlflow_version, methods=["GET"], summary="MLflow's version", **probe
        )
        app.add_api_route(
            "/metrics", metrics, methods=["GET"], summary="Prometheus metrics", tags=["metrics"],
            **plain,
        )  # fmt: skip
        if self.protocol == "v2":
            self._v2_routes(app, example)
        else:

            async def invocations(request: Request) -> Response:
                return await self._invocations(request, v2=False)

            app.add_api_route(
                "/invocations",
                invocations,
                methods=["POST"],
                summary=f"Predict with {self.model_name}",
                description="MLflow's scoring protocol: a table of the model's input columns "
                "(`dataframe_split` or `dataframe_records`); one answer per row.",
                tags=["predict"],
                openapi_extra={
                    "requestBody": openapi.mlflow_request(self.input_schema, example),
                    "responses": openapi.mlflow_answer(self.output_schema),
                },
                **plain,
            )
        self._docs_routes(app)

        async def not_routed(request: Request, exc: Exception) -> Response:
            status = getattr(exc, "status_code", 400)
            if request.url.path.startswith("/v2"):
                text = f"{request.method} {request.url.path}: {getattr(exc, 'detail', exc)}"
                return Response(json.dumps({"error": text}), status, media_type=JSON)
            detail = getattr(exc, "detail", "Bad Request")
            return Response(json.dumps({"detail": detail}), status, media_type=JSON)

        app.add_exception_handler(HTTPException, not_routed)
        app.add_exception_handler(RequestValidationError, not_routed)
        return app

    def _v2_routes(self, app: Any, example: Any) -> None:

        plain: dict[str, Any] = {"response_class": Response, "tags": ["v2"]}

        async def live() -> Response:
            return Response("{}", media_type=JSON)

        async def server() -> Response:
            document = {"name": SERVER_NAME, "version": self.mlflow_version, "extensions": []}
            return Response(json.dumps(document), media_type=JSON)

        async def metadata(name: str, version: str | None = None) -> Response:
            refused = self._not_served(name, version)
            if refused is not None:
                return refused
            document = v2_metadata(self.model_name, self.model_version, self.input_schema)
            return Response(json.dumps(document), media_type=JSON)

        async def ready(name: str, version: str | None = None) -> Response:
            return self._not_served(name, version) or Response("{}", media_type=JSON)

        async def infer(request: Request, name: str, version: str | None = None) -> Response:
            refused = self._not_served(name, version)
            if refused is not None:
                return refused
            return await self._invocations(request, v2=True)

        app.add_api_route("/v2", server, methods=["GET"], summary="The server", **plain)
        for path in ("/v2/health/live", "/v2/health/ready"):
            app.add_api_route(path, live, methods=["GET"], summary="Is it up", **plain)
        infer_docs: dict[str, Any] = {
            "summary": f"Predict with {self.model_name}",
            "description": "The Open Inference Protocol (KServe V2): one input tensor per "
            "input column, of shape [rows]; one output tensor per answer column.",
            "openapi_extra": {
                "requestBody": openapi.v2_request(self.input_schema, example),
                "responses": openapi.v2_answer(self.output_schema),
            },
        }
        for model in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            app.add_api_route(model, metadata, methods=["GET"], summary="The model", **plain)
            app.add_api_route(f"{model}/ready", ready, methods=["GET"], summary="Ready", **plain)
            app.add_api_route(f"{model}/infer", infer, methods=["POST"], **infer_docs, **plain)

    def _not_served(self, name: str, version: str | None) -> Any:
        """A V2 404 when ``name`` (and ``version``) is not the model served here; else None."""

        if name == self.model_name and (version is None or version == self.model_version):
            return None
        served = f"'{self.model_name}' version '{self.model_version}'"
        asked = f"'{name}'" + (f" version '{version}'" if version is not None else "")
        message = f"model {asked} is not served here; this serves {served}"
        return Response(json.dumps({"error": message}), 404, media_type=JSON)

    def _docs_routes(self, app: Any) -> None:
        """``/docs``: Swagger UI over ``/openapi.json``, its files served from the package that
        ships them (a cluster's pods need not reach a CDN)."""

        async def docs(request: Request) -> Response:
            root = request.scope.get("root_path", "").rstrip("/")
            return get_swagger_ui_html(
                openapi_url=f"{root}{app.openapi_url}",
                title=f"{app.title}: API",
                swagger_js_url=f"{root}/docs/swagger-ui-bundle.js",
                swagger_css_url=f"{root}/docs/swagger-ui.css",
                swagger_favicon_url="",
                swagger_ui_parameters={"displayRequestDuration": True},
            )

        cache: dict[str, bytes] = {}

        def asset(name: str, media_type: str) -> Callable[[], Any]:
            async def serve() -> Response:
                if name not in cache:
                    cache[name] = files(SWAGGER_PACKAGE).joinpath(name).read_bytes()
                return Response(cache[name], media_type=media_type)

            return serve

        app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
        for name, media_type in SWAGGER_FILES.items():
            app.add_api_route(
                f"/docs/{name}", asset(name, media_type), methods=["GET"], include_in_schema=False
            )

    def _description(self) -> str:
        columns = openapi.input_columns(self.input_schema)
        listed = ", ".join(f"`{name}`" for name, _, _ in columns) or "as its signature says"
        protocol = "the Open Inference Protocol (V2)" if self.protocol == "v2" else "MLflow's"
        return (
            f"The served model **{self.model_name}**"
            f"{f' version {self.model_version}' if self.model_version else ''}, "
            f"answering {protocol} scoring protocol. Its input columns: {listed}. Every request "
            "answered is written to the traffic log; `x-request-id` names it."
        )

    @asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        if self.traffic:
            self.traffic.start()
        try:
            yield
        finally:
            await asyncio.to_thread(self.scoring.shutdown)
            if self.traffic:
                await asyncio.to_thread(self.traffic.close)

    # --- a prediction -----------------------------------------------------------------------

    async def _invocations(self, request: Any, v2: bool) -> Any:

        received, started = time.time(), time.perf_counter()
        headers = request.headers
        given = headers.get(REQUEST_ID_HEADER)
        body, whole = await _body(request.receive, headers, self.max_body_bytes)
        model = _RecordingModel(self.model, self.batcher, self.input_columns, self.metrics)
        if whole:
            answer = await self._score(body, headers.get("content-type", ""), model, v2, given)
        else:
            answer = Answer(413, too_large(self.max_body_bytes))
        request_id = _request_id(given or answer.v2_id)
        status, content, mimetype = answer.status, answer.content, answer.mimetype
        if v2 and status < 400:
            content = v2_response(content, self.model_name, self.model_version, request_id)
        elif v2:
            content, mimetype = json.dumps({"error": error_message(content)}), JSON
        extra = {REQUEST_ID_HEADER: request_id}
        if answer.ignored_columns:
            self._say_ignored(request_id, answer.ignored_columns)
            named_columns = ignored_columns_header(answer.ignored_columns)
            extra[IGNORED_COLUMNS_HEADER] = named_columns.decode("latin-1")
        if status < 400 and model.inputs is not None:
            self.metrics.rows.inc(len(model.inputs))
        if self.traffic is not None:  # journaled before the client has its answer
            answered = status < 400
            self.traffic.record(
                Exchange(
                    request_id=request_id,
                    received=received,
                    seconds=time.perf_counter() - started,
                    status=status,
                    inputs=model.inputs if answered else None,
                    answer=answer.content if answered else "",
                    error="" if answered else answer.content,
                    body=b"" if answered else body[:ERROR_BODY_LIMIT],
                    ignored_columns=answer.ignored_columns,
                )
            )
        return Response(content, status, headers=extra, media_type=mimetype)

    def _say_ignored(self, request_id: str, columns: tuple[str, ...]) -> None:
        held_back = self._ignoring.due()
        if held_back is not None:
            log.warning(
                "request %s has columns the model does not take, ignored: %s (and %d more such "
                "requests since this was last said)",
                request_id,
                named(list(columns)),
                held_back,
            )

    async def _score(
        self, body: bytes, content_type: str, model: _RecordingModel, v2: bool, given: str | None
    ) -> Answer:
        """The answer to ``body``, made on a scoring thread within the timeout."""
        call = asyncio.get_running_loop().run_in_executor(
            self.scoring, self._answer, body, content_type, model, v2
        )
        try:
            return await asyncio.wait_for(call, timeout=self.timeout_seconds)
        except TimeoutError:
            model.abandoned.set()
            return Answer(504, "Request processing time exceeded limit")
        except Exception:
            log.exception("a request failed (x-request-id %s)", given)
            return Answer(500, "Internal Server Error", "text/plain")

    def _answer(self, body: bytes, content_type: str, model: _RecordingModel, v2: bool) -> Answer:
        if self.batcher is None:
            return self._answer_now(body, content_type, model, v2)
        with self.batcher.coming() as arrived:
            model.arrived = arrived
            return self._answer_now(body, content_type, model, v2)

    def _answer_now(
        self, body: bytes, content_type: str, model: _RecordingModel, v2: bool
    ) -> Answer:
        """MLflow's answer to a request (on a scoring thread). A JSON body is read here, once,
        held to what a request may be (:func:`read_json`, :func:`refuse_ragged_rows`), and
        given to MLflow's function as the document it is (the text, it would read twice)."""
        from mlflow.exceptions import MlflowException
        from mlflow.pyfunc.scoring_server import invocations, predictions_to_json

        v2_id = None
        try:
            if v2:
                data, v2_id = v2_to_dataframe_split(body)
                content_type = JSON
            else:
                data = json_document(body, content_type)
            read = self._read_together(data, content_type, model)
            if read is not None:
                model.inputs, prediction = read
                answer = io.StringIO()
                predictions_to_json(prediction, answer)
                return Answer(200, answer.getvalue(), JSON, v2_id)
            result = invocations(data, content_type, model, self.input_schema)
            return Answer(result.status, result.response, result.mimetype, v2_id, model.ignored)
        except V2RequestError as exc:
            return Answer(400, bad_request(str(exc)), JSON, exc.request_id)
        except RequestRefused as exc:
            return Answer(400, bad_request(str(exc)), JSON, v2_id)
        except MlflowException as exc:
            if model.refused:  # raised by the model's predict, and wrapped by MLflow's function
                return Answer(400, bad_request(model.refused), JSON, v2_id)
            return Answer(exc.get_http_status_code(), exc.serialize_as_json(), JSON, v2_id)

    def _read_together(
        self, data: Any, content_type: str, model: _RecordingModel
    ) -> tuple[Any, Any] | None:
        """A plain ``dataframe_split`` request's table and prediction, read and made by the
        batcher together with others' (:meth:`Batcher.predict_rows`); None when MLflow's
        function is to read and answer it (and, when its rows failed with others', the batcher
        to predict them alone). What MLflow's function would do before reading
        such a request (the content type's charset, no params, not an LLM's input) leaves it
        as it is; its answer is the same function's writing of the prediction."""
        if (
            self.batcher is None
            or not isinstance(data, dict)
            or data.keys() != {"dataframe_split"}
            or not _utf8_json(content_type)
        ):
            return None
        try:
            return self.batcher.predict_rows(
                data["dataframe_split"], model.abandoned, model.arrived
            )
        except PredictAlone:
            model.alone = True
            return None

    def _read_split(self, split: dict[str, Any]) -> Any:
        """A ``dataframe_split`` as MLflow's function reads it (cast to the signature)."""
        from mlflow.utils.proto_json_utils import dataframe_from_parsed_json

        return dataframe_from_parsed_json(split, "split", self.input_schema)


def _utf8_json(content_type: str) -> bool:
    """Whether ``content_type`` is JSON in UTF-8, as MLflow's function reads it (no other
    parameter than the charset)."""
    kind, *parameters = (part.strip() for part in content_type.split(";"))
    return kind == JSON and all(
        key == "charset" and value.lower() == "utf-8"
        for key, _, value in (part.partition("=") for part in parameters)
    )


def _typed_by_hint(model: Any) -> bool:
    """Whether the model's signature comes from its type hints (MLflow then passes the
    request's ``inputs`` as they are, unread)."""
    from_hint = getattr(model.metadata, "_is_signature_from_type_hint", None)
    return bool(from_hint()) if callable(from_hint) else False


def _request_id(given: str | None) -> str:
    """The client's request id when it is a usable one, else a new one."""
    if given and _REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


async def _body(receive: Any, headers: Mapping[str, str], limit: int) -> tuple[bytes, bool]:
    """The request's body, and whether it is whole. Reading stops once it is past ``limit``
    bytes, so a body over the limit is never held whole, and only its first bytes are kept (for
    the log); one its Content-Length says is over is refused having read only those (or none,
    from a client that waits to be asked for it: Expect: 100-continue). uvicorn reads and drops
    the rest after the answer, so that a client that sends it all still reads the answer."""
    declared = headers.get("content-length", "")
    over = declared.isdigit() and int(declared) > limit
    if over and headers.get("expect", "").lower() == "100-continue":
        return b"", False
    keep = min(limit, ERROR_BODY_LIMIT) if over else limit
    chunks, size, more = [], 0, True
    while more and size <= keep:
        message = await receive()
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    body = b"".join(chunks)
    if over or size > limit:
        return body[:ERROR_BODY_LIMIT], False
    return body, True


def create_app() -> ModelApp:
    """The app of one worker: the model at MLOPS_SERVED_MODEL_PATH (MLflow's /opt/ml/model),
    and the traffic log its settings ask for."""
    # skops (which reads the model) before MLflow: its import scans every module loaded ahead
    # of SciPy once for each of SciPy's 232 ufuncs, and after MLflow that is some 2,000
    # modules. A worker is ready about 0.35 s sooner (2.6 s to 2.25 s on 2 cores).
    import skops.io  # noqa: F401
    from mlflow.environment_variables import (
        _MLFLOW_IS_IN_SERVING_ENVIRONMENT,
        MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT,
    )
    from mlflow.pyfunc.scoring_server import load_model_with_mlflow_config

    model_path = os.environ.get("MLOPS_SERVED_MODEL_PATH", MODEL_PATH)
    model = load_model_with_mlflow_config(model_path)
    example = input_example(model, model_path)
    batch, why = batch_for_model(model, serving_batch(os.environ), example)
    print(BATCHING_LINE.format(pid=os.getpid(), batch=batch, why=why), file=sys.stderr)
    os.environ[_MLFLOW_IS_IN_SERVING_ENVIRONMENT.name] = "true"  # as MLflow's server does
    settings = TrafficSettings.from_env(os.environ)
    traffic = None
    if settings.enabled:
        traffic = TrafficLog.from_settings(settings, folder=os.environ.get(JOURNAL_DIR_ENV))
    app = ModelApp(
        model,
        traffic,
        MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get(),
        serving_protocol(os.environ),
        os.environ.get("MLOPS_MODEL_NAME", "model"),
        os.environ.get("MLOPS_MODEL_VERSION", ""),
        batch,
        max_body_bytes(os.environ),
        example,
    )
    # MLflow, pandas, scikit-learn and the model stay for the worker's life: leave them out of
    # the garbage collector's full passes. Each walked them all and held every request up;
    # with the traffic log keeping each request's rows for a moment, such passes came more
    # often: p99 at one connection went from 16 ms to 52 ms, and back to 17 with this.
    gc.freeze()
    return app


def input_example(model: Any, model_path: str) -> Any:
    """The input example saved with the model (MLflow's ``input_example.json``), or None when
    it has none or it cannot be read."""
    try:
        return model.metadata.load_input_example(model_path)
    except (OSError, ValueError) as error:
        print(f"serving: the model's input example is not readable: {error}", file=sys.stderr)
        return None
