"""The server's Prometheus metrics (``GET /metrics``), with ``prometheus_client``.

The server runs several worker processes, and a scrape reaches one of them: in multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR``, which the server's process makes for its workers, as
prometheus_client's docs say) each worker writes its values to files there and whichever worker
answers ``/metrics`` sums them all, those of a worker that has ended included. Without that
folder (one process, as in tests) the values are the process's own.

Every metric has the served model's ``model_name`` and ``model_version`` as labels:

- ``mlops_http_requests_total`` and ``mlops_http_request_duration_seconds`` (histogram), by
  ``route`` (the route's template, such as ``/v2/models/{name}/infer``; ``unmatched`` for a
  path no route takes), ``method`` and ``status``;
- ``mlops_rows_predicted_total``: rows of the requests answered with predictions;
- ``mlops_prediction_batch_requests`` (histogram): requests in each call of the model
  (1 for a request predicted alone);
- the traffic log's own counters, read from its journal folder (see :mod:`.traffic_log`):
  ``mlops_traffic_recorded_total``, ``mlops_traffic_dropped_total``,
  ``mlops_traffic_written_lines_total`` and ``mlops_traffic_held_requests``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: a single-row request takes a few milliseconds; a large table or a queue, seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
UNMATCHED = "unmatched"

Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


class Metrics:
    """The metrics of one worker serving ``model_name`` version ``model_version``; ``traffic``
    gives the traffic log's counters (names, kinds, help texts and values), if it is on."""

    def __init__(
        self,
        model_name: str,
        model_version: str,
        traffic: Callable[[], Iterable[tuple[str, str, str, int]]] | None = None,
    ) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Histogram,
            disable_created_metrics,
        )

        disable_created_metrics()  # a *_created series per series: multiprocess mode has none
        self.model = {"model_name": model_name, "model_version": model_version}
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_DIR_ENV) or None
        self._own = CollectorRegistry()  # values live in the files in multiprocess mode
        labels = ["model_name", "model_version"]
        self.requests = Counter(
            "mlops_http_requests_total",
            "HTTP requests answered, by route, method and status.",
            [*labels, "route", "method", "status"],
            registry=self._own,
        )
        self.duration = Histogram(
            "mlops_http_request_duration_seconds",
            "Seconds from a request's start to the end of its answer, by route, method, status.",
            [*labels, "route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self._own,
        )
        self.rows = Counter(
            "mlops_rows_predicted_total",
            "Rows of the requests answered with predictions.",
            labels,
            registry=self._own,
        ).labels(**self.model)
        self.batches = Histogram(
            "mlops_prediction_batch_requests",
            "Requests in each call of the model (1: predicted alone).",
            labels,
            buckets=BATCH_BUCKETS,
            registry=self._own,
        ).labels(**self.model)
        self._traffic = TrafficCollector(traffic, self.model) if traffic is not None else None
        if self._traffic is not None:
            self._own.register(self._traffic)
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:  # labels() looks its child up under a lock: once per key
            values = {**self.model, "route": route, "method": method, "status": str(status)}
            children = self._children[key] = (
                self.requests.labels(**values),
                self.duration.labels(**values),
            )
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        """Every metric in Prometheus' text format: all workers' values in multiprocess mode."""
        from prometheus_client import CollectorRegistry, generate_latest

        if self.multiprocess_dir:
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=self.multiprocess_dir)
            if self._traffic is not None:
                registry.register(self._traffic)
        else:
            registry = self._own
        return bytes(generate_latest(registry))


class TrafficCollector:
    """The traffic log's counters as prometheus_client collects a metric: read when scraped,
    labelled with the served model."""

    def __init__(
        self, values: Callable[[], Iterable[tuple[str, str, str, int]]], model: dict[str, str]
    ) -> None:
        self.values = values
        self.model = model

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        for name, kind, text, value in self.values():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            metric = family(name, text, labels=list(self.model))
            metric.add_metric(list(self.model.values()), value)
            yield metric


class Counted:
    """One request's ``send``, counted and timed as its answer's last part goes out, before the
    client can have it: a client that has its answer finds it counted at ``/metrics``, from any
    worker. A request that ends without a whole answer is counted when it ends (:meth:`end`),
    as a 500 if it never started one."""

    def __init__(self, metrics: Metrics, method: str, route: Callable[[], str], send: Send) -> None:
        self.metrics = metrics
        self.method = method
        self.route = route
        self._send = send
        self.started = time.perf_counter()
        self.status = 500
        self.counted = False

    async def send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.end()
        await self._send(message)

    def end(self) -> None:
        if not self.counted:
            self.counted = True
            elapsed = time.perf_counter() - self.started
            self.metrics.observe(self.route(), self.method, self.status, elapsed)


class RequestMetrics:
    """ASGI middleware: each request counted and timed as its answer is sent (:class:`Counted`),
    under the template of the app's route that takes its path (:meth:`route`)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    def route(self, scope: dict[str, Any]) -> str:
        """The path template of the first of the app's routes that takes ``scope``'s method and
        path, else of one that takes its path (answered 405), else ``unmatched``. Matched here,
        as Starlette's router does: FastAPI puts the route in the scope for its own routes only,
        not for those such as ``/openapi.json`` and ``/docs``."""
        from starlette.routing import Match

        partial = None
        for route in getattr(self.app, "routes", ()):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(route.path)
            if match is Match.PARTIAL and partial is None:
                partial = str(route.path)
        return partial or UNMATCHED

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        answer = Counted(self.metrics, scope["method"], lambda: self.route(scope), send)
        try:
            await self.app(scope, receive, answer.send)
        finally:
            answer.end()
