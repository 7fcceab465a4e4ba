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


class RequestMetrics:
    """ASGI middleware: each request counted and timed once its answer is sent, under the
    template of the route that took it (set by the router in the scope)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.observe(route, scope["method"], status, time.perf_counter() - started)
