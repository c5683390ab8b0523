"""The benchmark suite's cases for a profile, bound to the zoo's model list and any user model files
(``--model-file``: ``UserBenchModel``); shared by conftest and run.py."""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploybench.bench.profiles import Case, Profile, load_cases, predict_cases, preprocess_cases
from deploybench.errors import UsageError
from deploybench.io import read_json_object, write_json_atomic
from deploybench.targets.catalog import MODELS, ModelSpec
from deploybench.targets.modelfile import (
    UserModel,
    UserModelInfo,
    image_transform,
    open_model_file,
    probe_batch,
)


@dataclass(frozen=True)
class UserBenchModel:
    """A user's model in the benchmark suite: its files (input shape resolved) and what inspecting it found.
    Travels to the pytest child as JSON (``save_user_models`` / ``read_user_models``)."""

    model: UserModel
    task: str
    n_classes: int
    files: dict[str, dict[str, Any]]  # format -> {path, sha256, size_bytes, runtime, output}

    @classmethod
    def from_info(cls, model: UserModel, info: UserModelInfo) -> UserBenchModel:
        resolved = UserModel(**{**model.to_dict(), "input_shape": list(info.input_shape)})
        files = {
            fmt: {k: v for k, v in info.file_summary(fmt).items() if k in ("path", "sha256", "size_bytes",
                                                                           "runtime", "output")}
            for fmt in info.files
        }  # fmt: skip
        return cls(resolved, info.task, len(info.class_names), files)

    @property
    def spec(self) -> ModelSpec:
        m = self.model
        shape = tuple(m.input_shape or ())
        return ModelSpec(m.name, self.task, [f"class_{i}" for i in range(self.n_classes)], shape,
                         tuple(m.files), "user", "user model file")  # fmt: skip

    def batch(self, n: int, seed: int = 0) -> np.ndarray:
        """A deterministic input batch of ``n`` items (the probe distribution of
        ``deploybench.targets.modelfile``)."""
        shape = list(self.model.input_shape or ())
        transform = image_transform(self.model, shape) if self.task == "image" else None
        return probe_batch(self.task, shape, n, transform, seed)

    def open(self, fmt: str, threads: int | None = None) -> Any:
        """Load one file (deserialisation only, like the zoo's load_predictor; no probe inference)."""
        m = self.model
        return open_model_file(
            m.name, fmt, m.files[fmt], trust_pickle=m.trust_pickle, intra_op_threads=threads
        )

    def predictor(self, fmt: str, threads: int | None = None) -> Any:
        """A ready predictor: the final spec, and the softmax for a model that returns logits."""
        predictor = self.open(fmt, threads)
        predictor.spec = self.spec
        predictor.softmax_output = str(self.files[fmt].get("output", "")).startswith("logits")
        return predictor

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "task": self.task, "n_classes": self.n_classes,
                "files": self.files}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UserBenchModel:
        return cls(UserModel.from_dict(d["model"]), d["task"], int(d["n_classes"]), dict(d.get("files", {})))


def save_user_models(path: Path, models: Mapping[str, UserBenchModel]) -> Path:
    return write_json_atomic(path, {"user_models": [m.to_dict() for m in models.values()]})


def read_user_models(path: str | Path | None) -> dict[str, UserBenchModel]:
    if not path:
        return {}
    data = read_json_object(Path(path), "deploybench bench user models")
    models = [UserBenchModel.from_dict(d) for d in data.get("user_models", [])]
    return {m.model.name: m for m in models}


def zoo_models(user: Mapping[str, UserBenchModel] | None = None) -> dict[str, Any]:
    """The catalog the suite runs over: the zoo's models, plus the user's."""
    if not user:
        return MODELS
    return {**MODELS, **{name: m.spec for name, m in user.items()}}


def check_selection(
    profile: Profile, formats: tuple[str, ...] | None, user: Mapping[str, UserBenchModel] | None = None
) -> None:
    models = zoo_models(user)
    unknown = [m for m in profile.models if m not in models]
    if unknown:
        raise UsageError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(models)}")
    if formats is not None:
        known = {f for m in models.values() for f in m.formats}
        bad = [f for f in formats if f not in known]
        if bad:
            raise UsageError(f"unknown format(s) {', '.join(bad)}; choose from {', '.join(sorted(known))}")


def predict_cases_for(
    profile: Profile, formats: tuple[str, ...] | None = None, user: Mapping[str, UserBenchModel] | None = None
) -> list[Case]:
    return predict_cases(profile, zoo_models(user), formats)


def load_cases_for(
    profile: Profile, formats: tuple[str, ...] | None = None, user: Mapping[str, UserBenchModel] | None = None
) -> list[Case]:
    return load_cases(profile, zoo_models(user), formats)


def preprocess_cases_for(profile: Profile) -> list[Case]:
    return preprocess_cases(profile)


def noop_cases() -> list[Case]:
    return [Case("noop")]


def all_cases(
    profile: Profile, formats: tuple[str, ...] | None = None, user: Mapping[str, UserBenchModel] | None = None
) -> list[Case]:
    return (
        predict_cases_for(profile, formats, user)
        + load_cases_for(profile, formats, user)
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
