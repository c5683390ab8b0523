"""Benchmark profiles and the cases each one runs. Pure data + functions: no torch import here.

A case is one benchmark: ``predict`` (model x format x batch size x intra-op threads), ``load``
(deserialize an artifact), ``preprocess`` (image decode + resize + normalize) or ``noop`` (the harness's
own overhead, measured against a function that does nothing).

Rounds per case are calibrated: after the explicit warm-up (at least ``warmup_rounds`` calls and
``warmup_time_s``) the median of the last warm-up calls gives
``rounds = clamp(ceil(max_time_s / estimate), min_rounds, max_rounds)``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from deploybench.errors import UsageError

TABULAR_BATCHES = (1, 8, 64, 512)
IMAGE_BATCHES = (1, 8)
DEFAULT_MODELS = ("iris-rf", "iris-mlp", "resnet18", "resnet50")
# Synthetic JPEG sizes (width, height) for the pre-processing benchmark.
PREPROCESS_SIZES = ((640, 480), (1920, 1080))


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    max_time_s: float  # measured time budget per case (after warm-up)
    min_rounds: int
    max_rounds: int
    warmup_rounds: int  # at least this many warm-up calls per case ...
    warmup_time_s: float  # ... and at least this long (capped at 1000 calls)
    load_rounds: int  # measured deserializations per artifact (after 1 warm-up load)
    models: tuple[str, ...] = DEFAULT_MODELS
    tabular_batches: tuple[int, ...] = TABULAR_BATCHES
    image_batches: tuple[int, ...] = IMAGE_BATCHES
    thread_matrix: str = "full"  # "full": 1 and all cores everywhere; "quick": see _threads_for; "one": 1
    preprocess_sizes: tuple[tuple[int, int], ...] = PREPROCESS_SIZES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        description="seconds: tabular models, batch 1 and 8, 1 thread, 0.2 s per case (for tests)",
        max_time_s=0.2,
        min_rounds=5,
        max_rounds=200,
        warmup_rounds=3,
        warmup_time_s=0.05,
        load_rounds=2,
        models=("iris-rf", "iris-mlp"),
        tabular_batches=(1, 8),
        image_batches=(1,),
        thread_matrix="one",
        preprocess_sizes=((640, 480),),
    ),
    "quick": Profile(
        name="quick",
        description=(
            "74 s of benchmarks on 2 cores (docs/measurements/micro-benchmarks.md): every model x format; "
            "tabular batch 1/8/64/512 at 1 thread "
            "(+ all cores at 512); image batch 1 at 1 thread and all cores, batch 8 at all cores; "
            "1 s per case, 5..1000 rounds, warm-up >= 3 calls and 0.2 s, 3 loads per artifact"
        ),
        max_time_s=1.0,
        min_rounds=5,
        max_rounds=1000,
        warmup_rounds=3,
        warmup_time_s=0.2,
        load_rounds=3,
        thread_matrix="quick",
    ),
    "full": Profile(
        name="full",
        description=(
            "every model x format x batch (tabular 1/8/64/512, image 1/8) x threads (1 and all cores); "
            "5 s per case, 20..20000 rounds, warm-up >= 5 calls and 0.5 s, 10 loads per artifact"
        ),
        max_time_s=5.0,
        min_rounds=20,
        max_rounds=20000,
        warmup_rounds=5,
        warmup_time_s=0.5,
        load_rounds=10,
        thread_matrix="full",
    ),
}


@dataclass(frozen=True)
class Case:
    kind: str  # "predict" | "load" | "preprocess" | "noop"
    model: str = ""
    format: str = ""
    batch_size: int = 0
    threads: int = 0
    width: int = 0
    height: int = 0

    @property
    def id(self) -> str:
        """Series name and pytest id: predict/iris-rf/onnx/b8/t1, load/resnet50/pt2, preprocess/640x480."""
        if self.kind == "predict":
            return f"predict/{self.model}/{self.format}/b{self.batch_size}/t{self.threads}"
        if self.kind == "load":
            return f"load/{self.model}/{self.format}"
        if self.kind == "preprocess":
            return f"preprocess/{self.width}x{self.height}"
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def all_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _threads_for(
    profile: Profile, task: str, batch: int, smallest: int, largest: int, cores: int
) -> list[int]:
    options = [1] if cores == 1 else [1, cores]
    if profile.thread_matrix == "full":
        return options
    if profile.thread_matrix == "one":
        return [1]
    # quick: tabular at 1 thread, all cores only at the largest batch; image: both at batch 1, all cores above
    if task == "tabular":
        return options if batch == largest else [1]
    return options if batch == smallest else [cores]


def predict_cases(profile: Profile, models: dict[str, Any], formats: tuple[str, ...] | None = None,
                  cores: int | None = None) -> list[Case]:  # fmt: skip
    """Cases ordered so that one (model, format, threads) predictor serves consecutive cases."""
    cores = cores or all_cores()
    cases: list[Case] = []
    for name in profile.models:
        spec = models[name]
        batches = profile.tabular_batches if spec.task == "tabular" else profile.image_batches
        for fmt in spec.formats:
            if formats is not None and fmt not in formats:
                continue
            per_threads: dict[int, list[int]] = {}
            for b in batches:
                for t in _threads_for(profile, spec.task, b, min(batches), max(batches), cores):
                    per_threads.setdefault(t, []).append(b)
            for t, bs in per_threads.items():
                cases.extend(Case("predict", name, fmt, b, t) for b in bs)
    return cases


def load_cases(
    profile: Profile, models: dict[str, Any], formats: tuple[str, ...] | None = None
) -> list[Case]:
    return [
        Case("load", name, fmt)
        for name in profile.models
        for fmt in models[name].formats
        if formats is None or fmt in formats
    ]


def preprocess_cases(profile: Profile) -> list[Case]:
    return [Case("preprocess", width=w, height=h) for w, h in profile.preprocess_sizes]


def calibrated_rounds(estimate_s: float, profile: Profile) -> int:
    """Rounds that fill ``max_time_s`` at the estimated call time, within [min_rounds, max_rounds]."""
    if estimate_s <= 0:
        return profile.max_rounds
    rounds = int(-(-profile.max_time_s // estimate_s))  # ceil
    return max(profile.min_rounds, min(profile.max_rounds, rounds))


def select_profile(name: str, models: list[str] | None = None) -> Profile:
    if name not in PROFILES:
        raise UsageError(f"unknown profile {name!r}; choose from {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if models:
        profile = replace(profile, models=tuple(models))
    return profile
