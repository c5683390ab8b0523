"""The compare pipeline: run a matrix of deployment choices, find each one's max throughput under a P99 SLO
(the results go into the compare document, ``deploybench.compare_doc``, which also ranks them).

Per choice (``Choice``: framework x server x model x format x workers x threads), in this order:

1. start the real target (``ServerProcess``; ``--pin``: server on CPU 1, load generator on CPU 0);
2. warm up, then closed-loop windows until 3 consecutive windows are within 10% (or a max duration):
   the closed-loop throughput seeds the search bounds;
3. an open-loop run at the matrix's common rate: P50/P95/P99, errors and server CPU at the same load for all;
4. the saturation search (``decisions.compare.saturation``): short open-loop runs, bisection over the
   arrival rate, for the highest rate whose corrected P99 meets the SLO with errors <= 1% and achieved
   >= 95% of offered;
5. stop the target (by PID / process group).

Everything is saved as it goes in ``results/compare/<stamp>-<name>/``: every load record under
``<choice-id>/``, the server log, and ``compare.json`` (rewritten atomically after each phase). A choice
whose server fails to start is recorded as failed and the next one runs; Ctrl-C stops the current choice,
keeps what finished and still writes the report (``report.md``, ``report.html``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from decisions.compare.config import CompareConfig
from decisions.compare.driver import (
    SERVER_PIN_CPUS,
    Driver,
    Target,
    process_tree_affinity,
    process_tree_cpu_s,
)
from decisions.compare.saturation import (
    RateMeasurement,
    SaturationResult,
    SloRules,
    StabilityResult,
    Window,
    measure_until_stable,
    saturation_search,
)
from deploybench.compare_doc import SUMMARY_NAME, Choice, ChoiceResult, CompareRun, LoadFigures, Skipped
from deploybench.env import capture_env
from deploybench.errors import TargetError, UsageError
from deploybench.io import utc_now
from deploybench.record import RecordWarning, RunRecord
from deploybench.stats import (
    decode_histogram,
    encode_histogram,
    few_samples_percentiles,
    merge_histograms,
    summarize_histogram,
)


def figures_from_record(record: RunRecord, rel_path: str | None = None) -> LoadFigures:
    """Pool a load record's series: histograms merged (percentiles never averaged), rates + errors summed."""
    hists = []
    for s in record.series:
        if s.histogram:
            hists.append(decode_histogram(s.histogram))
    merged = merge_histograms(hists) if hists else None
    errors: dict[str, int] = {}
    for s in record.series:
        for kind, n in s.errors.items():
            errors[kind] = errors.get(kind, 0) + int(n)
    count = sum(s.count for s in record.series)
    if merged is not None and merged.get_total_count() > 0:
        latency = summarize_histogram(merged)
        encoded: str | None = encode_histogram(merged)
    elif len(record.series) == 1:
        latency, encoded = dict(record.series[0].latency_us), None
    else:
        latency, encoded = {}, None
    offered = [s.offered_rps for s in record.series if s.offered_rps is not None]
    return LoadFigures(
        offered_rps=sum(offered) if offered else None,
        throughput_rps=float(sum(s.throughput_rps or 0.0 for s in record.series)),
        count=count,
        error_count=sum(errors.values()),
        errors=errors,
        latency_us=latency,
        histogram=encoded,
        warnings=list(record.warnings),
        record=rel_path,
        duration_s=max((s.duration_s for s in record.series if s.duration_s), default=None),
        status=record.status,
    )


def rate_measurement(fig: LoadFigures) -> RateMeasurement:
    """What the saturation search judges, from one open-loop load run."""
    return RateMeasurement(
        fig.latency_us.get("p99"),
        fig.throughput_rps,
        fig.error_ratio,
        {"record": fig.record, "p50_us": fig.latency_us.get("p50")},
        window_s=fig.duration_s,
        p50_us=fig.latency_us.get("p50"),
    )


# ---------------------------------------------------------------------------------------------------------
# The per-choice pipeline
# ---------------------------------------------------------------------------------------------------------


def _phase_warnings(result: ChoiceResult, phase: str, figures: LoadFigures, p99_needed: bool) -> None:
    for w in figures.warnings:
        result.add_warning(RecordWarning(w.code, w.message, w.hint, series=phase))
    if figures.status != "complete":
        result.add_warning(
            RecordWarning("load-" + figures.status, f"load run {figures.status}", series=phase)
        )
    has_few = any(w.code == "few-samples" for w in figures.warnings)
    if p99_needed and not has_few and "p99" in few_samples_percentiles(figures.count):
        result.add_warning(
            RecordWarning(
                "few-samples",
                f"{figures.count} successful requests: P99 is (nearly) the maximum",
                hint="longer steps (search.step_s / measure.common_duration_s)",
                series=phase,
            )
        )


def run_choice(
    choice: Choice,
    cfg: CompareConfig,
    driver: Driver,
    out_dir: Path,
    result: ChoiceResult,
    save: Callable[[], None],
) -> ChoiceResult:
    """Measure one choice into ``result`` (status complete / failed); KeyboardInterrupt propagates after the
    result is marked interrupted. ``save`` is called after every phase."""
    ms, se = cfg.measure, cfg.search
    cdir = out_dir / choice.id
    cdir.mkdir(parents=True, exist_ok=True)
    start_ns = time.perf_counter_ns()
    result.status = "running"
    result.started_utc = utc_now()
    result.server_log = None if choice.external else f"{choice.id}/server.log"
    save()

    def rel(p: Path) -> str:
        return str(p.relative_to(out_dir))

    def load(phase: str, path: Path, **kw: Any) -> LoadFigures:
        record = driver.load(target, record_path=path, **kw)
        return figures_from_record(record, rel(path))

    try:
        with driver.start(choice, cdir / "server.log") as target:
            result.server_affinity = process_tree_affinity(target.pid) if target.pid else None
            result.target_health = getattr(target, "health", None)  # an external choice's /health

            # 1. warm-up + closed-loop windows until stable
            def window(i: int) -> Window:
                path = cdir / f"window-{i + 1:02d}.json"
                fig = load(
                    "window",
                    path,
                    load_model="closed",
                    users=ms.users,
                    duration_s=ms.window_s,
                    warmup_s=ms.warmup_s if i == 0 else se.step_warmup_s,
                )
                _phase_warnings(result, f"window {i + 1}", fig, p99_needed=False)
                return Window(
                    fig.throughput_rps, fig.latency_us.get("p50"), fig.count, {"record": fig.record}
                )

            stab: StabilityResult = measure_until_stable(
                window,
                n=ms.stability_windows,
                tolerance=ms.stability_tolerance,
                max_windows=ms.max_windows,
                max_duration_s=ms.max_stability_s,
            )
            result.stability = stab.to_dict()
            for w in stab.warnings:
                result.add_warning(RecordWarning(w.code, w.message, w.hint, series="stability"))
            save()
            _check_alive(target)

            # 2. the common rate: same open-loop load for every choice, with the server's CPU
            # the server's CPU: only for a target we started (an external one is not ours to measure)
            cpu0, t0 = process_tree_cpu_s(target.pid) if target.pid else None, time.perf_counter_ns()
            fig = load(
                "common",
                cdir / "common-rate.json",
                load_model=ms.load_model,
                rate_rps=ms.common_rate_rps,
                duration_s=ms.common_duration_s,
                warmup_s=se.step_warmup_s,
            )
            cpu1, t1 = process_tree_cpu_s(target.pid) if target.pid else None, time.perf_counter_ns()
            common = fig.to_dict()
            common["server_cpu_percent"] = (
                None if cpu0 is None or cpu1 is None else 100.0 * (cpu1 - cpu0) / ((t1 - t0) / 1e9)
            )
            result.common = common
            _phase_warnings(result, f"common rate {ms.common_rate_rps:g} rps", fig, p99_needed=True)
            save()
            _check_alive(target)

            # 3. saturation search
            rules = SloRules(
                round(cfg.slo.p99_ms * 1000),
                cfg.slo.max_error_ratio,
                cfg.slo.min_throughput_ratio,
                poisson=ms.load_model == "poisson",
            )
            closed = stab.throughput_rps or ms.common_rate_rps
            lo = se.lo_rps or closed * se.lo_factor
            hi = se.hi_rps or closed * se.hi_factor
            if lo >= hi:
                hi = lo * 2.0
            probes: list[dict[str, Any]] = []

            def measure(rate: float) -> RateMeasurement:
                path = cdir / f"rate-{len(probes) + 1:02d}-{rate:.0f}rps.json"
                fig = load(
                    "rate",
                    path,
                    load_model=ms.load_model,
                    rate_rps=rate,
                    duration_s=se.step_s,
                    warmup_s=se.step_warmup_s,
                )
                _phase_warnings(result, f"rate {rate:.1f} rps", fig, p99_needed=True)
                _check_alive(target)
                return rate_measurement(fig)

            def on_point(point: Any) -> None:
                probes.append(point.to_dict())
                result.saturation = {"status": "running", "points": list(probes), "max_rps": None}
                save()

            sat: SaturationResult = saturation_search(
                measure,
                rules,
                lo,
                hi,
                max_probes=se.max_probes,
                rel_tolerance=se.rel_tolerance,
                max_expansions=se.max_expansions,
                on_point=on_point,
            )
            result.saturation = sat.to_dict()
            result.saturation["bounds_rps"] = [lo, hi]
            for w in sat.warnings:
                result.add_warning(RecordWarning(w.code, w.message, w.hint, series="saturation"))
        result.status = "complete"
    except KeyboardInterrupt:
        result.status = "interrupted"
        result.error = "interrupted (Ctrl-C)"
        raise
    except TargetError as exc:
        result.status = "failed"
        result.error = str(exc)
    except UsageError as exc:  # e.g. a missing artifact: this choice cannot run, the others may
        result.status = "failed"
        result.error = str(exc)
    except Exception as exc:  # one broken choice must not lose the others
        result.status = "failed"
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        result.ended_utc = utc_now()
        result.wall_s = (time.perf_counter_ns() - start_ns) / 1e9
        save()
    return result


def _check_alive(target: Target) -> None:
    if not target.is_alive():
        if target.pid is None:
            raise TargetError(f"the external service at {target.url} stopped answering /health")
        raise TargetError(f"the target (pid {target.pid}) died during the measurement")


def run_matrix(
    cfg: CompareConfig,
    choices: Sequence[Choice],
    skipped: Sequence[Skipped],
    scenario: str,
    driver: Driver,
    out_dir: Path,
    *,
    env: dict[str, Any] | None = None,
    on_choice_done: Callable[[ChoiceResult], None] | None = None,
) -> CompareRun:
    """Run every choice in order, saving ``compare.json`` as it goes; Ctrl-C marks the run interrupted,
    keeps what finished, and re-raises (the caller still writes the report from the saved document)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = CompareRun(
        config=cfg.to_dict(),
        scenario=scenario,
        env=env if env is not None else capture_env(SERVER_PIN_CPUS if cfg.measure.pin else None),
        results=[ChoiceResult(c) for c in choices],
        skipped=list(skipped),
    )
    path = out_dir / SUMMARY_NAME
    start_ns = time.perf_counter_ns()

    def save() -> None:
        run.wall_s = (time.perf_counter_ns() - start_ns) / 1e9
        run.save(path)

    save()
    try:
        for result in run.results:
            run_choice(result.choice, cfg, driver, out_dir, result, save)
            if on_choice_done is not None:
                on_choice_done(result)
        run.status = "complete"
    except KeyboardInterrupt:
        run.status = "interrupted"
        raise
    finally:
        run.ended_utc = utc_now()
        save()
    return run
