"""Framework-independent request handling: validation, limits, timing and response bodies.

The Flask and FastAPI apps are thin adapters over ``Service``: they match routes, read the raw body within
``max_body_bytes`` and hand it here, so both targets give byte-identical answers (and identical errors) and
the framework + server are the only things that differ between them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from deploybench import __version__
from deploybench.errors import TargetError
from deploybench.targets.batching import BatchResult
from deploybench.targets.catalog import MODELS
from deploybench.targets.modelfile import image_transform, input_spec, inspect_user_model, sample_batch
from deploybench.targets.predictors import OnnxPredictor, load_predictor
from deploybench.targets.preprocess import (
    MAX_FEATURE_VALUE,
    N_IRIS_FEATURES,
    ZOO_IMAGE_TRANSFORM,
    ImageTransform,
    InputError,
    decode_base64_image,
    decode_image,
    parse_json,
    top_k,
    validate_features,
)
from deploybench.targets.serve import TargetConfig
from deploybench.targets.zoo import sample_inputs
from deploybench.vocabulary import READY_DIR_ENV

log = logging.getLogger("deploybench.target")

# route path -> (model task it serves, media type it accepts)
PREDICT = "/predict"
PREDICT_IMAGE = "/predict/image"
PREDICT_IMAGE_BASE64 = "/predict/image/base64"
ROUTES: dict[str, tuple[str, str]] = {
    PREDICT: ("tabular", "application/json"),
    PREDICT_IMAGE: ("image", "multipart/form-data"),
    PREDICT_IMAGE_BASE64: ("image", "application/json"),
}
# HTTP status -> error code for the errors the frameworks raise themselves (routing, size limit)
HTTP_ERROR_CODES: dict[int, str] = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
}
# the Allow header of a 405, identical on both frameworks
ALLOWED_METHODS: dict[str, str] = {
    "/health": "GET, HEAD",
    "/openapi.json": "GET, HEAD",
    "/docs": "GET, HEAD",
    "/metrics": "GET, HEAD",  # with --metrics only (else a 404)
    **{route: "POST" for route in ROUTES},
}
TOP_K = 5


class PredictorLike(Protocol):
    def predict(self, batch: np.ndarray) -> np.ndarray: ...


def sleep_until_ns(deadline_ns: int) -> None:
    """Sleep (blocking the calling thread) until ``time.perf_counter_ns()`` reaches ``deadline_ns``."""
    while (left_ns := deadline_ns - time.perf_counter_ns()) > 0:
        time.sleep(left_ns / 1e9)


def busy_wait_ns(duration_ns: int) -> None:
    """Spin for ``duration_ns``: exact to a few µs and CPU-bound like a slower model (``time.sleep`` would
    oversleep sub-millisecond delays ~2x and free the CPU, so it is a poor stand-in for a slower model)."""
    end = time.perf_counter_ns() + duration_ns
    while time.perf_counter_ns() < end:
        pass


@dataclass
class Reply:
    """What a route answers: status, JSON body and extra headers (Server-Timing)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        return dumps(self.body)


# built once: json.dumps with options builds a new encoder on every call (a hot spot on a fast model)
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))


def dumps(body: dict[str, Any]) -> bytes:
    return _ENCODER.encode(body).encode()


def error_reply(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": code, "detail": detail}, dict(headers or {}))


def http_error_reply(status: int, method: str, path: str, detail: str = "") -> Reply:
    """An error the framework raised itself (unknown route, wrong method, ...): the same JSON on both."""
    code = HTTP_ERROR_CODES.get(status, "bad-request" if status < 500 else "internal-error")
    headers = {}
    if status == 404:
        detail = f"no route {method} {path}"
    elif status == 405:
        detail = f"{method} is not allowed on {path}"
        if path in ALLOWED_METHODS:
            headers["Allow"] = ALLOWED_METHODS[path]
    return error_reply(status, code, detail or f"HTTP {status}", headers)


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass
class Timings:
    """Per-request stage times (perf_counter_ns deltas); with dynamic batching also the wait in the batch
    queue and the rows of the batch the request ran in (``batch_rows`` 0: not batched)."""

    decode_ns: int = 0
    preprocess_ns: int = 0
    infer_ns: int = 0
    queue_ns: int = 0
    batch_rows: int = 0

    def header(self) -> str:
        """``Server-Timing`` value: milliseconds with microsecond precision (+ ``queue;dur=…,
        batch;desc="N"`` when the request ran in a dynamic batch)."""
        value = (
            f"decode;dur={self.decode_ns / 1e6:.3f}, preprocess;dur={self.preprocess_ns / 1e6:.3f}, "
            f"infer;dur={self.infer_ns / 1e6:.3f}"
        )
        if self.batch_rows:
            value += f', queue;dur={self.queue_ns / 1e6:.3f}, batch;desc="{self.batch_rows}"'
        return value


@dataclass
class Prepared:
    """A prediction request parsed and validated, ready for a (batched) model call: its rows, whether the
    answer is a batch (``{"instances"}``), its route and the timings so far."""

    route: str
    rows: np.ndarray
    is_batch: bool
    timings: Timings


class Service:
    """One loaded model behind the HTTP API. Thread-safe as long as the predictor is (all ours are).

    ``input_shape`` (per item) and ``transform`` (image pre-processing) default to the zoo model's;
    ``model_file`` is the served user file's summary (``UserModelInfo.file_summary``), shown in /health."""

    def __init__(
        self,
        config: TargetConfig,
        predictor: PredictorLike,
        *,
        task: str,
        class_names: list[str],
        input_shape: tuple[int, ...] | None = None,
        transform: ImageTransform | None = None,
        model_file: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.predictor = predictor
        self.task = task
        self.class_names = list(class_names)
        self.limits = config.limits
        self.internal_errors = 0  # requests that reached the catch-all handler (should stay 0)
        if input_shape is None:
            zoo = MODELS.get(config.model)
            if zoo is not None:
                input_shape = zoo.input_shape
            else:
                input_shape = (N_IRIS_FEATURES,) if task == "tabular" else ZOO_IMAGE_TRANSFORM.shape
        self.input_shape = tuple(input_shape)
        self.transform = transform or ZOO_IMAGE_TRANSFORM
        self.model_file = model_file
        self.handler = config.resolved_handler(task)  # FastAPI: "inline" | "threadpool"; Flask: ""
        # a user's features may be any finite number; iris features are lengths in cm (>= 0)
        self.allow_negative = config.model_file is not None
        # called with each inference's duration (ns) when set: /metrics (deploybench.targets.metrics)
        self.on_infer_ns: Callable[[int], None] | None = None
        # the injected stall (TargetConfig.inject_stall_at_s / inject_stall_s): adapters call stall_gate()
        # on every request only when ``stalls`` (a config without one pays nothing)
        self.stalls = config.inject_stall_at_s is not None and config.inject_stall_s > 0
        self._stall_at_ns = round((config.inject_stall_at_s or 0.0) * 1e9)
        self._stall_ns = round(config.inject_stall_s * 1e9)
        self._first_predict_ns: int | None = None
        self._stall_until_ns = 0  # 0: not started yet; once set it stays (one stall per process)
        self._stall_lock = threading.Lock()
        # dynamic batching (TargetConfig.max_batch_size): the adapters own the batcher and call
        # prepare() -> batcher -> finish() instead of handle()
        self.batching = config.batching()

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def load(cls, config: TargetConfig) -> Service:
        """Load the model once (per worker), run one warm-up inference, then signal readiness."""
        if config.model_file is not None:
            return cls._load_model_file(config)
        spec = MODELS[config.model]
        predictor = load_predictor(
            config.model,
            config.format,
            zoo_dir=Path(config.zoo_dir) if config.zoo_dir else None,
            intra_op_threads=config.intra_op_threads,
            ort_opt_level=config.ort_opt_level,
            inter_op_threads=config.inter_op_threads,
        )
        svc = cls(config, predictor, task=spec.task, class_names=list(spec.class_names))
        svc.warm_up(sample_inputs(config.model, 1))
        return svc

    @classmethod
    def _load_model_file(cls, config: TargetConfig) -> Service:
        """A user's file (``deploybench.targets.modelfile``), inspected as the launcher did; the pickle opt-in
        re-checked."""
        um = config.user_model()
        info, predictors = inspect_user_model(
            um,
            intra_op_threads=config.intra_op_threads,
            ort_opt_level=config.ort_opt_level,
            inter_op_threads=config.inter_op_threads,
        )
        predictor = predictors[config.format]
        transform = image_transform(um, info.input_shape) if info.task == "image" else None
        svc = cls(
            config,
            predictor,
            task=info.task,
            class_names=info.class_names,
            input_shape=tuple(info.input_shape),
            transform=transform,
            model_file=info.file_summary(config.format),
        )
        svc.warm_up(sample_batch(um, info, 1))
        return svc

    def warm_up(self, batch: np.ndarray) -> None:
        probs = np.asarray(self.predictor.predict(batch))
        if probs.shape != (len(batch), len(self.class_names)) or not np.all(np.isfinite(probs)):
            raise TargetError(
                f"warm-up inference of {self.config.model}/{self.config.format} returned shape {probs.shape} "
                f"(expected {(len(batch), len(self.class_names))}) or non-finite values"
            )

    # -- routes ------------------------------------------------------------------------------------
    def input_spec(self) -> dict[str, Any]:
        """What a request must carry: ``{"kind": "tabular", "n_features": F}`` or ``{"kind": "image",
        "shape": [C, H, W]}`` (the size images are resized to)."""
        return input_spec(self.task, self.input_shape)

    def health(self) -> Reply:
        body: dict[str, Any] = {
            "status": "ok",
            "version": __version__,
            "framework": self.config.framework,
            "server": self.config.server,
            "handler": self.handler,
            "model": self.config.model,
            "format": self.config.format,
            "task": self.task,
            "pid": os.getpid(),
            "internal_errors": self.internal_errors,
            "input": self.input_spec(),
            "n_classes": len(self.class_names),
        }
        body["batching"] = {
            "max_batch_size": self.config.max_batch_size,
            "max_queue_delay_us": self.config.max_queue_delay_us,
        }
        if isinstance(self.predictor, OnnxPredictor):
            body["onnxruntime"] = self.predictor.session_options()
        if self.model_file is not None:
            body["model_file"] = self.model_file
        return Reply(200, body)

    def openapi(self, title: str) -> dict[str, Any]:
        """This target's OpenAPI document (the request schema carries its number of features)."""
        n_features = self.input_shape[0] if self.task == "tabular" else N_IRIS_FEATURES
        return openapi_schema(
            self.task, self.limits, title=title, n_features=n_features, allow_negative=self.allow_negative
        )

    def precheck(self, route: str, content_type: str | None, content_length: int | None) -> None:
        """Checks that need no body: model kind, media type, declared size. Raises InputError."""
        task, wanted = ROUTES[route]
        if task != self.task:
            other = PREDICT if self.task == "tabular" else f"{PREDICT_IMAGE} or {PREDICT_IMAGE_BASE64}"
            raise InputError(
                409,
                "wrong-model-kind",
                f"this target serves {'an' if self.task == 'image' else 'a'} {self.task} model "
                f"({self.config.model}); {route} is for {task} models — use {other}",
            )
        got = media_type(content_type)
        if got != wanted:
            raise InputError(
                415,
                "unsupported-media-type",
                f"{route} takes Content-Type {wanted}, got {got or 'none'}",
            )
        if content_length is not None and content_length > self.limits.max_body_bytes:
            raise self.too_large(content_length)

    def too_large(self, size_bytes: int | None = None) -> InputError:
        limit = self.limits.max_body_bytes
        got = f"is {size_bytes} bytes" if size_bytes is not None else "is larger than that"
        return InputError(
            413, "payload-too-large", f"the request body {got}; the limit (max_body_bytes) is {limit} bytes"
        )

    def handle(self, route: str, content_type: str | None, body: bytes) -> Reply:
        """Answer one prediction request. InputError -> its 4xx; anything else propagates (-> 500)."""
        try:
            self.precheck(route, content_type, len(body))
            if route == PREDICT:
                return self._predict_tabular(body)
            return self._predict_image(route, content_type, body)
        except InputError as exc:
            return error_reply(exc.status, exc.code, exc.message)

    def timed_out(self, note: str) -> Reply:
        """The request ran past request_timeout_s (a server-side limit, so 503, not a 4xx)."""
        limit = self.limits.request_timeout_s
        return error_reply(
            503,
            "request-timeout",
            f"the request ran past this target's limit (request_timeout_s) of {limit:g} s; {note}",
        )

    def stall_gate(self, predict: bool) -> None:
        """The injected stall, called by the adapters as a request arrives (``predict``: a prediction route),
        only when ``stalls``. The clock starts at this process's first prediction request; the first one
        arriving at or after ``inject_stall_at_s`` starts a stall of ``inject_stall_s``, once per process.
        The request that starts it, and every request that arrives during it, blocks here until it ends:
        a whole-process pause (like a long GC pause) wherever the adapter calls this from the event loop
        (FastAPI) or from each request (Flask)."""
        now = time.perf_counter_ns()
        with self._stall_lock:
            until = self._stall_until_ns
            if until == 0 and predict:
                if self._first_predict_ns is None:
                    self._first_predict_ns = now
                if now - self._first_predict_ns >= self._stall_at_ns:
                    until = self._stall_until_ns = now + self._stall_ns
                    log.warning("injected stall: this process answers nothing for %g s", self._stall_ns / 1e9)
        if now < until:
            sleep_until_ns(until)

    def record_internal_error(self, exc: BaseException) -> Reply:
        self.internal_errors += 1
        log.error("unexpected error while handling a request", exc_info=exc)
        return error_reply(500, "internal-error", f"unexpected {type(exc).__name__} in the target")

    # -- dynamic batching (deploybench.targets.batching) -----------------------------------------------
    def prepare(self, route: str, content_type: str | None, body: bytes) -> Prepared:
        """Precheck, parse and validate a prediction request into its rows. InputError."""
        self.precheck(route, content_type, len(body))
        if route == PREDICT:
            batch, is_batch, t = self.prepare_tabular(body)
            return Prepared(route, batch, is_batch, t)
        tensor, t = self._prepare_image(route, content_type, body)
        return Prepared(route, tensor, False, t)

    def model_call(self, batch: np.ndarray) -> np.ndarray:
        """One (batched) model call: the scores of every row (+ inject_delay_ms once per call). The batcher's
        run function; non-finite scores are checked per request in ``finish``."""
        t0 = time.perf_counter_ns()
        probs = self._scores(batch)
        if self.on_infer_ns is not None:
            self.on_infer_ns(time.perf_counter_ns() - t0)
        return probs

    def finish(self, prepared: Prepared, result: BatchResult) -> Reply:
        """The reply to a prepared request from its share of a batch. InputError on non-finite scores."""
        t = prepared.timings
        t.infer_ns, t.queue_ns, t.batch_rows = result.infer_ns, result.queue_ns, result.batch_rows
        probs = result.scores
        if not np.isfinite(probs).all():
            raise InputError(422, "non-finite-output", "the model produced non-finite scores for this input")
        if prepared.route == PREDICT:
            return self.finish_tabular(probs, prepared.is_batch, t)
        return self._finish_image(probs[0], t)

    def handle_batched(
        self, route: str, content_type: str | None, body: bytes, submit: Callable[[np.ndarray], BatchResult]
    ) -> Reply:
        """``handle`` through a blocking batcher (``ThreadBatcher.submit``): a bad input is answered before
        it is enqueued, so it never reaches a batch."""
        try:
            prepared = self.prepare(route, content_type, body)
            return self.finish(prepared, submit(prepared.rows))
        except InputError as exc:
            return error_reply(exc.status, exc.code, exc.message)

    # -- internals ---------------------------------------------------------------------------------
    def _scores(self, batch: np.ndarray) -> np.ndarray:
        probs = np.asarray(self.predictor.predict(batch))
        if probs.dtype.kind != "f":  # float32 (all our predictors) / float64 are used as they are
            probs = probs.astype(np.float64)
        if self.config.inject_delay_ms > 0:  # deliberate extra service time (gate tests, demos)
            busy_wait_ns(round(self.config.inject_delay_ms * 1e6))
        return probs

    def _infer(self, batch: np.ndarray, t: Timings) -> np.ndarray:
        t0 = time.perf_counter_ns()
        probs = np.asarray(self.predictor.predict(batch))
        if probs.dtype.kind != "f":  # float32 (all our predictors) / float64 are used as they are
            probs = probs.astype(np.float64)
        if self.config.inject_delay_ms > 0:  # deliberate extra service time (gate tests, demos)
            busy_wait_ns(round(self.config.inject_delay_ms * 1e6))
        t.infer_ns = time.perf_counter_ns() - t0
        if self.on_infer_ns is not None:
            self.on_infer_ns(t.infer_ns)
        if not np.isfinite(probs).all():  # the method, not np.all: a hot spot on a fast model
            raise InputError(422, "non-finite-output", "the model produced non-finite scores for this input")
        return probs

    def _predict_tabular(self, body: bytes) -> Reply:
        batch, is_batch, t = self.prepare_tabular(body)
        return self.finish_tabular(self.infer(batch, t), is_batch, t)

    # The tabular request in three steps, so that an adapter can run only the inference in a worker thread
    # (the FastAPI threadpool handler: parsing and encoding in a thread would hold the GIL there and stall
    # the event loop for whole switch intervals).
    def prepare_tabular(self, body: bytes) -> tuple[np.ndarray, bool, Timings]:
        """Parse and validate a /predict body: (batch, is it a batch request, timings so far). InputError."""
        t = Timings()
        t0 = time.perf_counter_ns()
        obj = parse_json(body)
        t1 = time.perf_counter_ns()
        batch, is_batch = validate_features(
            obj,
            max_batch=self.limits.max_batch,
            n_features=self.input_shape[0],
            allow_negative=self.allow_negative,
        )
        t2 = time.perf_counter_ns()
        t.decode_ns, t.preprocess_ns = t1 - t0, t2 - t1
        return batch, is_batch, t

    def infer(self, batch: np.ndarray, t: Timings) -> np.ndarray:
        """The model's scores for a validated batch (timed into ``t``). InputError on non-finite scores."""
        return self._infer(batch, t)

    def finish_tabular(self, probs: np.ndarray, is_batch: bool, t: Timings) -> Reply:
        """The 200 reply for a /predict batch's scores."""
        items = [self._tabular_item(row) for row in probs.tolist()]  # Python floats: no numpy per value
        out = {"predictions": items} if is_batch else items[0]
        return Reply(200, out, {"Server-Timing": t.header()})

    def _tabular_item(self, p: list[float]) -> dict[str, Any]:
        i = max(range(len(p)), key=p.__getitem__)  # the first highest, as np.argmax
        return {
            "prediction": self.class_names[i],
            "class_id": i,
            "probabilities": dict(zip(self.class_names, p, strict=True)),
            "confidence": p[i],
        }

    def _predict_image(self, route: str, content_type: str | None, body: bytes) -> Reply:
        tensor, t = self._prepare_image(route, content_type, body)
        return self._finish_image(self._infer(tensor, t)[0], t)

    def _prepare_image(self, route: str, content_type: str | None, body: bytes) -> tuple[np.ndarray, Timings]:
        t = Timings()
        t0 = time.perf_counter_ns()
        if route == PREDICT_IMAGE:
            data = multipart_file(body, content_type, field_name="file")
        else:
            data = decode_base64_image(parse_json(body))
        img = decode_image(data, max_pixels=self.limits.max_pixels)
        t1 = time.perf_counter_ns()
        tensor = self.transform(img)[np.newaxis]
        t2 = time.perf_counter_ns()
        t.decode_ns, t.preprocess_ns = t1 - t0, t2 - t1
        return tensor, t

    def _finish_image(self, probs: np.ndarray, t: Timings) -> Reply:
        top = top_k(probs, self.class_names, TOP_K)
        out = {
            "top_class": top[0]["class"],
            "class_id": top[0]["class_id"],
            "confidence": top[0]["probability"],
            "top_5": top,
            "inference_time_ms": round(t.infer_ns / 1e6, 3),
        }
        return Reply(200, out, {"Server-Timing": t.header()})


def multipart_file(body: bytes, content_type: str | None, *, field_name: str) -> bytes:
    """The bytes of the one part named ``field_name`` in a multipart/form-data body."""
    _, params = parse_options_header(content_type or "")
    boundary = params.get(b"boundary")
    if not boundary:
        raise InputError(400, "invalid-multipart", "multipart/form-data needs a boundary parameter")

    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    state: dict[str, Any] = {"field": b"", "value": b"", "ended": False}

    def on_part_begin() -> None:
        parts.append(({}, bytearray()))

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        parts[-1][0][state["field"].lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].extend(data[start:end])

    def on_end() -> None:
        state["ended"] = True

    callbacks = {
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_part_data": on_part_data,
        "on_end": on_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, ValueError, IndexError) as exc:
        raise InputError(400, "invalid-multipart", f"the multipart body is malformed: {exc}") from None
    if not state["ended"]:
        raise InputError(400, "invalid-multipart", "the multipart body is truncated (no closing boundary)")
    found = []
    for headers, data in parts:
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        if disp.get(b"name", b"").decode("latin-1") == field_name:
            found.append(bytes(data))
    if not found:
        raise InputError(422, "missing-file", f"the multipart body has no part named {field_name!r}")
    if len(found) > 1:
        raise InputError(
            422, "invalid-request", f"the multipart body has {len(found)} parts named {field_name!r}"
        )
    return found[0]


def signal_ready(ok: bool, detail: str = "") -> None:
    """Tell the launcher this worker is ready (or failed) via a file in DEPLOYBENCH_READY_DIR, if set."""
    ready_dir = os.environ.get(READY_DIR_ENV)
    if not ready_dir:
        return
    path = Path(ready_dir) / f"{os.getpid()}.{'ready' if ok else 'failed'}"
    with contextlib.suppress(OSError):  # the launcher went away; nothing to tell
        path.write_text(detail)


def load_service(config: TargetConfig) -> Service:
    """Service.load + readiness signal; a failure is signalled before it propagates (fail fast)."""
    try:
        svc = Service.load(config)
    except BaseException as exc:
        signal_ready(False, f"{type(exc).__name__}: {exc}")
        raise
    signal_ready(True)
    return svc


# -- OpenAPI ---------------------------------------------------------------------------------------------
def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_schema(
    task: str,
    limits: Any,
    *,
    title: str = "deploybench target",
    n_features: int = N_IRIS_FEATURES,
    allow_negative: bool = False,
) -> dict[str, Any]:
    """The OpenAPI 3.0 document both frameworks publish at /openapi.json (FastAPI's /docs renders it).

    Request bodies carry the real limits (max_batch, feature bounds, the model's number of features); every
    documented 4xx is one the target really returns. On a target serving the other model kind a route
    answers 409 only.
    """
    feature = {
        "type": "number",
        "minimum": -MAX_FEATURE_VALUE if allow_negative else 0,
        "maximum": MAX_FEATURE_VALUE,
    }
    row = {"type": "array", "items": feature, "minItems": n_features, "maxItems": n_features}
    prob = {"type": "number", "minimum": 0, "maximum": 1}
    tabular_item = {
        "type": "object",
        "required": ["prediction", "class_id", "probabilities", "confidence"],
        "properties": {
            "prediction": {"type": "string"},
            "class_id": {"type": "integer", "minimum": 0},
            "probabilities": {"type": "object", "additionalProperties": prob},
            "confidence": prob,
        },
    }
    top_item = {
        "type": "object",
        "required": ["class", "class_id", "probability"],
        "properties": {"class": {"type": "string"}, "class_id": {"type": "integer"}, "probability": prob},
    }
    schemas = {
        "Error": {
            "type": "object",
            "required": ["error", "detail"],
            "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
        },
        "Health": {
            "type": "object",
            "required": ["status", "version", "framework", "model", "format"],
            "properties": {
                "status": {"type": "string", "enum": ["ok"]},
                "version": {"type": "string"},
                "framework": {"type": "string"},
                "server": {"type": "string"},
                "handler": {
                    "type": "string",
                    "description": "FastAPI: where the inference runs, inline | threadpool; Flask: empty",
                },
                "model": {"type": "string"},
                "format": {"type": "string"},
                "task": {"type": "string"},
                "pid": {"type": "integer"},
                "internal_errors": {"type": "integer"},
                "input": {
                    "type": "object",
                    "description": "tabular: {kind, n_features}; image: {kind, shape: [C, H, W]}",
                },
                "n_classes": {"type": "integer"},
                "model_file": {"type": "object", "description": "a user's model file: path, sha256, ..."},
                "batching": {
                    "type": "object",
                    "description": "dynamic batching: {max_batch_size, max_queue_delay_us}; "
                    "max_batch_size 0 = off",
                },
                "onnxruntime": {
                    "type": "object",
                    "description": "an onnx format's session options: {ort_opt_level, inter_op_threads, "
                    "intra_op_threads}",
                },
            },
        },
        "FeaturesRequest": {
            "type": "object",
            "required": ["features"],
            "properties": {"features": row},
            "additionalProperties": False,
        },
        "InstancesRequest": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {"type": "array", "items": row, "minItems": 1, "maxItems": limits.max_batch}
            },
            "additionalProperties": False,
        },
        "TabularPrediction": tabular_item,
        "TabularBatchPrediction": {
            "type": "object",
            "required": ["predictions"],
            "properties": {
                "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/TabularPrediction"}}
            },
        },
        "ImagePrediction": {
            "type": "object",
            "required": ["top_class", "class_id", "confidence", "top_5", "inference_time_ms"],
            "properties": {
                "top_class": {"type": "string"},
                "class_id": {"type": "integer", "minimum": 0},
                "confidence": prob,
                "top_5": {"type": "array", "items": top_item, "maxItems": TOP_K},
                "inference_time_ms": {"type": "number", "minimum": 0},
            },
        },
        "Base64ImageRequest": {
            "type": "object",
            "required": ["image"],
            "properties": {
                "image": {
                    "type": "string",
                    "description": "Base64 image bytes, or a data:image/<type>;base64,... URL",
                }
            },
            "additionalProperties": False,
        },
    }
    server_timing = {
        "Server-Timing": {
            "description": "decode;dur=<ms>, preprocess;dur=<ms>, infer;dur=<ms> (with dynamic batching also "
            'queue;dur=<ms>, batch;desc="<rows>")',
            "schema": {"type": "string"},
        }
    }

    def ok(ref: str | list[str]) -> dict[str, Any]:
        refs = [ref] if isinstance(ref, str) else ref
        s = (
            {"$ref": f"#/components/schemas/{refs[0]}"}
            if len(refs) == 1
            else {"oneOf": [{"$ref": f"#/components/schemas/{r}"} for r in refs]}
        )
        return {
            "description": "prediction",
            "headers": server_timing,
            "content": {"application/json": {"schema": s}},
        }

    def operation(route: str, summary: str, body: dict[str, Any], success: dict[str, Any]) -> dict[str, Any]:
        served = ROUTES[route][0] == task
        responses: dict[str, Any] = {"409": _error_response("this target serves the other model kind")}
        if served:
            responses = {
                "200": success,
                "400": _error_response("malformed JSON or multipart body"),
                "413": _error_response("body over max_body_bytes, or image over max_pixels"),
                "415": _error_response("wrong Content-Type"),
                "422": _error_response("well-formed but invalid input (keys, values, image data)"),
            }
        return {
            "post": {
                "summary": summary,
                "requestBody": {"required": True, "content": body},
                "responses": responses,
            }
        }

    json_body = {
        "application/json": {
            "schema": {
                "oneOf": [
                    {"$ref": "#/components/schemas/FeaturesRequest"},
                    {"$ref": "#/components/schemas/InstancesRequest"},
                ]
            }
        }
    }
    multipart_body = {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary"}},
            }
        }
    }
    b64_body = {"application/json": {"schema": {"$ref": "#/components/schemas/Base64ImageRequest"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": __version__},
        "paths": {
            "/health": {
                "get": {
                    "summary": "readiness: the model is loaded and warmed up",
                    "responses": {
                        "200": {
                            "description": "ready",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/Health"}}
                            },
                        }
                    },
                }
            },
            PREDICT: operation(
                PREDICT,
                "classify one row ({features}) or a batch ({instances})",
                json_body,
                ok(["TabularPrediction", "TabularBatchPrediction"]),
            ),
            PREDICT_IMAGE: operation(
                PREDICT_IMAGE,
                "classify an uploaded image (multipart field 'file')",
                multipart_body,
                ok("ImagePrediction"),
            ),
            PREDICT_IMAGE_BASE64: operation(
                PREDICT_IMAGE_BASE64, "classify a Base64 / data-URL image", b64_body, ok("ImagePrediction")
            ),
        },
        "components": {"schemas": schemas},
    }
