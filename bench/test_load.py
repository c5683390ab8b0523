"""Load (deserialize) time per artifact (or user model file), and its size on disk (a quantized artifact: also
its top-1 agreement with its float32 source, from the manifest). One warm-up load (imports, page cache)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploybench.bench.harness import measure
from deploybench.bench.profiles import Case, Profile
from deploybench.bench.suite import UserBenchModel, path_size_bytes
from deploybench.targets.catalog import artifact_entry
from deploybench.targets.predictors import load_predictor


def test_load(
    benchmark: Any,
    load_case: Case,
    zoo_dir: Path,
    bench_profile: Profile,
    user_models: dict[str, UserBenchModel],
) -> None:
    case = load_case
    user = user_models.get(case.model)
    predictor = measure(
        benchmark,
        (lambda: user.open(case.format))
        if user is not None
        else (lambda: load_predictor(case.model, case.format, zoo_dir=zoo_dir)),
        case,
        bench_profile,
        rounds=bench_profile.load_rounds,
        warmup_rounds=1,
        warmup_time_s=0.0,
    )
    size_on_disk = path_size_bytes(predictor.path)
    if user is not None:
        size = user.files[case.format].get("size_bytes")
    else:
        entry = artifact_entry(case.model, case.format, zoo_dir)[0]
        size = entry.get("size_bytes")
        if "agreement" in entry:  # a quantized artifact: its accuracy cost, from the build
            benchmark.extra_info["top1_agreement"] = entry["agreement"]["top1_agreement"]
    if size is not None:
        assert size == size_on_disk, f"manifest says {size} bytes, {predictor.path} has {size_on_disk}"
    benchmark.extra_info["size_bytes"] = size_on_disk
    benchmark.extra_info["path"] = str(predictor.path)
    assert predictor.model == case.model and predictor.format == case.format
