"""Pre- and post-processing shared by every target, so the model format is the only variable between them.

Everything that touches untrusted request data lives here and raises ``InputError`` (an HTTP 4xx with a
machine-readable code) for anything it cannot accept — never a bare exception that would become a 500.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# torchvision's ImageNet evaluation transform: Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize.
RESIZE_SHORTER_PX = 256
CROP_PX = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

# Formats PIL may sniff; anything else (EPS, PSD, ...) is refused rather than handed to a rarer decoder.
IMAGE_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF")

N_IRIS_FEATURES = 4
# Iris features are lengths in cm. The seed's rule is "finite and >= 0"; the upper bound keeps every value
# representable in float32 and the models' outputs finite.
MAX_FEATURE_VALUE = 1.0e6


class InputError(Exception):
    """Unacceptable request data -> HTTP ``status`` with JSON ``{"error": code, "detail": message}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_body(self) -> dict[str, str]:
        return {"error": self.code, "detail": self.message}


# -- JSON ------------------------------------------------------------------------------------------------
def _reject_constant(token: str) -> Any:
    raise InputError(400, "invalid-json", f"{token} is not valid JSON (numbers must be finite)")


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity tokens, bounded nesting."""
    if not body:
        raise InputError(400, "invalid-json", "the request body is empty; expected a JSON document")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(400, "invalid-json", f"the request body is not UTF-8: {exc.reason}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except InputError:
        raise
    except RecursionError:
        raise InputError(400, "invalid-json", "the JSON document is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise InputError(400, "invalid-json", f"the request body is not valid JSON: {exc}") from None


def _type_name(value: Any) -> str:
    return {bool: "a boolean", str: "a string", type(None): "null", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _check_keys(obj: Any, allowed: set[str], what: str) -> None:
    if not isinstance(obj, dict):
        raise InputError(
            422, "invalid-request", f"the body must be a JSON object ({what}), got {_type_name(obj)}"
        )
    extra = sorted(set(obj) - allowed)
    if extra:
        raise InputError(
            422, "invalid-request", f"unknown key(s) {', '.join(map(repr, extra))}; expected {what}"
        )


def _feature_row(row: Any, where: str, n_features: int) -> list[float]:
    if not isinstance(row, list):
        raise InputError(
            422,
            "invalid-features",
            f"{where} must be an array of {n_features} numbers, got {_type_name(row)}",
        )
    if len(row) != n_features:
        raise InputError(
            422, "invalid-features", f"{where} must have exactly {n_features} numbers, got {len(row)}"
        )
    out = []
    for i, v in enumerate(row):
        # bool is a subclass of int: refuse it explicitly
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InputError(422, "invalid-features", f"{where}[{i}] must be a number, got {_type_name(v)}")
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            raise InputError(422, "invalid-features", f"{where}[{i}] must be finite, got {v!r}")
        if f < 0:
            raise InputError(
                422, "invalid-features", f"{where}[{i}] must be >= 0 (a length in cm), got {v!r}"
            )
        if f > MAX_FEATURE_VALUE:
            raise InputError(
                422, "invalid-features", f"{where}[{i}] must be <= {MAX_FEATURE_VALUE:g}, got {v!r}"
            )
        out.append(f)
    return out


def validate_features(
    obj: Any, *, max_batch: int, n_features: int = N_IRIS_FEATURES
) -> tuple[np.ndarray, bool]:
    """Validate an iris request: ``{"features": [4 numbers]}`` or ``{"instances": [[4 numbers], ...]}``.

    Returns ``(batch float32 (n, n_features), is_batch)``.
    """
    what = "'features': [numbers] or 'instances': [[numbers], ...]"
    _check_keys(obj, {"features", "instances"}, what)
    if "features" in obj and "instances" in obj:
        raise InputError(422, "invalid-request", "give either 'features' or 'instances', not both")
    if "features" in obj:
        row = _feature_row(obj["features"], "features", n_features)
        return np.asarray([row], dtype=np.float32), False
    if "instances" not in obj:
        raise InputError(422, "invalid-request", "missing key 'features' (one item) or 'instances' (a batch)")
    rows = obj["instances"]
    if not isinstance(rows, list):
        raise InputError(422, "invalid-features", f"instances must be an array, got {_type_name(rows)}")
    if not rows:
        raise InputError(422, "empty-batch", "instances is empty; give at least one row")
    if len(rows) > max_batch:
        raise InputError(
            422,
            "batch-too-large",
            f"instances has {len(rows)} rows; this target accepts at most {max_batch} (max_batch)",
        )
    batch = [_feature_row(r, f"instances[{i}]", n_features) for i, r in enumerate(rows)]
    return np.asarray(batch, dtype=np.float32), True


# -- images ----------------------------------------------------------------------------------------------
_DATA_URL = re.compile(r"^data:([^;,]*)((?:;[^;,]*)*),", re.IGNORECASE)
_WHITESPACE = re.compile(rb"\s+")


def decode_base64_image(obj: Any) -> bytes:
    """``{"image": "<base64>"}`` or ``{"image": "data:image/png;base64,<base64>"}`` -> image bytes."""
    _check_keys(obj, {"image"}, "'image': a Base64 string or data URL")
    if "image" not in obj:
        raise InputError(
            422, "invalid-request", "missing key 'image' (a Base64 string or data:image/... URL)"
        )
    text = obj["image"]
    if not isinstance(text, str):
        raise InputError(422, "invalid-request", f"'image' must be a string, got {_type_name(text)}")
    m = _DATA_URL.match(text)
    if m:
        media, params = m.group(1).lower(), m.group(2).lower()
        if not media.startswith("image/") or ";base64" not in params:
            raise InputError(
                422, "invalid-base64", "a data URL must look like 'data:image/<type>;base64,<data>'"
            )
        text = text[m.end() :]
    try:
        raw = _WHITESPACE.sub(b"", text.encode("ascii"))
        data = base64.b64decode(raw, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise InputError(422, "invalid-base64", f"'image' is not valid Base64: {exc}") from None
    if not data:
        raise InputError(422, "invalid-image", "'image' is empty")
    return data


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Bytes -> RGB PIL image. The pixel count is checked from the header, before any pixel is decoded."""
    if not data:
        raise InputError(422, "invalid-image", "the image is empty")
    names = ", ".join(IMAGE_FORMATS)
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise InputError(
            413, "image-too-large", f"{exc} — this target's limit (max_pixels) is {max_pixels} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise InputError(422, "invalid-image", f"the data is not a supported image ({names})") from None
    width, height = img.size
    if width * height > max_pixels:
        raise InputError(
            413,
            "image-too-large",
            f"the image is {width}x{height} = {width * height} pixels; this target's limit (max_pixels) "
            f"is {max_pixels}",
        )
    if width < 1 or height < 1:
        raise InputError(422, "invalid-image", f"the image has no pixels ({width}x{height})")
    try:
        img.load()
        return img.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise InputError(
            413, "image-too-large", f"{exc} — this target's limit (max_pixels) is {max_pixels} pixels"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
        raise InputError(
            422, "invalid-image", f"the {img.format} image could not be decoded (truncated or corrupt): {exc}"
        ) from None


def preprocess_image(img: Image.Image) -> np.ndarray:
    """RGB image -> float32 (3, 224, 224): resize the shorter side to 256, center-crop 224, ImageNet mean/std.

    The crop box is mapped back onto the source image and only that region is resampled (PIL's ``box``), so a
    very long, thin image never materialises a huge intermediate. Matches resize-then-crop to within
    resampling rounding.
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    scale = RESIZE_SHORTER_PX / min(w, h)
    # torchvision Resize(int): the shorter side becomes 256, the longer one is truncated to an int
    new_w, new_h = (RESIZE_SHORTER_PX, int(h * scale)) if w <= h else (int(w * scale), RESIZE_SHORTER_PX)
    left = round((new_w - CROP_PX) / 2.0)
    top = round((new_h - CROP_PX) / 2.0)
    sx, sy = w / new_w, h / new_h
    box = (left * sx, top * sy, (left + CROP_PX) * sx, (top + CROP_PX) * sy)
    crop = img.resize((CROP_PX, CROP_PX), Image.Resampling.BILINEAR, box=box)
    arr = np.asarray(crop, dtype=np.float32) / 255.0
    arr = (arr - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


def top_k(probabilities: np.ndarray, class_names: list[str], k: int = 5) -> list[dict[str, Any]]:
    """One item's probabilities -> the k most likely classes, most likely first."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    k = min(k, p.size)
    idx = np.argsort(-p, kind="stable")[:k]
    return [{"class": class_names[i], "class_id": int(i), "probability": float(p[i])} for i in idx]
