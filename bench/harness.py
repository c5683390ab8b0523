"""Timing helpers for the benchmarks: explicit warm-up + calibration, thread scope, predictor cache."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deploybench.bench.profiles import Case, Profile, calibrated_rounds
from deploybench.bench.suite import UserBenchModel
from deploybench.targets.predictors import load_predictor

MAX_WARMUP_CALLS = 1000


class PredictorCache:
    """Holds only the last loaded predictor; cases are ordered so consecutive ones share it. ``user``: the
    user's model files by name (``--model-file``), loaded from their paths instead of the zoo."""

    def __init__(self, zoo: Path, user: dict[str, UserBenchModel] | None = None) -> None:
        self.zoo = zoo
        self.user = dict(user or {})
        self._key: tuple[str, str, int] | None = None
        self._predictor: Any = None

    def get(self, model: str, fmt: str, threads: int) -> Any:
        key = (model, fmt, threads)
        if key != self._key:
            self._predictor = None  # free the previous one first
            if model in self.user:
                self._predictor = self.user[model].predictor(fmt, threads)
            else:
                self._predictor = load_predictor(model, fmt, zoo_dir=self.zoo, intra_op_threads=threads)
            self._key = key
        return self._predictor


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """torch.set_num_threads is process-wide: set it for one benchmark, then restore it."""
    import torch  # import cost: torch (~1 s), only torch cases need it

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure(
    benchmark: Any,
    fn: Callable[[], Any],
    case: Case,
    profile: Profile,
    *,
    rounds: int | None = None,
    warmup_rounds: int | None = None,
    warmup_time_s: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Any:
    """Explicit warm-up, calibration, then ``rounds`` timed calls (one call per round).

    Warm-up: at least ``warmup_rounds`` calls and at least ``warmup_time_s`` seconds, never more than
    ``MAX_WARMUP_CALLS`` calls; timed, excluded from the samples, recorded in ``extra_info``.
    Calibration: the median of the last (up to 5) warm-up calls estimates one call;
    ``rounds = clamp(ceil(max_time_s / estimate), min_rounds, max_rounds)`` unless ``rounds`` is given.
    """
    warmup_rounds = max(1, profile.warmup_rounds if warmup_rounds is None else warmup_rounds)
    warmup_time_ns = int(1e9 * (profile.warmup_time_s if warmup_time_s is None else warmup_time_s))
    warmup_ns: list[int] = []
    start_ns = time.perf_counter_ns()
    while len(warmup_ns) < MAX_WARMUP_CALLS and (
        len(warmup_ns) < warmup_rounds or time.perf_counter_ns() - start_ns < warmup_time_ns
    ):
        t0 = time.perf_counter_ns()
        fn()
        warmup_ns.append(time.perf_counter_ns() - t0)
    estimate_ns = statistics.median(warmup_ns[-5:])
    calibrated = rounds is None
    if rounds is None:
        rounds = calibrated_rounds(estimate_ns / 1e9, profile)
    benchmark.extra_info.update(
        {
            "case": case.to_dict(),
            "series": case.id,
            "warmup_rounds": len(warmup_ns),
            "warmup_total_us": round(sum(warmup_ns) / 1000),
            "warmup_first_us": [round(ns / 1000) for ns in warmup_ns[:5]],
            "calibration_estimate_us": round(estimate_ns / 1000),
            "calibrated": calibrated,
            "rounds": rounds,
            **(extra or {}),
        }
    )
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=0, iterations=1)
