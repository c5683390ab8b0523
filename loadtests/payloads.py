"""Request payloads (no Locust import: usable from the runner, tests and other tools).

* Generated images for the image scenario (seeded smooth gradients + noise, so JPEG sizes are realistic);
  nothing is downloaded.
* Your own requests for the ``api`` scenario (``deploybench load --url ... --payload FILE|FOLDER``): a JSON
  lines file (one request body per line, sent as ``application/json``) or a folder of images (each sent as a
  multipart upload), validated up front (a bad line is named ``FILE:LINE``), plus ``--header 'Name: value'``.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import mimetypes
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deploybench.errors import UsageError

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
