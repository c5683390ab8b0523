"""Request payloads (no Locust import: usable from the runner, tests and other tools).

* Generated images for the image scenario (seeded smooth gradients + noise, so JPEG sizes are realistic);
  nothing is downloaded.
* Your own requests for the ``api`` scenario (``deploybench load --url ... --payload FILE|FOLDER``): a JSON
  lines file (one request body per line, sent as ``application/json``) or a folder of images (each sent as a
  multipart upload), validated up front (a bad line is named ``FILE:LINE``), plus ``--header 'Name: value'``.
* Open Inference Protocol v2 infer requests for the ``oip`` scenario, shaped by the model's metadata
  (``GET /v2/models/NAME``).
"""

from __future__ import annotations

import base64
import functools
import http.client
import io
import json
import math
import mimetypes
import os
import random
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deploybench.errors import UsageError
from deploybench.procs import fetch_health

KINDS = {"multipart": "/predict/image", "base64": "/predict/image/base64"}
BOUNDARY = "deploybench-boundary-7d1f0c"
# Extra request headers as a JSON object, read by every Locust process (`deploybench load --header` passes
# them this way, so a token never shows in the process list, the Locust log or the record).
HEADERS_ENV = "DEPLOYBENCH_HEADERS"


def parse_mix(text: str) -> dict[str, float]:
    """``"multipart=3,base64=1"`` -> weights; raises UsageError naming the problem."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        name, sep, weight = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise UsageError(f"--payload-mix: unknown kind {name!r} (use {', '.join(KINDS)})")
        try:
            w = float(weight) if sep else 1.0
        except ValueError:
            raise UsageError(f"--payload-mix: weight of {name!r} is not a number ({weight!r})") from None
        if not w >= 0:
            raise UsageError(f"--payload-mix: weight of {name!r} must be >= 0")
        out[name] = w
    if not out or sum(out.values()) <= 0:
        raise UsageError("--payload-mix needs at least one kind with a weight > 0")
    return out


def parse_size(text: str) -> tuple[int, int]:
    w, sep, h = str(text).lower().partition("x")
    try:
        size = (int(w), int(h) if sep else int(w))
    except ValueError:
        raise UsageError(f"--image-size must look like 224x224 (got {text!r})") from None
    if not (1 <= size[0] <= 8192 and 1 <= size[1] <= 8192):
        raise UsageError(f"--image-size must be between 1x1 and 8192x8192 (got {text!r})")
    return size


def payload_rng(seed: int, generator: int = 0, user: int = 0) -> random.Random:
    """The RNG of one simulated user's payload choice: from the run's ``--seed``, the generator's place among
    the workers and the user's spawn number in its process, so a rerun with the same seed chooses the same
    payloads. (It was seeded from ``id(self)``, a memory address: a rerun chose differently.) A string seed is
    hashed with SHA-512 by ``random.Random``: the same in every process, whatever PYTHONHASHSEED."""
    return random.Random(f"deploybench-payload:{seed}:{generator}:{user}")


@functools.lru_cache(maxsize=8)
def make_images(size: tuple[int, int], fmt: str, count: int, seed: int) -> tuple[bytes, ...]:
    """``count`` encoded images of ``size`` (W, H): seeded gradients + noise."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for _ in range(count):
        base = rng.uniform(0, 255, size=3).astype(np.float32)
        slope = rng.uniform(-0.5, 0.5, size=(3, 2)).astype(np.float32)
        img = np.stack([base[c] + slope[c, 0] * xx + slope[c, 1] * yy for c in range(3)], axis=-1)
        img += rng.normal(0, 12, size=img.shape).astype(np.float32)
        arr = np.clip(img, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr, "RGB").save(
            buf, format=fmt.upper(), **({"quality": 90} if fmt == "jpeg" else {})
        )
        out.append(buf.getvalue())
    return tuple(out)


def multipart_body(
    data: bytes,
    fmt: str,
    *,
    field: str = "file",
    filename: str | None = None,
    content_type: str | None = None,
) -> bytes:
    """One multipart/form-data body (boundary ``BOUNDARY``) with a single file part."""
    filename = filename or f"image.{fmt}"
    content_type = content_type or f"image/{fmt}"
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def base64_body(data: bytes, fmt: str) -> str:
    return json.dumps({"image": f"data:image/{fmt};base64,{base64.b64encode(data).decode('ascii')}"})


# -- your own requests (the "api" scenario) --------------------------------------------------------------
MULTIPART_CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
JSON_CONTENT_TYPE = "application/json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_PAYLOAD_BYTES = 512 * 1024 * 1024  # all bodies are held in memory by every load-generator process
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token: header names and methods


def parse_header(text: str) -> tuple[str, str]:
    """``"Authorization: Bearer x"`` -> ``("Authorization", "Bearer x")``; UsageError naming the problem."""
    name, sep, value = str(text).partition(":")
    name, value = name.strip(), value.strip()
    if not sep:
        raise UsageError(f"--header {text!r} has no colon: write it as 'Name: value'")
    if not _TOKEN.match(name):
        raise UsageError(f"--header {text!r}: {name!r} is not a valid header name")
    if any(c in value for c in "\r\n\0"):
        raise UsageError(f"--header {name}: the value must not contain line breaks")
    return name, value


def parse_headers(texts: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """Repeated ``--header`` options -> ``{name: value}`` (a later one with the same name wins)."""
    out: dict[str, str] = {}
    for text in texts or ():
        name, value = parse_header(text)
        for old in [k for k in out if k.lower() == name.lower()]:
            del out[old]
        out[name] = value
    return out


def merge_headers(env_json: str, options: list[str] | tuple[str, ...] | None) -> dict[str, str]:
    """Headers from ``$DEPLOYBENCH_HEADERS`` (``env_json``: a JSON object of strings), then ``--header``
    options, which win for the same name (case-insensitive). UsageError naming the bad one."""
    out: dict[str, str] = {}
    if env_json:
        try:
            env = json.loads(env_json)
        except json.JSONDecodeError:
            env = None
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise UsageError(f"${HEADERS_ENV} must be a JSON object of header names to string values")
        out.update(parse_headers([f"{k}: {v}" for k, v in env.items()]))
    for name, value in parse_headers(options).items():
        for old in [k for k in out if k.lower() == name.lower()]:
            del out[old]
        out[name] = value
    return out


def parse_method(text: str) -> str:
    method = str(text).strip().upper()
    if not _TOKEN.match(method):
        raise UsageError(f"--method {text!r} is not an HTTP method")
    return method


def parse_path(text: str) -> str:
    """The request path (may carry a query string), appended to the URL: must start with '/'."""
    path = str(text).strip()
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise UsageError(f"--path must start with '/' and contain no spaces (got {text!r})")
    return path


@dataclass(frozen=True)
class Payloads:
    """Request bodies to cycle through, in order, with the Content-Type of each."""

    kind: str  # "json-lines" | "image-folder"
    source: str  # absolute path of the file or folder
    bodies: tuple[bytes, ...]
    content_types: tuple[str, ...]

    def describe(self) -> dict[str, object]:
        """What a run record keeps about them (never the bodies)."""
        return {"payload": self.source, "payload_kind": self.kind, "payload_count": len(self.bodies),
                "payload_bytes": sum(len(b) for b in self.bodies)}  # fmt: skip


def load_payloads(path: str | os.PathLike[str], field: str = "file") -> Payloads:
    """A JSON lines file or a folder of images -> ``Payloads``; UsageError (naming the file and line) on bad
    input. Relative paths resolve against the current working directory."""
    p = Path(os.path.abspath(Path(path).expanduser()))
    if p.is_dir():
        return read_image_folder(p, field)
    if p.is_file():
        return read_json_lines(p)
    raise UsageError(f"--payload {path}: no such file or folder")


def read_json_lines(path: Path) -> Payloads:
    """One JSON value per line (blank lines are skipped); each line is sent exactly as written."""
    bodies: list[bytes] = []
    total = 0
    try:
        with open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                line = raw.strip()
                if not line:
                    continue
                where = f"{path}:{lineno}"
                try:
                    json.loads(line.decode("utf-8"))
                except UnicodeDecodeError:
                    raise UsageError(f"--payload {where}: not UTF-8 text") from None
                except json.JSONDecodeError as exc:
                    raise UsageError(
                        f"--payload {where}: not valid JSON ({exc.msg} at column {exc.colno}); "
                        "a JSON lines file holds one request body per line"
                    ) from None
                total += len(line)
                if total > MAX_PAYLOAD_BYTES:
                    raise UsageError(f"--payload {path}: more than {MAX_PAYLOAD_BYTES >> 20} MiB of bodies")
                bodies.append(line)
    except OSError as exc:
        raise UsageError(f"--payload {path}: cannot read it ({exc.strerror or exc})") from None
    if not bodies:
        raise UsageError(f"--payload {path}: no request bodies (write one JSON value per line)")
    return Payloads("json-lines", str(path), tuple(bodies), (JSON_CONTENT_TYPE,) * len(bodies))


def read_image_folder(folder: Path, field: str = "file") -> Payloads:
    """Every image file (by suffix, sorted by name) of ``folder`` as a multipart upload in ``field``."""
    if not _TOKEN.match(field):
        raise UsageError(f"--multipart-field {field!r} is not a valid form field name")
    files = sorted(
        f for f in folder.iterdir()
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_SUFFIXES
    )  # fmt: skip
    if not files:
        raise UsageError(f"--payload {folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    bodies: list[bytes] = []
    total = 0
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            raise UsageError(f"--payload {f}: cannot read it ({exc.strerror or exc})") from None
        total += len(data)
        if total > MAX_PAYLOAD_BYTES:
            raise UsageError(f"--payload {folder}: more than {MAX_PAYLOAD_BYTES >> 20} MiB of images")
        ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        filename = re.sub(r'[\x00-\x1f"\\]', "_", f.name)  # safe inside the quoted header value
        bodies.append(
            multipart_body(data, f.suffix.lstrip(".").lower(), field=field, filename=filename,
                           content_type=ctype)
        )  # fmt: skip
    return Payloads("image-folder", str(folder), tuple(bodies), (MULTIPART_CONTENT_TYPE,) * len(bodies))


@dataclass(frozen=True)
class RequestSpec:
    """The api scenario's request: method, path and the bodies to cycle (None: no body)."""

    method: str
    path: str
    payloads: Payloads | None

    def describe(self) -> dict[str, object]:
        """What a run record keeps (never the bodies)."""
        payloads = self.payloads.describe() if self.payloads else {}
        return {"method": self.method, "path": self.path, **payloads}


def request_spec(method: str = "", path: str = "/", payload: str = "", field: str = "file") -> RequestSpec:
    """Validate the api scenario's options and read the bodies. ``method`` defaults to POST with a payload,
    else GET. UsageError on bad input."""
    payloads = load_payloads(payload, field) if payload else None
    default = "POST" if payloads is not None else "GET"
    return RequestSpec(parse_method(method or default), parse_path(path), payloads)


# -- tabular rows (the tabular scenario) -----------------------------------------------------------------
# Representative iris rows (sepal length/width, petal length/width in cm), one per class and some between.
IRIS_ROWS: tuple[tuple[float, float, float, float], ...] = (
    (5.1, 3.5, 1.4, 0.2),
    (4.9, 3.0, 1.4, 0.2),
    (7.0, 3.2, 4.7, 1.4),
    (6.4, 3.2, 4.5, 1.5),
    (6.3, 3.3, 6.0, 2.5),
    (5.8, 2.7, 5.1, 1.9),
    (5.9, 3.0, 4.2, 1.5),
    (6.1, 2.8, 4.0, 1.3),
)


IRIS_MODELS = ("iris-rf", "iris-mlp")


def make_payload(rng: random.Random, batch_size: int, n_features: int | None = None) -> dict[str, Any]:
    """One request body: iris rows (``n_features`` None), else ``n_features`` seeded uniform [0, 1) values."""

    def row() -> list[float]:
        if n_features is None:
            return list(rng.choice(IRIS_ROWS))
        return [round(rng.random(), 6) for _ in range(n_features)]

    if batch_size <= 1:
        return {"features": row()}
    return {"instances": [row() for _ in range(batch_size)]}


def row_width(health: dict[str, Any] | None) -> int | None:
    """None (iris rows) for the zoo's iris models or an unknown target; else the width /health reports."""
    if not health or health.get("model") in IRIS_MODELS:
        return None
    spec = health.get("input") or {}
    n = spec.get("n_features") if spec.get("kind") == "tabular" else None
    return int(n) if isinstance(n, int) and n > 0 else None


# -- Open Inference Protocol v2 requests (the oip scenario) ------------------------------------------------
OIP_IMAGE_BODIES = 4  # distinct image tensors per generator (each ~1 MB of JSON for a 3x224x224 input)
OIP_TIMEOUT_S = 5.0
# MLServer's runtimes may declare no inputs in their metadata: then iris rows, FP32 [N, 4]
OIP_DEFAULT_INPUT: dict[str, Any] = {"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}
_OIP_FLOATS = ("FP16", "FP32", "FP64")
_OIP_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")


def oip_infer_path(model: str) -> str:
    """``/v2/models/{model}/infer``, the name percent-encoded."""
    return f"/v2/models/{urllib.parse.quote(model, safe='')}/infer"


def oip_model_name(model: str | None, health: dict[str, Any] | None) -> str:
    """The model to drive: the run's ``--model``, else the one a deploybench target's /health names (OIP has
    no list of models). UsageError when neither gives one."""
    if model:
        return str(model)
    name = (health or {}).get("model")
    if isinstance(name, str) and name:
        return name
    raise UsageError(
        "the oip scenario needs the model's name (POST /v2/models/NAME/infer): give --model NAME "
        "(the server is not a deploybench target whose /health names its model)"
    )


def fetch_oip_metadata(url: str, model: str, headers: dict[str, str] | None = None,
                       timeout_s: float = OIP_TIMEOUT_S) -> dict[str, Any]:  # fmt: skip
    """``GET {url}/v2/models/{model}``: the model's OIP metadata. UsageError naming what went wrong."""
    target = url.rstrip("/") + f"/v2/models/{urllib.parse.quote(model, safe='')}"
    request = urllib.request.Request(target, headers={"Accept": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            data = json.loads(resp.read(16 << 20))
    except urllib.error.HTTPError as exc:
        detail = exc.read(4000).decode("utf-8", "replace")
        try:  # an OIP server's {"error": "..."}, else the start of whatever it answered
            detail = str(json.loads(detail)["error"])
        except (ValueError, KeyError, TypeError):
            detail = " ".join(detail.split())
        why = "no such model" if exc.code == 404 else f"HTTP {exc.code}"
        raise UsageError(
            f"the oip scenario reads the model's metadata from GET {target}: {why} ({detail[:200]}); "
            "is --model the name the server knows, and is it an Open Inference Protocol v2 server?"
        ) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise UsageError(
            f"the oip scenario cannot read the model's metadata from GET {target}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise UsageError(f"GET {target} did not answer a JSON object (OIP model metadata)")
    return data


def oip_bodies(
    metadata: dict[str, Any], rng: random.Random, count: int = 16, batch_size: int = 1
) -> list[bytes]:
    """``count`` OIP infer request bodies (JSON, encoded once) for the model ``metadata`` describes: its one
    input, ``batch_size`` items where the batch dimension is -1. Rows of 4 numbers are iris rows; other rows
    seeded uniform [0, 1); a tensor of rank 3 or more (an image) seeded uniform [-2, 2] (preprocessed
    values); integer datatypes get integers 0-9. UsageError for a model this cannot feed."""
    inputs = metadata.get("inputs") or [OIP_DEFAULT_INPUT]
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise UsageError(f"the oip scenario drives a model of one input; the metadata lists {inputs!r}"[:400])
    spec = inputs[0]
    name, datatype, shape = spec.get("name") or "input-0", spec.get("datatype"), spec.get("shape")
    if datatype not in (*_OIP_FLOATS, *_OIP_INTS):
        raise UsageError(
            f"the oip scenario sends numbers; input {name!r} has datatype {datatype} (BYTES, BOOL: use "
            "--scenario api with your own --payload)"
        )
    if not isinstance(shape, list) or not shape or not all(isinstance(d, int) for d in shape):
        raise UsageError(f"input {name!r} has no usable shape ({shape!r})")
    if any(d < 1 for d in shape[1:]):
        raise UsageError(
            f"input {name!r} has a variable dimension beyond the batch ({shape}): give a payload of your own "
            "with --scenario api"
        )
    dims = [max(1, int(batch_size)) if shape[0] < 0 else shape[0], *shape[1:]]
    item = math.prod(dims[1:])
    nrng = np.random.default_rng(rng.getrandbits(64))
    if len(dims) > 2:
        count = min(count, OIP_IMAGE_BODIES)
    out = []
    for _ in range(max(1, count)):
        if datatype in _OIP_INTS:
            data: list[Any] = [rng.randrange(10) for _ in range(dims[0] * item)]
        elif dims[1:] == [4]:
            data = [v for _ in range(dims[0]) for v in rng.choice(IRIS_ROWS)]
        elif len(dims) <= 2:
            data = [round(rng.random(), 6) for _ in range(dims[0] * item)]
        else:
            data = np.round(nrng.uniform(-2.0, 2.0, dims[0] * item), 4).tolist()
        body = {"inputs": [{"name": name, "shape": dims, "datatype": datatype, "data": data}]}
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


def oip_options(url: str, model: str | None, headers: dict[str, str] | None,
                options: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The oip scenario's resolved options: ``oip_model`` (``model``, else ``options["model"]``, else the
    model a deploybench target's /health names) and ``oip_metadata`` (its ``GET /v2/models/NAME``), kept in
    the record's scenario options. UsageError when the name is unknown or the server answers no metadata."""
    options = options or {}
    name = model or options.get("oip_model") or options.get("model") or ""
    health = None if name else fetch_health(url, headers=headers)
    name = oip_model_name(str(name), health)
    return {"oip_model": name, "oip_metadata": fetch_oip_metadata(url, name, headers)}


def oip_plan(resolved: dict[str, Any], rng: random.Random, count: int) -> tuple[str, list[bytes]]:
    """(path, request bodies) of the oip scenario from ``oip_options``' result (+ ``batch_size``)."""
    batch = max(1, int(resolved.get("batch_size") or 1))
    bodies = oip_bodies(resolved["oip_metadata"], rng, count=count, batch_size=batch)
    return oip_infer_path(resolved["oip_model"]), bodies
