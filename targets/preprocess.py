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
from dataclasses import dataclass
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


# built once: json.loads with options builds a new decoder on every call (a hot spot on a fast model)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(body: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity tokens, bounded nesting."""
    if not body:
        raise InputError(400, "invalid-json", "the request body is empty; expected a JSON document")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(400, "invalid-json", f"the request body is not UTF-8: {exc.reason}") from None
    try:
        return _DECODER.decode(text)
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


def _feature_row(row: Any, where: str, n_features: int, allow_negative: bool = False) -> list[float]:
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
    lowest = -MAX_FEATURE_VALUE if allow_negative else 0.0
    for i, v in enumerate(row):
        # the common case first, one test: a float within bounds (NaN and +-inf fail it and get the checks
        # below, which name what is wrong)
        if type(v) is float and lowest <= v <= MAX_FEATURE_VALUE:
            out.append(v)
            continue
        # bool is a subclass of int: refuse it explicitly
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise InputError(422, "invalid-features", f"{where}[{i}] must be a number, got {_type_name(v)}")
        try:
            f = float(v)
        except OverflowError:
            f = math.inf
        if not math.isfinite(f):
            raise InputError(422, "invalid-features", f"{where}[{i}] must be finite, got {v!r}")
        if f < 0 and not allow_negative:
            raise InputError(
                422, "invalid-features", f"{where}[{i}] must be >= 0 (a length in cm), got {v!r}"
            )
        if abs(f) > MAX_FEATURE_VALUE:
            bound = f"between {-MAX_FEATURE_VALUE:g} and" if allow_negative else "<="
            raise InputError(
                422, "invalid-features", f"{where}[{i}] must be {bound} {MAX_FEATURE_VALUE:g}, got {v!r}"
            )
        out.append(f)
    return out


def validate_features(
    obj: Any, *, max_batch: int, n_features: int = N_IRIS_FEATURES, allow_negative: bool = False
) -> tuple[np.ndarray, bool]:
    """Validate a tabular request: ``{"features": [F numbers]}`` or ``{"instances": [[F numbers], ...]}``.

    Iris (the zoo's default) takes 4 lengths in cm, so negatives are refused; a user's model
    (``allow_negative``) takes any finite value within +-MAX_FEATURE_VALUE.
    Returns ``(batch float32 (n, n_features), is_batch)``.
    """
    what = "'features': [numbers] or 'instances': [[numbers], ...]"
    _check_keys(obj, {"features", "instances"}, what)
    if "features" in obj and "instances" in obj:
        raise InputError(422, "invalid-request", "give either 'features' or 'instances', not both")
    if "features" in obj:
        row = _feature_row(obj["features"], "features", n_features, allow_negative)
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
    batch = [_feature_row(r, f"instances[{i}]", n_features, allow_negative) for i, r in enumerate(rows)]
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


@dataclass(frozen=True)
class ImageTransform:
    """Decoded image -> float32 ``(channels, height, width)`` model input.

    With ``resize_px`` (torchvision's evaluation recipe): resize the shorter side to ``resize_px``, then
    centre-crop ``height x width``. Without it: resize the whole image straight to ``height x width``
    (aspect ratio not kept). Then scale to [0, 1] and normalise per channel: ``(x - mean) / std``.
    ``channels`` 1 converts to grayscale (PIL "L"), 3 to RGB. The zoo's ResNets use
    ``ZOO_IMAGE_TRANSFORM`` (shorter side 256, centre crop 224, ImageNet mean/std).
    """

    height: int = CROP_PX
    width: int = CROP_PX
    channels: int = 3
    mean: tuple[float, ...] = tuple(float(x) for x in IMAGENET_MEAN)
    std: tuple[float, ...] = tuple(float(x) for x in IMAGENET_STD)
    resize_px: int | None = RESIZE_SHORTER_PX

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"an image model takes 1 or 3 channels, not {self.channels}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be at least 1x1, got {self.height}x{self.width}")
        for name in ("mean", "std"):
            n = len(getattr(self, name))
            if n not in (1, self.channels):
                want = "1 value" if self.channels == 1 else f"1 or {self.channels} values"
                raise ValueError(f"{name} needs {want} (one per channel), got {n}")
        if any(not s > 0 for s in self.std):
            raise ValueError(f"std values must be > 0, got {list(self.std)}")
        if self.resize_px is not None and self.resize_px < max(self.height, self.width):
            raise ValueError(
                f"resize_px {self.resize_px} is smaller than the {self.height}x{self.width} centre crop"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def describe(self) -> dict[str, Any]:
        return {
            "size_hw": [self.height, self.width],
            "channels": self.channels,
            "resize": f"shorter side {self.resize_px} px, centre crop"
            if self.resize_px
            else "straight to size",
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def __call__(self, img: Image.Image) -> np.ndarray:
        mode = "RGB" if self.channels == 3 else "L"
        if img.mode != mode:
            img = img.convert(mode)
        cw, ch = self.width, self.height
        if self.resize_px is None:
            out = img.resize((cw, ch), Image.Resampling.BILINEAR)
        else:
            w, h = img.size
            r = self.resize_px
            scale = r / min(w, h)
            # torchvision Resize(int): the shorter side becomes r, the longer one is truncated to an int
            new_w, new_h = (r, int(h * scale)) if w <= h else (int(w * scale), r)
            left = round((new_w - cw) / 2.0)
            top = round((new_h - ch) / 2.0)
            sx, sy = w / new_w, h / new_h
            box = (left * sx, top * sy, (left + cw) * sx, (top + ch) * sy)
            out = img.resize((cw, ch), Image.Resampling.BILINEAR, box=box)
        arr = np.asarray(out, dtype=np.float32) / 255.0
        if arr.ndim == 2:
            arr = arr[:, :, np.newaxis]
        arr = (arr - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)


ZOO_IMAGE_TRANSFORM = ImageTransform()


def preprocess_image(img: Image.Image) -> np.ndarray:
    """RGB image -> float32 (3, 224, 224): resize the shorter side to 256, center-crop 224, ImageNet mean/std.

    The crop box is mapped back onto the source image and only that region is resampled (PIL's ``box``), so a
    very long, thin image never materialises a huge intermediate. Matches resize-then-crop to within
    resampling rounding.
    """
    return ZOO_IMAGE_TRANSFORM(img)


def top_k(probabilities: np.ndarray, class_names: list[str], k: int = 5) -> list[dict[str, Any]]:
    """One item's probabilities -> the k most likely classes, most likely first."""
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    k = min(k, p.size)
    idx = np.argsort(-p, kind="stable")[:k]
    return [{"class": class_names[i], "class_id": int(i), "probability": float(p[i])} for i in idx]
