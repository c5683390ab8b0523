"""Image pre-processing on its own (decode JPEG + resize 256 + center crop 224 + normalize), and the
harness's own per-round overhead measured against a function that does nothing."""

from __future__ import annotations

from typing import Any

from deploybench.bench.harness import measure
from deploybench.bench.profiles import Case, Profile
from deploybench.bench.suite import synthetic_jpeg
from deploybench.targets.preprocess import decode_image, preprocess_image


def test_preprocess(benchmark: Any, preprocess_case: Case, bench_profile: Profile) -> None:
    case = preprocess_case
    data = synthetic_jpeg(case.width, case.height)
    max_pixels = case.width * case.height

    def run() -> Any:
        return preprocess_image(decode_image(data, max_pixels=max_pixels))

    out = measure(benchmark, run, case, bench_profile, extra={"jpeg_bytes": len(data)})
    assert out.shape == (3, 224, 224)
    assert str(out.dtype) == "float32"


def test_noop(benchmark: Any, noop_case: Case, bench_profile: Profile) -> None:
    def nothing() -> None:
        return None

    assert measure(benchmark, nothing, noop_case, bench_profile) is None
