"""The compare pipeline: run a matrix of deployment choices, find each one's max throughput under a P99 SLO
(the results go into the compare document, ``deploybench.compare_doc``, which also ranks them).

Per choice (``Choice``: framework x server x model x format x workers x threads), in this order:

1. start the real target (``ServerProcess``; pinned (``measure.pin``, "auto" when 2 CPUs are usable):
   server on CPU 1, load generator on CPU 0);
2. warm up, then closed-loop windows until consecutive windows agree (or a max duration): the closed-loop
   throughput seeds the search bounds;
3. an open-loop run at the matrix's common rate: P50/P95/P99, errors and server CPU at the same load for all;
4. the coarse saturation search (``decisions.compare.saturation``): short open-loop runs, bisection over the
   arrival rate, for the highest rate whose corrected P99 meets the SLO with errors <= 1% (dropped and
   never-sent slots included) and >= 95% of the scheduled requests succeeding;
5. ``search.repeats`` repeated searches inside the coarse bracket (widened): R independent estimates, whose
   geometric mean and 95% interval (``deploybench.compare_doc.RateInterval``) are the choice's max rate;
6. stop the target (by PID / process group).

Open-loop runs get enough senders for the rate (``config.open_loop_users``) and steps long enough for a P99
(``config.step_duration_s``). When every choice is done the ranking's one-sentence verdict
(``deploybench.compare_doc.verdict``) goes into the document.

Everything is saved as it goes in ``results/compare/<stamp>-<name>/``: every load record under
``<choice-id>/``, the server log, and ``compare.json`` (rewritten atomically after each phase). A choice
whose server fails to start is recorded as failed and the next one runs; Ctrl-C stops the current choice,
keeps what finished and still writes the report (``report.md``, ``report.html``).
"""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from decisions.compare.config import CompareConfig, open_loop_users, step_duration_s
from decisions.compare.driver import (
    SERVER_PIN_CPUS,
    Driver,
    Target,
    process_tree_affinity,
    process_tree_cpu_s,
    resolve_pin,
)
from decisions.compare.saturation import (
    RateMeasurement,
    RatePoint,
    SaturationResult,
    SloRules,
    StabilityResult,
    Window,
    final_cell_log,
    measure_until_stable,
    repeat_bracket,
    repeated_search,
    saturation_search,
)
from deploybench.compare_doc import (
    SUMMARY_NAME,
    Choice,
    ChoiceResult,
    CompareRun,
    LoadFigures,
    RateInterval,
    Skipped,
    rank,
    verdict,
)
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
    # exact slots scheduled in the window: only when every series has it (else unknown, not a partial sum)
    scheduled = [s.scheduled for s in record.series]
    exact = sum(n for n in scheduled if n is not None) if scheduled and None not in scheduled else None
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
        scheduled=exact,
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
        count=fig.count,
        scheduled=fig.scheduled,
    )


# ---------------------------------------------------------------------------------------------------------
# The per-choice pipeline
# ---------------------------------------------------------------------------------------------------------


# Warnings a probe above capacity is expected to raise: the overload its verdict already reports. They stay
# on the probe (the search table), not on the choice; a passing probe's are the choice's.
OVERLOAD_CODES = frozenset({"late-sends", "dropped-sends", "not-sent", "errors", "few-samples"})


def _relevant(figures: LoadFigures, p99_needed: bool) -> list[RecordWarning]:
    """The load record's warnings that matter to compare. The generator's few-samples warning is about
    every percentile up to P99.9; compare reports P50-P99 only, so it keeps one only when P99 itself is
    unresolved (fewer than 100 requests), and none for closed-loop windows (their P50 is what is used)."""
    out: list[RecordWarning] = []
    for w in figures.warnings:
        if w.code == "few-samples":
            continue
        out.append(w)
    if figures.status != "complete":
        out.append(RecordWarning("load-" + figures.status, f"load run {figures.status}"))
    if p99_needed and "p99" in few_samples_percentiles(figures.count):
        out.append(
            RecordWarning(
                "few-samples",
                f"{figures.count} successful requests: P99 is (nearly) the maximum",
                hint="longer steps (search.min_step_requests / measure.common_duration_s)",
            )
        )
    return out


def _phase_warnings(result: ChoiceResult, phase: str, figures: LoadFigures, p99_needed: bool) -> None:
    for w in _relevant(figures, p99_needed):
        result.add_warning(RecordWarning(w.code, w.message, w.hint, series=phase))


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
        with contextlib.ExitStack() as instance:  # the running target; a repeated search may restart it
            target = instance.enter_context(driver.start(choice, cdir / "server.log"))
            fresh = [False]  # the target was just restarted: the next step warms it up like the first
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
                users=open_loop_users(cfg, ms.common_rate_rps),
                duration_s=step_duration_s(cfg, ms.common_rate_rps, ms.common_duration_s),
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

            # 3. coarse saturation search, then 4. repeated searches inside its bracket
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
            phase = ["coarse"]

            def measure(rate: float) -> RateMeasurement:
                path = cdir / f"rate-{len(probes) + 1:02d}-{rate:.0f}rps.json"
                fig = load(
                    "rate",
                    path,
                    load_model=ms.load_model,
                    rate_rps=rate,
                    users=open_loop_users(cfg, rate),
                    duration_s=step_duration_s(cfg, rate),
                    warmup_s=ms.warmup_s if fresh[0] else se.step_warmup_s,
                )
                fresh[0] = False
                _check_alive(target)
                m = rate_measurement(fig)
                m.extra["phase"] = phase[0]
                m.extra["warnings"] = [asdict(w) for w in _relevant(fig, p99_needed=True)]
                return m

            def on_point(point: RatePoint) -> None:
                for wd in point.extra.get("warnings", []):
                    w = RecordWarning.from_dict(wd)
                    if point.passed or w.code not in OVERLOAD_CODES:
                        where = f"rate {point.offered_rps:.1f} rps ({point.extra.get('phase')})"
                        result.add_warning(RecordWarning(w.code, w.message, w.hint, series=where))
                probes.append(point.to_dict())
                saturation = dict(result.saturation or {})
                saturation.update({"status": "running", "points": list(probes)})
                saturation.setdefault("max_rps", None)
                result.saturation = saturation
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
            coarse = sat.to_dict()
            coarse["bounds_rps"] = [lo, hi]
            result.saturation = {**coarse, "status": "running" if se.repeats else sat.status}
            save()
            for w in sat.warnings:
                result.add_warning(RecordWarning(w.code, w.message, w.hint, series="saturation"))
            bracket = repeat_bracket(sat, se.repeat_margin)
            if se.repeats and bracket is not None:
                restarts = 0

                def on_repeat(k: int) -> None:
                    nonlocal target, restarts
                    phase[0] = f"repeat {k + 1}"
                    if k > 0 and se.repeat_restart and not choice.external:
                        # a fresh process for this repeat (the first shares the coarse search's): the
                        # repeats then sample the start-to-start variation of the target's speed too
                        instance.close()  # stops the running target
                        target = instance.enter_context(driver.start(choice, cdir / "server.log"))
                        fresh[0] = True
                        restarts += 1

                n_probes = repeat_probes(bracket, se.repeat_probes, se.rel_tolerance)
                reps = repeated_search(
                    measure,
                    rules,
                    *bracket,
                    repeats=se.repeats,
                    probes=n_probes,
                    max_extra=se.repeat_extra_probes,
                    seed=zlib.crc32(choice.id.encode()),
                    on_repeat=on_repeat,
                    on_point=on_point,
                )
                interval = RateInterval(
                    tuple(r.estimate_rps for r in reps),
                    floor_log=final_cell_log(*bracket, n_probes) / 2.0,
                    censored=sum(bool(r.censored) for r in reps),
                )
                repeats = interval.to_dict()
                repeats["bracket_rps"] = list(bracket)
                repeats["restarts"] = restarts
                repeats["probes"] = n_probes
                repeats["runs"] = [
                    {k: v for k, v in r.to_dict().items() if k != "points"} | {"probes": len(r.points)}
                    for r in reps
                ]
                result.saturation = {**coarse, "points": list(probes), "repeats": repeats}
                if interval.censored:
                    result.add_warning(
                        RecordWarning(
                            "censored-repeat",
                            f"{interval.censored} of {interval.n} repeated searches found the boundary "
                            "outside their bracket: their estimate is only a bound",
                            hint="a wider search.repeat_margin, or longer steps (search.step_s)",
                            series="saturation",
                        )
                    )
            else:
                result.saturation = {**coarse, "points": list(probes)}
            result.saturation["status"] = sat.status
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


def repeat_probes(bracket: tuple[float, float], probes: int, rel_tolerance: float) -> int:
    """Bisections per repeated search: ``probes``, or more (at most 2 more) when the coarse search ended
    with a wide bracket, so that a final cell is at most half the coarse tolerance wide (10% for 20%)."""
    lo, hi = bracket
    target = math.log1p(rel_tolerance / 2.0)
    need = math.ceil(math.log2(math.log(hi / lo) / target)) if hi / lo > 1.0 + rel_tolerance / 2.0 else 1
    return max(probes, min(need, probes + 2))


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
    pinned = resolve_pin(cfg.measure.pin)
    run = CompareRun(
        config=cfg.to_dict(),
        scenario=scenario,
        env=env if env is not None else capture_env(SERVER_PIN_CPUS if pinned else None),
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
        run.verdict = verdict(rank(run.results), run.slo_p99_us, cfg.search.rel_tolerance)
        save()
    return run
