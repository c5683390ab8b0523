"""pytest-benchmark JSON -> RunRecords (kind "micro"), with noise warnings as data.

One record per model (its predict and load cases) and one for the model-independent cases (image
pre-processing, harness overhead). Every series keeps its raw samples in integer ns (``samples_ns``: full
timer resolution); percentiles are exact (deploybench.stats.summarize_samples). pytest-benchmark stores
seconds per round; with ``iterations=1`` (deploybench.bench.harness.measure) a round is one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from deploybench.bench.profiles import Case, Profile
from deploybench.record import RecordWarning, RunRecord, Series
from deploybench.stats import few_samples_percentiles, summarize_samples

# Noise thresholds (pyperf / hyperfine style checks).
HIGH_SPREAD_MAD_RATIO = 0.10  # MAD / median above this: results are noisy
SLOW_FIRST_RATIO = 2.0  # first measured round slower than this x median ...
SLOW_FIRST_MIN_US = 100  # ... and by at least this much (a few µs on a 10 µs call is timer noise)
MIN_SAMPLES_FOR_SPREAD = 5  # fewer: a MAD says little
CHECKED_PERCENTILES = ("p90", "p95", "p99")  # the ones the report shows; P99.9 needs 1000 samples
SHARED_KEY = "shared"  # record key for the model-independent cases


def samples_ns_from(bench: dict[str, Any]) -> list[int]:
    stats = bench["stats"]
    iterations = int(stats.get("iterations", 1))
    if iterations != 1:
        raise ValueError(
            f"{bench.get('name')}: {iterations} iterations per round; samples must be single calls"
        )
    return [round(float(s) * 1e9) for s in stats["data"]]


def noise_warnings(name: str, samples_us: Sequence[float], *, check_few: bool = True) -> list[RecordWarning]:
    """high-spread, few-samples and slow-first-round checks on one series' raw samples."""
    out: list[RecordWarning] = []
    n = len(samples_us)
    if n == 0:
        return out
    arr = np.asarray(samples_us, dtype=np.float64)
    median = float(np.median(arr))
    mad = float(np.median(np.abs(arr - median)))
    if n >= MIN_SAMPLES_FOR_SPREAD and median > 0 and mad / median > HIGH_SPREAD_MAD_RATIO:
        out.append(
            RecordWarning(
                "high-spread",
                f"MAD is {mad / median:.0%} of the median ({mad:.0f} of {median:.0f} µs)",
                "other load on the machine? pin CPUs, close other work, or rerun with --full",
                name,
            )
        )
    if check_few:
        few = [k for k in few_samples_percentiles(n) if k in CHECKED_PERCENTILES]
        if few:
            out.append(
                RecordWarning(
                    "few-samples",
                    f"{n} samples cannot resolve {', '.join(few)} (P99 needs 100)",
                    "more time per case (--full) gives more rounds",
                    name,
                )
            )
    first = samples_us[0]
    if n >= 3 and median > 0 and first > SLOW_FIRST_RATIO * median and first - median >= SLOW_FIRST_MIN_US:
        out.append(
            RecordWarning(
                "slow-first-round",
                f"first measured round {first} µs is {first / median:.1f}x the median",
                "more warm-up rounds (the profile's warmup_rounds)",
                name,
            )
        )
    return out


def series_from_benchmark(bench: dict[str, Any]) -> tuple[Case, Series]:
    info = bench.get("extra_info", {})
    case = Case(**info["case"])
    samples_ns = samples_ns_from(bench)
    samples = [v / 1000.0 for v in samples_ns]  # µs, unrounded
    total_us = sum(samples)
    calls_per_s = len(samples) / (total_us / 1e6) if total_us > 0 else None
    items = case.batch_size if case.kind == "predict" else 1
    if case.kind == "noop":  # items/s of nothing is meaningless; the latency is the harness overhead
        calls_per_s = None
    params: dict[str, Any] = {"case": case.kind}
    if case.kind in ("predict", "load"):
        params.update(model=case.model, format=case.format)
    if case.kind == "predict":
        params.update(batch_size=case.batch_size, threads=case.threads)
    if case.kind == "preprocess":
        params.update(width=case.width, height=case.height)
    extra = {
        k: info[k]
        for k in (
            "warmup_rounds",
            "warmup_total_us",
            "warmup_first_us",
            "calibration_estimate_us",
            "calibrated",
            "rounds",
        )
        if k in info
    }
    extra.update({k: info[k] for k in ("size_bytes", "jpeg_bytes", "top1_agreement") if k in info})
    series = Series(
        name=case.id,
        count=len(samples),
        latency_us=summarize_samples(samples),
        duration_s=total_us / 1e6,
        throughput_rps=calls_per_s,
        items_per_s=None if calls_per_s is None else calls_per_s * items,
        samples_ns=samples_ns,
        params=params,
        extra=extra,
    )
    return case, series


def records_from_benchmark_json(
    data: dict[str, Any],
    *,
    profile: Profile,
    expected: list[Case],
    env: dict[str, Any],
    started_utc: str,
    settings: dict[str, Any],
    tasks: dict[str, str] | None = None,
    model_files: dict[str, dict[str, Any]] | None = None,
) -> dict[str, RunRecord]:
    """Records keyed by model name (plus ``SHARED_KEY``), in the order of ``expected``.

    ``model_files``: for a user's model (``--model-file``), its files by format (path, sha256, size_bytes,
    runtime, output), kept in the record's config as ``model_files``. A case expected but absent from
    ``data`` (it failed or the run was interrupted) becomes a ``case-missing`` warning on its record.
    """
    tasks = tasks or {}
    model_files = model_files or {}
    records: dict[str, RunRecord] = {}

    def record_for(case: Case) -> RunRecord:
        key = case.model if case.kind in ("predict", "load") else SHARED_KEY
        if key not in records:
            config: dict[str, Any] = {"suite": "micro"}
            if key == SHARED_KEY:
                config.update(title="image pre-processing + harness overhead", scenario="preprocess")
            else:
                config.update(model=key, task=tasks.get(key, ""))
                if key in model_files:
                    config["model_files"] = model_files[key]
            config.update(profile=profile.name, **settings)
            records[key] = RunRecord(kind="micro", config=config, env=env, started_utc=started_utc)
        return records[key]

    for case in expected:  # fixes record order even when some cases produced nothing
        record_for(case)

    got: dict[str, tuple[Case, Series]] = {}
    for bench in data.get("benchmarks", []):
        if "case" not in bench.get("extra_info", {}):
            continue
        case, series = series_from_benchmark(bench)
        got[case.id] = (case, series)

    load_times = {
        (c.model, c.format): s
        for c, s in got.values()
        if c.kind == "load" and s.latency_us.get("p50") is not None
    }
    ordered = [got[c.id] for c in expected if c.id in got] + [
        v for k, v in got.items() if k not in {c.id for c in expected}
    ]
    for case, series in ordered:
        record = record_for(case)
        if case.kind == "predict" and (case.model, case.format) in load_times:
            load = load_times[(case.model, case.format)]
            series.extra["load_time_us"] = load.latency_us["p50"]
            for key in ("size_bytes", "top1_agreement"):  # the artifact's, measured by its load case
                if key in load.extra:
                    series.extra[key] = load.extra[key]
        record.series.append(series)
        for w in noise_warnings(
            series.name, [v / 1000.0 for v in series.samples_ns or []], check_few=case.kind != "load"
        ):
            record.add_warning(w.code, w.message, w.hint, w.series)
    for case in expected:
        if case.id not in got:
            record_for(case).add_warning(
                "case-missing",
                f"{case.id} produced no result (it failed or the run stopped first)",
                "see the pytest output above the report",
                None,
            )
    return records
