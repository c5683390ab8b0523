"""Image payloads for the image scenario (no Locust import: usable from tests and other tools).

Images are generated (seeded smooth gradients + noise, so JPEG sizes are realistic); nothing is downloaded.
"""

from __future__ import annotations

import base64
import functools
import io
import json

import numpy as np
from PIL import Image

from deploybench.errors import UsageError

KINDS = {"multipart": "/predict/image", "base64": "/predict/image/base64"}
BOUNDARY = "deploybench-boundary-7d1f0c"


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


def multipart_body(data: bytes, fmt: str) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="image.{fmt}"\r\n'
            f"Content-Type: image/{fmt}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def base64_body(data: bytes, fmt: str) -> str:
    return json.dumps({"image": f"data:image/{fmt};base64,{base64.b64encode(data).decode('ascii')}"})
