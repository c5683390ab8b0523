"""Prometheus metrics of a reference target (``GET /metrics``, opt-in: ``deploybench serve --metrics``).

Off by default: a benchmark measures the lean app, and every counted request costs a few µs (more under
multiprocess mode, where each update writes a memory-mapped file). When on, both apps count every request
except ``/metrics`` itself, through ``TargetMetrics``:

- ``deploybench_http_requests_total{method, route, status}``: counter;
- ``deploybench_http_request_duration_seconds{method, route, status}``: histogram, the request's arrival in
  the app to its response start;
- ``deploybench_http_requests_in_flight``: gauge (multiprocess mode ``livesum``: the live workers' sum);
- ``deploybench_inference_duration_seconds{model, format}``: histogram of the model's inference (the
  Server-Timing ``infer`` stage, injected delay included);
- ``deploybench_target_info{framework, server, handler, model, format, version}``: gauge, always 1.

``route`` is the app's route path, or ``unmatched`` for a path it does not serve (so that random paths add no
series); ``method`` is the HTTP method, or ``other`` for one outside the usual set.

Multiprocess mode: when the launcher (``deploybench.targets.serve``) runs the target as more than one process
(gunicorn, any worker count; uvicorn ``--workers`` > 1) it gives it a fresh, private
``PROMETHEUS_MULTIPROC_DIR``; every worker writes its values there, ``/metrics`` merges them all
(``MultiProcessCollector`` into a fresh ``CollectorRegistry``), and gunicorn's ``child_exit`` hook
(``deploybench.targets.gunicorn_conf``) removes a dead worker's live gauges (``mark_process_dead``). Under
plain uvicorn (one process) the app's own registry answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

from deploybench import __version__
from deploybench.targets.service import Service

METRICS_PATH = "/metrics"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE = "unmatched"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"
# seconds; a tabular model answers in well under a millisecond, an image model in tens of milliseconds
REQUEST_BUCKETS_S = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
INFERENCE_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
CONTENT_TYPE = CONTENT_TYPE_LATEST


def multiprocess_mode() -> bool:
    """Are this process's metric values the memory-mapped, multiprocess ones? prometheus_client decides once,
    when it is imported, from ``PROMETHEUS_MULTIPROC_DIR``."""
    mmaped = bool(getattr(values.ValueClass, "_multiprocess", False))
    return mmaped and bool(os.environ.get(MULTIPROC_DIR_ENV))


class TargetMetrics:
    """One app's metrics. ``routes``: the paths the app serves (anything else is ``unmatched``)."""

    def __init__(
        self, *, framework: str, server: str, handler: str, model: str, format: str, routes: set[str]
    ) -> None:
        self.routes = frozenset(routes)
        self.multiprocess = multiprocess_mode()
        # Our own registry: several apps in one process (tests) never clash. In multiprocess mode it is not
        # what /metrics reads (the values live in the shared folder), only where the metrics are declared.
        self.registry = CollectorRegistry()
        reg = self.registry
        self.requests = Counter(
            "deploybench_http_requests",
            "HTTP requests answered, by method, route and status (/metrics itself not counted)",
            ["method", "route", "status"],
            registry=reg,
        )
        self.duration = Histogram(
            "deploybench_http_request_duration_seconds",
            "time from the request reaching the app to its response start, by method, route and status",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS_S,
            registry=reg,
        )
        self.in_flight = Gauge(
            "deploybench_http_requests_in_flight",
            "requests being handled now (all workers)",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.inference = Histogram(
            "deploybench_inference_duration_seconds",
            "model inference time (the Server-Timing infer stage), by model and format",
            ["model", "format"],
            buckets=INFERENCE_BUCKETS_S,
            registry=reg,
        ).labels(model, format)
        info = Gauge(
            "deploybench_target_info",
            "what this target serves (always 1)",
            ["framework", "server", "handler", "model", "format", "version"],
            registry=reg,
            multiprocess_mode="max",
        )
        info.labels(framework, server, handler or "", model, format, __version__).set(1)
        self._children: dict[tuple[str, str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}

    @classmethod
    def for_service(cls, svc: Service, routes: set[str]) -> TargetMetrics:
        """The metrics of an app serving ``svc`` on ``routes``; hooks itself into ``svc``'s inferences."""
        cfg = svc.config
        metrics = cls(
            framework=cfg.framework,
            server=cfg.server,
            handler=svc.handler,
            model=cfg.model,
            format=cfg.format,
            routes=routes,
        )
        svc.on_infer_ns = metrics.observe_inference_ns
        return metrics

    def route_label(self, path: str) -> str:
        return path if path in self.routes else UNMATCHED_ROUTE

    def observe_request(self, method: str, path: str, status: int, duration_s: float) -> None:
        """Count one answered request (call before its response is sent: a client never sees an answer
        that is not counted yet)."""
        route = path if path in self.routes else UNMATCHED_ROUTE
        if method not in KNOWN_METHODS:
            method = OTHER_METHOD
        key = (method, route, status)  # bounded: a few methods x the app's routes x the statuses it answers
        child = self._children.get(key)
        if child is None:
            labels = (method, route, str(status))
            child = self._children[key] = (
                self.requests.labels(*labels).inc,
                self.duration.labels(*labels).observe,
            )
        child[0]()
        child[1](duration_s)

    def observe_inference_ns(self, infer_ns: int) -> None:
        self.inference.observe(infer_ns / 1e9)

    def exposition(self) -> bytes:
        """The text ``/metrics`` answers: every worker's values in multiprocess mode, else this process's."""
        if self.multiprocess:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)


# -- the adapters' instrumentation (framework-neutral: WSGI and ASGI) ---------------------------------------
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def instrument_wsgi(wsgi_app: WsgiApp, metrics: TargetMetrics) -> WsgiApp:
    """``wsgi_app`` counting every request but ``/metrics`` (the Flask target wraps ``app.wsgi_app``). The
    count happens when the app returns, before the server sends the response."""
    in_flight, observe = metrics.in_flight, metrics.observe_request

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == METRICS_PATH:
            return wsgi_app(environ, start_response)
        t0 = time.perf_counter_ns()
        in_flight.inc()
        status = [500]  # an exception out of the app: the server answers 500

        def counting_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            status[0] = int(status_line[:3])
            return start_response(status_line, headers, exc_info)

        try:
            return wsgi_app(environ, counting_start_response)
        finally:
            observe(environ.get("REQUEST_METHOD", ""), path, status[0], (time.perf_counter_ns() - t0) / 1e9)
            in_flight.dec()

    return app


class AsgiMetrics:
    """ASGI middleware counting every HTTP request but ``/metrics`` (the FastAPI target adds it). The count
    happens as the response starts, before its first message goes to the server."""

    def __init__(self, app: Any, metrics: TargetMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        m = self.metrics
        method, path = scope["method"], scope["path"]
        t0 = time.perf_counter_ns()
        m.in_flight.inc()
        counted = False

        async def counting_send(message: dict[str, Any]) -> None:
            nonlocal counted
            if message["type"] == "http.response.start" and not counted:
                counted = True
                m.observe_request(method, path, message["status"], (time.perf_counter_ns() - t0) / 1e9)
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            if not counted:  # an exception on its way to the error handler outside us, which answers 500
                m.observe_request(method, path, 500, (time.perf_counter_ns() - t0) / 1e9)
            m.in_flight.dec()
