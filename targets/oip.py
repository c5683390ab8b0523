"""The Open Inference Protocol v2 (KServe / Triton "v2" REST) on the reference targets, over ``Service``.

Any OIP client (perf_analyzer, KServe's or Triton's HTTP client with JSON tensors, curl) can drive a
deploybench target, and deploybench's ``oip`` load scenario can drive any OIP server. Framework-independent
like ``Service``: ``OipService`` answers with ``Reply`` objects; ``register_fastapi`` / ``register_flask``
add the routes to the two apps.

Routes (``{name}`` is the served model's name, ``config.model``; version ``1`` is the only one)::

    GET  /v2                                  server metadata {name, version, extensions}
    GET  /v2/health/live, /v2/health/ready    {"live": true} / {"ready": true}
    GET  /v2/models/{name}[/versions/1]       model metadata (inputs/outputs: name, datatype, shape)
    GET  /v2/models/{name}[/versions/1]/ready {"name", "ready": true}
    POST /v2/models/{name}[/versions/1]/infer inference (JSON tensors; the binary extension is refused)

The model's one input is ``input``: a tabular model takes ``[N, n_features]`` numbers (FP32, also FP64,
FP16 and INT/UINT types, converted to float32 for the model); an image model takes an already preprocessed
``FP32 [N, C, H, W]`` tensor of the model's size, or ``BYTES [N]`` encoded image files (Base64 strings or
``data:image/...;base64,`` URLs, decoded and preprocessed as ``/predict/image/base64``). ``data`` may be
flat (row-major) or nested as the shape. Outputs: ``probabilities`` (FP32 ``[N, n_classes]``), ``label``
(INT64 ``[N]``, the first highest class id, as ``/predict``'s ``class_id``) and ``class_name`` (BYTES
``[N]``); all of them unless the request's ``outputs`` names some. Every request the target cannot accept
is a 4xx ``{"error": "<what is wrong>", "code": "<machine-readable code>"}`` (400 for a malformed or
mismatched request, 404 for an unknown model or version, 413 over a size limit, 415 for a media type other
than JSON); a reply carries ``Server-Timing`` as ``/predict`` does.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from deploybench import __version__
from deploybench.targets.batching import AsyncBatcher, BatchResult, ThreadBatcher, run_batched
from deploybench.targets.catalog import MODELS
from deploybench.targets.preprocess import (
    MAX_FEATURE_VALUE,
    InputError,
    decode_base64_image,
    decode_image,
    parse_json,
)
from deploybench.targets.service import Reply, Service, Timings, media_type

if TYPE_CHECKING:  # the apps import this module: no framework import at run time beyond the adapter's own
    from fastapi import FastAPI
    from flask import Flask

PREFIX = "/v2"
SERVER_NAME = "deploybench"
MODEL_VERSION = "1"
INPUT_NAME = "input"
OUTPUTS: tuple[str, ...] = ("probabilities", "label", "class_name")
# OIP datatypes a tabular input may use -> numpy dtype (for the range check); all become float32
NUMERIC_DATATYPES: dict[str, Any] = {
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
}  # fmt: skip
ALL_DATATYPES = (*NUMERIC_DATATYPES, "BOOL", "BYTES")
PLATFORMS = {
    "onnx": "onnxruntime_onnx",
    "onnx-int8": "onnxruntime_onnx",
    "torchscript": "pytorch_libtorch",
    "pt2": "pytorch_pt2",
}
# the binary tensor extension's header: its body is not JSON
BINARY_HEADER = "inference-header-content-length"


def oip_error(status: int, code: str, message: str) -> Reply:
    """An OIP error reply: ``{"error": message, "code": code}`` (OIP clients show ``error``)."""
    return Reply(status, {"error": message, "code": code})


def error_from(exc: InputError) -> Reply:
    """An ``InputError`` as an OIP reply; a 422 (well-formed but unacceptable) is OIP's 400."""
    return oip_error(400 if exc.status == 422 else exc.status, exc.code, exc.message)


def _bad(message: str, code: str = "invalid-inference-request") -> InputError:
    return InputError(400, code, message)


TYPE_NAMES: dict[type, str] = {
    bool: "a boolean", str: "a string", type(None): "null", list: "an array", dict: "an object",
    float: "a float",
}  # fmt: skip


def _type_name(value: Any) -> str:
    return TYPE_NAMES.get(type(value), type(value).__name__)


@dataclass
class Prepared:
    """A validated infer request: the model's batch and what the reply carries."""

    batch: np.ndarray
    outputs: list[str]
    request_id: str | None
    timings: Timings

    @property
    def rows(self) -> np.ndarray:
        """The rows a dynamic batcher takes (``deploybench.targets.batching``)."""
        return self.batch


class OipService:
    """The OIP v2 routes of one ``Service``."""

    def __init__(self, service: Service) -> None:
        self.svc = service
        self.name = service.config.model
        self.is_image = service.task == "image"

    # -- health and metadata ----------------------------------------------------------------------------
    def server_metadata(self) -> Reply:
        return Reply(200, {"name": SERVER_NAME, "version": __version__, "extensions": []})

    def live(self) -> Reply:
        return Reply(200, {"live": True})

    def ready(self) -> Reply:
        return Reply(200, {"ready": True})  # the app exists only once the model is loaded and warmed up

    def check_model(self, name: str, version: str | None = None) -> None:
        """InputError 404 unless ``name`` (and ``version``, if given) is the served model."""
        if name != self.name:
            raise InputError(404, "unknown-model", f"no model {name!r}; this server serves {self.name!r}")
        if version is not None and version != MODEL_VERSION:
            raise InputError(
                404, "unknown-version", f"model {name!r} has no version {version!r}; it has {MODEL_VERSION!r}"
            )

    def model_ready(self, name: str, version: str | None = None) -> Reply:
        try:
            self.check_model(name, version)
        except InputError as exc:
            return error_from(exc)
        return Reply(200, {"name": self.name, "ready": True})

    def input_shape(self) -> list[int]:
        """The input's shape, -1 for the batch dimension (image BYTES inputs are ``[-1]`` instead)."""
        return [-1, *self.svc.input_shape]

    def metadata(self) -> dict[str, Any]:
        svc = self.svc
        n_classes = len(svc.class_names)
        zoo = MODELS.get(svc.config.model) if svc.config.model_file is None else None
        fmt = svc.config.format
        platform = PLATFORMS.get(fmt) or (
            "sklearn" if zoo is not None and zoo.library == "scikit-learn" else f"deploybench_{fmt}"
        )
        return {
            "name": self.name,
            "versions": [MODEL_VERSION],
            "platform": platform,
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": self.input_shape()}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "class_name", "datatype": "BYTES", "shape": [-1]},
            ],
            "parameters": {"task": svc.task, "format": fmt, "n_classes": n_classes},
        }

    def model_metadata(self, name: str, version: str | None = None) -> Reply:
        try:
            self.check_model(name, version)
        except InputError as exc:
            return error_from(exc)
        return Reply(200, self.metadata())

    # -- inference ----------------------------------------------------------------------------------------
    def precheck(
        self, name: str, version: str | None, content_type: str | None, content_length: int | None
    ) -> None:
        """Checks that need no body: the model, the media type, the declared size. Raises InputError."""
        self.check_model(name, version)
        got = media_type(content_type)
        if got not in ("", "application/json"):
            raise InputError(
                415,
                "unsupported-media-type",
                f"an infer request is JSON: Content-Type application/json (or none), got {got} (the binary "
                "tensor extension is not supported)",
            )
        if content_length is not None and content_length > self.svc.limits.max_body_bytes:
            raise self.svc.too_large(content_length)

    def infer(self, name: str, version: str | None, content_type: str | None, body: bytes) -> Reply:
        """Answer one infer request (all in this thread)."""
        try:
            self.precheck(name, version, content_type, len(body))
            req = self.prepare(body)
            return self.finish(req, self.svc.infer(req.batch, req.timings))
        except InputError as exc:
            return error_from(exc)

    def prepare(self, body: bytes) -> Prepared:
        """Parse and validate an infer request body (after ``precheck``). Raises InputError."""
        t = Timings()
        t0 = time.perf_counter_ns()
        obj = parse_json(body)
        t1 = time.perf_counter_ns()
        if not isinstance(obj, dict):
            raise _bad(f"the infer request must be a JSON object, got {_type_name(obj)}")
        extra = sorted(set(obj) - {"id", "inputs", "outputs", "parameters"})
        if extra:
            raise _bad(
                f"unknown key(s) {', '.join(map(repr, extra))}; expected id, inputs, outputs, parameters"
            )
        request_id = obj.get("id")
        if request_id is not None and not isinstance(request_id, str):
            raise _bad(f"'id' must be a string, got {_type_name(request_id)}")
        _check_parameters(obj.get("parameters"), "parameters", "binary_data_output")
        outputs = self._requested_outputs(obj.get("outputs"))
        tensor = self._one_input(obj.get("inputs"))
        if tensor["datatype"] == "BYTES":
            batch, decode_ns = self._image_files(tensor)
            t1 += decode_ns  # decoding the files counts as decode, their resize/normalise as preprocess
        elif self.is_image:
            batch = self._image_tensor(tensor)
        else:
            batch = self._tabular(tensor)
        t2 = time.perf_counter_ns()
        t.decode_ns, t.preprocess_ns = t1 - t0, t2 - t1
        return Prepared(batch, outputs, request_id, t)

    def finish_batched(self, req: Prepared, result: BatchResult) -> Reply:
        """The reply from a request's share of a dynamic batch (its queue wait and batch size in
        Server-Timing, as on /predict). InputError on non-finite scores."""
        t = req.timings
        t.infer_ns, t.queue_ns, t.batch_rows = result.infer_ns, result.queue_ns, result.batch_rows
        if not np.isfinite(result.scores).all():
            raise InputError(422, "non-finite-output", "the model produced non-finite scores for this input")
        return self.finish(req, result.scores)

    def finish(self, req: Prepared, probs: np.ndarray) -> Reply:
        """The 200 reply for a prepared request's scores."""
        probs = np.asarray(probs).astype(np.float32, copy=False)
        n, n_classes = probs.shape
        out: list[dict[str, Any]] = []
        labels: list[int] | None = None
        for name in req.outputs:
            if name == "probabilities":
                data: list[Any] = probs.ravel().tolist()
                out.append({"name": name, "datatype": "FP32", "shape": [n, n_classes], "data": data})
                continue
            if labels is None:
                labels = [int(i) for i in np.argmax(probs, axis=1)]  # the first highest, as /predict
            if name == "label":
                out.append({"name": name, "datatype": "INT64", "shape": [n], "data": labels})
            else:
                names = [self.svc.class_names[i] for i in labels]
                out.append({"name": name, "datatype": "BYTES", "shape": [n], "data": names})
        body: dict[str, Any] = {"model_name": self.name, "model_version": MODEL_VERSION}
        if req.request_id is not None:
            body["id"] = req.request_id
        body["outputs"] = out
        return Reply(200, body, {"Server-Timing": req.timings.header()})

    # -- request parts ------------------------------------------------------------------------------------
    def _requested_outputs(self, outputs: Any) -> list[str]:
        if outputs is None:
            return list(OUTPUTS)
        if not isinstance(outputs, list) or not outputs:
            raise _bad(f"'outputs' must be a non-empty array of {{'name': ...}}, got {_type_name(outputs)}")
        names: list[str] = []
        for i, o in enumerate(outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise _bad(f"outputs[{i}] must be an object with a string 'name'")
            extra = sorted(set(o) - {"name", "parameters"})
            if extra:
                raise _bad(f"outputs[{i}] has unknown key(s) {', '.join(map(repr, extra))}")
            _check_parameters(o.get("parameters"), f"outputs[{i}].parameters", "binary_data")
            if o["name"] not in OUTPUTS:
                raise _bad(f"outputs[{i}]: no output {o['name']!r}; this model has {', '.join(OUTPUTS)}")
            if o["name"] in names:
                raise _bad(f"outputs[{i}]: {o['name']!r} is requested twice")
            names.append(o["name"])
        return names

    def _one_input(self, inputs: Any) -> dict[str, Any]:
        if not isinstance(inputs, list):
            raise _bad(f"'inputs' must be an array of one tensor, got {_type_name(inputs)}")
        if len(inputs) != 1:
            raise _bad(f"this model takes one input tensor ({INPUT_NAME!r}), got {len(inputs)}")
        tensor = inputs[0]
        where = "inputs[0]"
        if not isinstance(tensor, dict):
            raise _bad(f"{where} must be an object {{name, shape, datatype, data}}, got {_type_name(tensor)}")
        missing = [k for k in ("name", "shape", "datatype", "data") if k not in tensor]
        if missing:
            raise _bad(f"{where} lacks {', '.join(map(repr, missing))}")
        extra = sorted(set(tensor) - {"name", "shape", "datatype", "data", "parameters"})
        if extra:
            raise _bad(f"{where} has unknown key(s) {', '.join(map(repr, extra))}")
        if not isinstance(tensor["name"], str):
            raise _bad(f"{where}.name must be a string, got {_type_name(tensor['name'])}")
        _check_parameters(tensor.get("parameters"), f"{where}.parameters", "binary_data_size")
        shape = tensor["shape"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise _bad(f"{where}.shape must be an array of non-negative integers, got {shape!r}"[:300])
        datatype = tensor["datatype"]
        if datatype not in ALL_DATATYPES:
            raise _bad(
                f"{where}.datatype {datatype!r} is not an OIP datatype ({', '.join(ALL_DATATYPES)})"[:300]
            )
        allowed = ("FP32", "FP64", "FP16", "BYTES") if self.is_image else tuple(NUMERIC_DATATYPES)
        if datatype not in allowed:
            raise _bad(f"{where}.datatype {datatype} is not accepted by this model; use {', '.join(allowed)}")
        if not isinstance(tensor["data"], list):
            raise _bad(
                f"{where}.data must be an array (flat or nested as the shape), "
                f"got {_type_name(tensor['data'])}"
            )
        return tensor

    def _check_batch(self, n: int, where: str) -> None:
        if n < 1:
            raise _bad(f"{where}: the batch dimension is 0; give at least one item", "empty-batch")
        if n > self.svc.limits.max_batch:
            raise _bad(
                f"{where}: a batch of {n}; this target accepts at most {self.svc.limits.max_batch} "
                "(max_batch)",
                "batch-too-large",
            )

    def _tabular(self, tensor: dict[str, Any]) -> np.ndarray:
        shape, datatype = tensor["shape"], tensor["datatype"]
        n_features = self.svc.input_shape[0]
        if len(shape) != 2 or shape[1] != n_features:
            raise _bad(
                f"inputs[0].shape must be [N, {n_features}] (N rows of {n_features} features), got {shape}"
            )
        self._check_batch(shape[0], "inputs[0].shape")
        values = _numbers(tensor["data"], shape, datatype)
        lowest = -MAX_FEATURE_VALUE if self.svc.allow_negative else 0.0
        bad = ~((values >= lowest) & (values <= MAX_FEATURE_VALUE))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            rule = (
                f"between {-MAX_FEATURE_VALUE:g} and"
                if self.svc.allow_negative
                else ">= 0 (a length in cm) and <="
            )
            raise _bad(
                f"inputs[0].data[{i}] is {values.flat[i].item()!r}; each feature must be {rule} "
                f"{MAX_FEATURE_VALUE:g}"
            )
        return values.astype(np.float32).reshape(shape)

    def _image_tensor(self, tensor: dict[str, Any]) -> np.ndarray:
        shape, datatype = tensor["shape"], tensor["datatype"]
        want = list(self.svc.input_shape)
        if len(shape) != 1 + len(want) or shape[1:] != want:
            raise _bad(
                f"inputs[0].shape must be [N, {', '.join(map(str, want))}] (a preprocessed image tensor), or "
                f"use datatype BYTES with shape [N] for encoded image files; got {shape}"
            )
        self._check_batch(shape[0], "inputs[0].shape")
        values = _numbers(tensor["data"], shape, datatype).astype(np.float32)
        if not np.isfinite(values).all():
            i = int(np.flatnonzero(~np.isfinite(values))[0])
            raise _bad(f"inputs[0].data[{i}] is out of the float32 range")
        return values.reshape(shape)

    def _image_files(self, tensor: dict[str, Any]) -> tuple[np.ndarray, int]:
        """BYTES [N] (or [N, 1]) of Base64 image files -> the batch, and the time spent decoding (ns)."""
        shape, data = tensor["shape"], tensor["data"]
        if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
            raise _bad(f"inputs[0].shape for BYTES image files must be [N] or [N, 1], got {shape}")
        self._check_batch(shape[0], "inputs[0].shape")
        if len(data) == shape[0] and len(shape) == 2:
            data = [d[0] if isinstance(d, list) and len(d) == 1 else d for d in data]
        if len(data) != shape[0]:
            raise _bad(
                f"inputs[0].shape {shape} has {shape[0]} elements, data has {len(data)}", "shape-mismatch"
            )
        decode_ns = 0
        items = []
        for i, s in enumerate(data):
            if not isinstance(s, str):
                raise _bad(
                    f"inputs[0].data[{i}] must be a Base64 string of an image file, got {_type_name(s)}"
                )
            t0 = time.perf_counter_ns()
            try:
                img = decode_image(decode_base64_image({"image": s}), max_pixels=self.svc.limits.max_pixels)
            except InputError as exc:
                raise InputError(exc.status, exc.code, f"inputs[0].data[{i}]: {exc.message}") from None
            t1 = time.perf_counter_ns()
            decode_ns += t1 - t0
            items.append(self.svc.transform(img))
        return np.stack(items), decode_ns


def _check_parameters(params: Any, where: str, binary_key: str) -> None:
    """``parameters`` must be an object; asking for the binary tensor extension is refused."""
    if params is None:
        return
    if not isinstance(params, dict):
        raise _bad(f"{where} must be an object, got {_type_name(params)}")
    if params.get(binary_key) or params.get("binary_data"):
        raise _bad(
            f"{where}: the binary tensor extension is not supported; send JSON data (binary_data false)",
            "binary-data-unsupported",
        )


def _numbers(data: list[Any], shape: list[int], datatype: str) -> np.ndarray:
    """A tensor's ``data`` (flat row-major, or nested as ``shape``) -> a flat float64/int64 array, checked
    against ``shape`` (element count / nesting) and ``datatype`` (numbers of that kind, within its range).
    InputError 400 naming the mismatch."""
    n = math.prod(shape)
    nested = bool(data) and isinstance(data[0], list)
    if nested:
        try:
            arr = np.asarray(data)
        except (ValueError, OverflowError, TypeError):
            raise _bad(f"inputs[0].data is a ragged nested array; it must be nested as the shape {shape}",
                       "shape-mismatch") from None  # fmt: skip
        if list(arr.shape) != shape:
            raise _bad(
                f"inputs[0].data is nested as {list(arr.shape)}, the shape says {shape}", "shape-mismatch"
            )
        items: Any = data
        for _ in range(len(shape) - 1):
            items = itertools.chain.from_iterable(items)
        types = set(map(type, items))
    else:
        if len(data) != n:
            raise _bad(f"inputs[0].shape {shape} has {n} elements, data has {len(data)}", "shape-mismatch")
        types = set(map(type, data))
        try:
            arr = np.asarray(data)
        except (ValueError, OverflowError, TypeError):
            arr = np.asarray(data, dtype=object)
    is_int = datatype.startswith(("INT", "UINT"))
    allowed = {int} if is_int else {int, float}
    if not types <= allowed:
        wrong = sorted(TYPE_NAMES.get(t, t.__name__) for t in types - allowed)
        kind = "integers" if is_int else "numbers"
        raise _bad(f"inputs[0].data must hold {kind} for datatype {datatype}, found {', '.join(wrong)}")
    if arr.dtype == object:  # integers beyond 64 bits
        raise _bad(f"inputs[0].data has integers too large for datatype {datatype}")
    flat = arr.reshape(-1)
    np_type = NUMERIC_DATATYPES[datatype]
    info = np.iinfo(np_type) if is_int else np.finfo(np_type)
    if flat.dtype.kind == "f" and not np.isfinite(flat).all():
        i = int(np.flatnonzero(~np.isfinite(flat))[0])
        raise _bad(f"inputs[0].data[{i}] is not a finite number")
    if flat.size and (flat.min() < info.min or flat.max() > info.max):
        i = int(np.flatnonzero((flat < info.min) | (flat > info.max))[0])
        raise _bad(f"inputs[0].data[{i}] = {flat[i].item()!r} is out of the {datatype} range")
    return flat if flat.dtype.kind == "f" else flat.astype(np.float64)


# -- the apps --------------------------------------------------------------------------------------------
def register_fastapi(
    app: FastAPI,
    service: Service,
    *,
    read_body: Callable[[Any, Service], Awaitable[bytes]],
    respond: Callable[[Reply], Any],
    content_length: Callable[[Any], int | None],
    batcher: AsyncBatcher | None = None,
) -> OipService:
    """Add the OIP v2 routes to a FastAPI target (the inference runs as the app's handler style says);
    ``read_body`` / ``respond`` / ``content_length`` are the app's own (the same body limits and responses as
    /predict)."""
    from anyio import to_thread  # import cost: the FastAPI adapter's own dependencies, not Flask's
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import Response

    oip = OipService(service)
    svc = service
    timeout_s = svc.limits.request_timeout_s
    timeout_ns = round(timeout_s * 1e9)
    inline = svc.handler == "inline"

    async def infer(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version")
        start_ns = time.perf_counter_ns()  # the deadline counts from here, as on /predict
        content_type = request.headers.get("content-type")
        try:
            oip.precheck(name, version, content_type, content_length(request))
            body = await read_body(request, svc)
        except InputError as exc:
            return respond(error_from(exc))
        except ClientDisconnect:
            return Response(status_code=400)
        if batcher is not None:  # dynamic batching, as on /predict
            left_s = timeout_s - (time.perf_counter_ns() - start_ns) / 1e9
            try:
                reply = await run_batched(batcher, lambda: oip.prepare(body), oip.finish_batched,
                                      off_loop=oip.is_image and not inline, left_s=left_s)  # fmt: skip
            except InputError as exc:
                reply = error_from(exc)
            except TimeoutError:
                reply = svc.timed_out("it waited that long for its batch")
            return respond(reply)
        if inline:
            if time.perf_counter_ns() - start_ns > timeout_ns:
                return respond(svc.timed_out("it waited that long before its inference could start"))
            reply = oip.infer(name, version, content_type, body)
            if time.perf_counter_ns() - start_ns > timeout_ns:
                reply = svc.timed_out("the inference (inline, in the event loop) finished too late")
            return respond(reply)
        try:
            left_s = timeout_s - (time.perf_counter_ns() - start_ns) / 1e9
            if oip.is_image:  # decoding and resizing images too: all of it in the thread
                async with asyncio.timeout(left_s):
                    reply = await to_thread.run_sync(
                        oip.infer, name, version, content_type, body, abandon_on_cancel=True
                    )
            else:  # only the inference in the thread: parse, validate, encode on the loop (as /predict)
                try:
                    req = oip.prepare(body)
                    async with asyncio.timeout(timeout_s - (time.perf_counter_ns() - start_ns) / 1e9):
                        probs = await to_thread.run_sync(
                            svc.infer, req.batch, req.timings, abandon_on_cancel=True
                        )
                    reply = oip.finish(req, probs)
                except InputError as exc:
                    reply = error_from(exc)
        except TimeoutError:
            reply = svc.timed_out("the inference still finishing in the background was abandoned")
        return respond(reply)

    # Starlette routes (the endpoint takes the Request and reads the path parameters): FastAPI's parameter
    # injection would need the annotations resolvable at module level, i.e. fastapi imported by Flask too
    def get(path: str, answer: Any) -> None:
        async def endpoint(request: Request) -> Response:
            params = request.path_params
            return respond(answer(params["name"], params.get("version")) if "name" in params else answer())

        app.add_route(path, endpoint, methods=["GET"], include_in_schema=False)  # GET and HEAD

    get(PREFIX, oip.server_metadata)
    get(f"{PREFIX}/health/live", oip.live)
    get(f"{PREFIX}/health/ready", oip.ready)
    for base in (f"{PREFIX}/models/{{name}}", f"{PREFIX}/models/{{name}}/versions/{{version}}"):
        get(base, oip.model_metadata)
        get(f"{base}/ready", oip.model_ready)
        app.add_route(f"{base}/infer", infer, methods=["POST"], include_in_schema=False)
    return oip


def register_flask(
    app: Flask,
    service: Service,
    *,
    read_body: Callable[[Any, Service], bytes],
    respond: Callable[[Reply], Any],
    batcher: ThreadBatcher | None = None,
) -> OipService:
    """Add the OIP v2 routes to a Flask target; ``read_body`` / ``respond`` are the app's own (the same
    body limits and responses as /predict)."""
    from flask import Response, request  # import cost: the Flask adapter's own dependencies, not FastAPI's

    oip = OipService(service)
    svc = service

    def infer(name: str, version: str | None = None) -> Response:
        content_type = request.environ.get("CONTENT_TYPE")
        try:
            oip.precheck(name, version, content_type, request.content_length)
            body = read_body(request, svc)
        except InputError as exc:
            return respond(error_from(exc))
        try:
            if batcher is not None:  # dynamic batching, as on /predict
                try:
                    req = oip.prepare(body)
                    return respond(oip.finish_batched(req, batcher.submit(req.rows)))
                except InputError as exc:
                    return respond(error_from(exc))
            return respond(oip.infer(name, version, content_type, body))
        except SystemExit as exc:  # gunicorn's worker-timeout abort: JSON, as /predict answers it
            if exc.code != 1:
                raise
            return respond(svc.timed_out("the worker is being restarted"))

    def metadata(name: str, version: str | None = None) -> Response:
        return respond(oip.model_metadata(name, version))

    def model_ready(name: str, version: str | None = None) -> Response:
        return respond(oip.model_ready(name, version))

    def rule(path: str, endpoint: str, view: Any, methods: list[str]) -> None:
        app.add_url_rule(path, endpoint, view, methods=methods, provide_automatic_options=False)

    rule(PREFIX, "oip_server", lambda: respond(oip.server_metadata()), ["GET"])
    rule(f"{PREFIX}/health/live", "oip_live", lambda: respond(oip.live()), ["GET"])
    rule(f"{PREFIX}/health/ready", "oip_ready", lambda: respond(oip.ready()), ["GET"])
    for suffix, base in (
        ("", f"{PREFIX}/models/<name>"),
        ("_v", f"{PREFIX}/models/<name>/versions/<version>"),
    ):
        rule(base, f"oip_metadata{suffix}", metadata, ["GET"])
        rule(f"{base}/ready", f"oip_model_ready{suffix}", model_ready, ["GET"])
        rule(f"{base}/infer", f"oip_infer{suffix}", infer, ["POST"])
    return oip
