"""The Flask reference target: a thin WSGI adapter over ``deploybench.targets.service.Service``.

gunicorn loads ``deploybench.targets.flask_app:app_from_env()`` in each worker (no --preload), so every
worker loads and warms up its own model before it accepts a request.

With dynamic batching (``TargetConfig.max_batch_size``, gunicorn-gthread with threads >= 2 only) the request
threads of a worker meet in its ``deploybench.targets.batching.ThreadBatcher``: a request is parsed and
validated in its own thread, then waits for its batch.
"""

from __future__ import annotations

from flask import Flask, Request, Response, request
from werkzeug.exceptions import HTTPException

from deploybench.targets import oip
from deploybench.targets.batching import ThreadBatcher
from deploybench.targets.metrics import CONTENT_TYPE, METRICS_PATH, TargetMetrics, instrument_wsgi
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
        reply.payload(), status=reply.status, headers=reply.headers, content_type="application/json"
    )


def _read_body(req: Request, svc: Service) -> bytes:
    """The raw body within max_body_bytes. Werkzeug enforces MAX_CONTENT_LENGTH for a declared length; a
    chunked body (no Content-Length) is read here in bounded steps, refusing (413) once over the limit."""
    length = req.content_length
    if length is not None:  # precheck() refused a declared length over the limit: read exactly that much
        # straight from the server's input stream (get_data() wraps it in a LimitedStream first: ~20 µs)
        return req.environ["wsgi.input"].read(length) if length else b""
    if not req.environ.get("wsgi.input_terminated"):
        return b""  # no length and no terminated stream: WSGI says there is no body
    limit, stream = svc.limits.max_body_bytes, req.environ["wsgi.input"]
    chunks, size = [], 0
    while chunk := stream.read(min(65536, limit + 1 - size)):
        size += len(chunk)
        if size > limit:
            raise svc.too_large(None)
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(config: TargetConfig, service: Service | None = None) -> Flask:
    """A Flask app serving ``config`` (loads the model unless a ready ``service`` is given)."""
    svc = service if service is not None else load_service(config)
    schema_bytes = Reply(200, svc.openapi("deploybench target (Flask)")).payload()
    app = Flask("deploybench-target-flask")
    app.debug = False  # never debug mode, even with FLASK_DEBUG=1 in the environment
    app.config["MAX_CONTENT_LENGTH"] = config.limits.max_body_bytes
    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.extensions["deploybench_service"] = svc
    batcher = (
        ThreadBatcher(svc.model_call, svc.config.max_batch_size, svc.config.max_queue_delay_us)
        if svc.batching
        else None
    )

    def predict_route(route: str) -> Response:
        req: Request = request._get_current_object()  # type: ignore[attr-defined]  # one proxy lookup
        content_type = req.environ.get("CONTENT_TYPE")  # the header, without the headers wrapper
        try:
            svc.precheck(route, content_type, req.content_length)
            body = _read_body(req, svc)
        except InputError as exc:
            return _respond(Reply(exc.status, exc.to_body()))
        try:
            if batcher is not None:
                return _respond(svc.handle_batched(route, content_type, body, batcher.submit))
            return _respond(svc.handle(route, content_type, body))
        except SystemExit as exc:
            if exc.code != 1:  # not gunicorn's worker-timeout abort (SIGABRT -> sys.exit(1))
                raise
            # gunicorn aborts a sync worker busy past --timeout (request_timeout_s): answer with JSON instead
            # of gunicorn's HTML 500; the worker exits after this response and is replaced.
            return _respond(svc.timed_out("the worker is being restarted"))

    def health() -> Response:
        return _respond(svc.health())

    def openapi() -> Response:
        return Response(schema_bytes, mimetype="application/json")

    # OPTIONS is not answered automatically, so both frameworks give the same 405 for it
    app.add_url_rule("/health", "health", health, methods=["GET"], provide_automatic_options=False)
    app.add_url_rule("/openapi.json", "openapi", openapi, methods=["GET"], provide_automatic_options=False)
    for route in (PREDICT, PREDICT_IMAGE, PREDICT_IMAGE_BASE64):
        app.add_url_rule(
            route,
            route,
            lambda route=route: predict_route(route),
            methods=["POST"],
            provide_automatic_options=False,
        )

    # the Open Inference Protocol v2 routes (/v2/...), with this app's body reading and responses
    oip.register_flask(app, svc, read_body=_read_body, respond=_respond, batcher=batcher)

    if config.metrics:  # opt-in (deploybench serve --metrics); without it /metrics is a 404 like any path
        served = {rule.rule for rule in app.url_map.iter_rules() if "<" not in rule.rule}
        metrics = TargetMetrics.for_service(svc, served)

        def metrics_route() -> Response:
            return Response(metrics.exposition(), content_type=CONTENT_TYPE)

        app.add_url_rule(
            METRICS_PATH, "metrics", metrics_route, methods=["GET"], provide_automatic_options=False
        )
        app.wsgi_app = instrument_wsgi(app.wsgi_app, metrics)  # type: ignore[method-assign]
        app.extensions["deploybench_metrics"] = metrics

    if svc.stalls:  # the injected stall (TargetConfig.inject_stall_*): every request passes the gate

        @app.before_request
        def stall_gate() -> None:
            svc.stall_gate(request.path in ROUTES)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 413:
            return _respond(Reply(413, svc.too_large(request.content_length).to_body()))
        return _respond(http_error_reply(status, request.method, request.path, exc.description or ""))

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        return _respond(svc.record_internal_error(exc))

    return app


def app_from_env() -> Flask:
    """gunicorn entry point: the TargetConfig comes from DEPLOYBENCH_TARGET_CONFIG (set by the launcher)."""
    return create_app(config_from_env())
