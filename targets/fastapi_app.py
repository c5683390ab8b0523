"""The FastAPI reference target: a thin ASGI adapter over ``deploybench.targets.service.Service``.

uvicorn loads ``deploybench.targets.fastapi_app:app_from_env`` (``--factory``) in each worker; gunicorn with
uvicorn workers loads ``deploybench.targets.fastapi_app:app_from_env()``. The body is read on the event loop
(bounded by max_body_bytes); the CPU work then runs where the handler style (``TargetConfig.handler``,
resolved by ``TargetConfig.resolved_handler``) puts it:

- ``inline``: in the event loop, as an ``async def`` endpoint calling the model does (the seed's style). No
  thread hop; but a long inference blocks the loop, and nothing can interrupt it. The request deadline
  (request_timeout_s, counted from the moment the handler starts) is therefore checked twice: a request
  whose deadline passed before its inference could start (reading its body, e.g. an upload, waited behind
  other inferences) is refused without running it, and one whose inference ended past the deadline gets
  the 503 instead of its late result — a 503 that comes when the inference ends, not at the deadline.
  Under gunicorn-uvicorn, an inference that blocks the loop past gunicorn's --timeout (request_timeout_s
  rounded up to whole seconds) stops the worker's heartbeat: gunicorn kills the worker (its open requests
  get a dropped connection, not a 503) and starts a new one. The clock cannot see time a request spent
  unread in the socket while the loop was blocked by another inference (no ASGI server tells an app when
  a request arrived).
- ``threadpool``: in the threadpool, as a plain ``def`` endpoint does (anyio's worker threads, the same hop
  FastAPI makes), under ``asyncio.timeout``: the event loop answers 503 at the deadline and the worker
  thread finishes its inference in the background.

Both answer 503 ``request-timeout`` past the deadline.

With dynamic batching (``TargetConfig.max_batch_size``) every prediction request is parsed and validated,
then awaits its batch (``deploybench.targets.batching.AsyncBatcher``): the model call runs in the batcher's
one thread whatever the handler style (the loop must keep reading for a batch to fill); the handler style
only decides where an image is decoded (``inline``: on the loop; ``threadpool``: in a worker thread). Past
the deadline the request gets its 503 (it leaves the queue, or its share of a running batch is dropped).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from deploybench import __version__
from deploybench.targets import oip
from deploybench.targets.batching import AsyncBatcher, run_batched
from deploybench.targets.metrics import CONTENT_TYPE, METRICS_PATH, AsgiMetrics, TargetMetrics
from deploybench.targets.preprocess import InputError
from deploybench.targets.serve import TargetConfig, config_from_env
from deploybench.targets.service import (
    PREDICT,
    PREDICT_IMAGE,
    PREDICT_IMAGE_BASE64,
    ROUTES,
    Reply,
    Service,
    http_error_reply,
    load_service,
)


def _respond(reply: Reply) -> Response:
    return Response(
        reply.payload(), status_code=reply.status, headers=reply.headers, media_type="application/json"
    )


def _content_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


async def _read_body(request: Request, svc: Service) -> bytes:
    """The raw body, refusing (413) as soon as it exceeds max_body_bytes — chunked bodies included."""
    limit = svc.limits.max_body_bytes
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise svc.too_large(None)
        chunks.append(chunk)
    return b"".join(chunks)


class StallGate:
    """ASGI middleware of the injected stall (``Service.stall_gate``): it blocks the event loop itself, so the
    whole process answers nothing while the stall lasts, like a long GC pause."""

    def __init__(self, app: Any, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.service.stall_gate(scope["path"] in ROUTES)  # blocking on purpose
        await self.app(scope, receive, send)


def create_app(config: TargetConfig, service: Service | None = None) -> FastAPI:
    """A FastAPI app serving ``config`` (loads the model unless a ready ``service`` is given)."""
    svc = service if service is not None else load_service(config)
    schema = svc.openapi("deploybench target (FastAPI)")
    app = FastAPI(
        title="deploybench target (FastAPI)",
        version=__version__,
        redirect_slashes=False,  # like Flask: /health/ is a 404, not a redirect
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        debug=False,
    )
    app.state.service = svc

    def custom_openapi() -> dict[str, Any]:
        return schema  # the same document the Flask target publishes

    app.openapi = custom_openapi  # type: ignore[method-assign]

    timeout_s = svc.limits.request_timeout_s
    timeout_ns = round(timeout_s * 1e9)
    inline = svc.handler == "inline"
    batcher = (
        AsyncBatcher(svc.model_call, svc.config.max_batch_size, svc.config.max_queue_delay_us)
        if svc.batching
        else None
    )

    async def predict_route(request: Request, route: str) -> Response:
        start_ns = time.perf_counter_ns()  # the deadline counts from here
        content_type = request.headers.get("content-type")
        try:
            svc.precheck(route, content_type, _content_length(request))
            body = await _read_body(request, svc)
        except InputError as exc:
            return _respond(Reply(exc.status, exc.to_body()))
        except ClientDisconnect:  # the client went away mid-body: nobody to answer, not a server error
            return Response(status_code=400)
        if batcher is not None:
            left_s = timeout_s - (time.perf_counter_ns() - start_ns) / 1e9
            off_loop = route != PREDICT and not inline  # decode + transform an image off the loop
            try:
                reply = await run_batched(batcher, lambda: svc.prepare(route, content_type, body), svc.finish,
                                      off_loop=off_loop, left_s=left_s)  # fmt: skip
            except InputError as exc:
                reply = Reply(exc.status, exc.to_body())
            except TimeoutError:
                reply = svc.timed_out("it waited that long for its batch")
            return _respond(reply)
        if inline:
            if time.perf_counter_ns() - start_ns > timeout_ns:
                return _respond(svc.timed_out("it waited that long before its inference could start"))
            reply = svc.handle(route, content_type, body)
            if time.perf_counter_ns() - start_ns > timeout_ns:
                reply = svc.timed_out("the inference (inline, in the event loop) finished too late")
            return _respond(reply)
        try:
            if route == PREDICT:  # only the inference in the thread: parse, validate, encode on the loop
                try:
                    svc.precheck(route, content_type, len(body))
                    batch, is_batch, t = svc.prepare_tabular(body)
                    async with asyncio.timeout(timeout_s - (time.perf_counter_ns() - start_ns) / 1e9):
                        probs = await to_thread.run_sync(svc.infer, batch, t, abandon_on_cancel=True)
                    reply = svc.finish_tabular(probs, is_batch, t)
                except InputError as exc:
                    reply = Reply(exc.status, exc.to_body())
            else:
                async with asyncio.timeout(timeout_s - (time.perf_counter_ns() - start_ns) / 1e9):
                    reply = await to_thread.run_sync(
                        svc.handle, route, content_type, body, abandon_on_cancel=True
                    )
        except TimeoutError:
            # The event loop answers at the deadline; the worker thread cannot be interrupted and finishes
            # its inference in the background.
            reply = svc.timed_out("the inference still finishing in the background was abandoned")
        return _respond(reply)

    @app.api_route("/health", methods=["GET", "HEAD"], include_in_schema=False)
    async def health() -> Response:
        return _respond(svc.health())

    @app.post(PREDICT, include_in_schema=False)
    async def predict(request: Request) -> Response:
        return await predict_route(request, PREDICT)

    @app.post(PREDICT_IMAGE, include_in_schema=False)
    async def predict_image(request: Request) -> Response:
        return await predict_route(request, PREDICT_IMAGE)

    @app.post(PREDICT_IMAGE_BASE64, include_in_schema=False)
    async def predict_image_base64(request: Request) -> Response:
        return await predict_route(request, PREDICT_IMAGE_BASE64)

    # the Open Inference Protocol v2 routes (/v2/...), with this app's body reading and responses
    oip.register_fastapi(app, svc, read_body=_read_body, respond=_respond, content_length=_content_length,
                         batcher=batcher)  # fmt: skip

    if svc.stalls:  # the injected stall (TargetConfig.inject_stall_*); added first: inside the metrics
        app.add_middleware(StallGate, service=svc)  # (a stalled request's duration includes the stall)

    if config.metrics:  # opt-in (deploybench serve --metrics); without it /metrics is a 404 like any path
        served = {route.path for route in app.routes if "{" not in getattr(route, "path", "{")}
        metrics = TargetMetrics.for_service(svc, served)

        @app.api_route(METRICS_PATH, methods=["GET", "HEAD"], include_in_schema=False)
        async def metrics_route() -> Response:
            return Response(metrics.exposition(), media_type=CONTENT_TYPE)

        app.add_middleware(AsgiMetrics, metrics=metrics)
        app.state.metrics = metrics

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return _respond(http_error_reply(exc.status_code, request.method, request.url.path, str(exc.detail)))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return _respond(svc.record_internal_error(exc))

    return app


def app_from_env() -> FastAPI:
    """uvicorn / gunicorn entry point: the TargetConfig comes from DEPLOYBENCH_TARGET_CONFIG."""
    return create_app(config_from_env())
