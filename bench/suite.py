"""The benchmark suite's cases for a profile, bound to the zoo's model list; shared by conftest and run.py."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from bench.profiles import Case, Profile, load_cases, predict_cases, preprocess_cases
from deploybench.errors import UsageError
from targets.catalog import MODELS


def zoo_models() -> dict[str, Any]:
    return MODELS


def check_selection(profile: Profile, formats: tuple[str, ...] | None) -> None:
    models = zoo_models()
    unknown = [m for m in profile.models if m not in models]
    if unknown:
        raise UsageError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(models)}")
    if formats is not None:
        known = {f for m in models.values() for f in m.formats}
        bad = [f for f in formats if f not in known]
        if bad:
            raise UsageError(f"unknown format(s) {', '.join(bad)}; choose from {', '.join(sorted(known))}")


def predict_cases_for(profile: Profile, formats: tuple[str, ...] | None = None) -> list[Case]:
    return predict_cases(profile, zoo_models(), formats)


def load_cases_for(profile: Profile, formats: tuple[str, ...] | None = None) -> list[Case]:
    return load_cases(profile, zoo_models(), formats)


def preprocess_cases_for(profile: Profile) -> list[Case]:
    return preprocess_cases(profile)


def noop_cases() -> list[Case]:
    return [Case("noop")]


def all_cases(profile: Profile, formats: tuple[str, ...] | None = None) -> list[Case]:
    return (
        predict_cases_for(profile, formats)
        + load_cases_for(profile, formats)
        + preprocess_cases_for(profile)
        + noop_cases()
    )


def path_size_bytes(path: Path) -> int:
    """Size of an artifact file, or of every file under an artifact folder."""
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def synthetic_jpeg(width: int, height: int, seed: int = 0) -> bytes:
    """A deterministic photo-like JPEG (smooth gradients + noise), made in memory: nothing is downloaded."""
    from PIL import Image  # import cost: PIL, only the image cases need it

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            127 + 100 * np.sin(x / (width / 6.0)),
            127 + 100 * np.cos(y / (height / 5.0)),
            127 + 60 * np.sin((x + y) / (width / 9.0)),
        ],
        axis=-1,
    )
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()
