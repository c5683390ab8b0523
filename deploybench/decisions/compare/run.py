"""The compare pipeline: run a matrix of deployment choices, find each one's max throughput under a P99 SLO
(the results go into the compare document, ``deploybench.compare_doc``, which also ranks them).

Per choice (``Choice``: framework x server x model x format x workers x threads), in this order:

1. start the real target (``ServerProcess``; pinned (``measure.pin``, "auto" when 2 CPUs are usable):
   ``core_split``: one core per server worker, as many for the load generator; 2 CPUs: server on CPU 1,
   generator on CPU 0);
2. warm up, then closed-loop windows until consecutive windows agree (or a max duration): the closed-loop
   throughput seeds the search bounds;
3. an open-loop run at the matrix's common rate: P50/P95/P99, errors and server CPU at the same load for all;
4. the coarse saturation search (``deploybench.decisions.compare.saturation``): short open-loop runs,
bisection over the
   arrival rate, for the highest rate whose corrected P99 meets the SLO with errors <= 1% (dropped and
   never-sent slots included) and >= 95% of the scheduled requests succeeding;
5. ``search.repeats`` repeated searches inside the coarse bracket (widened): R independent estimates, whose
   geometric mean and 95% interval (``deploybench.compare_doc.RateInterval``) are the choice's max rate;
   the first runs on the same process, then the target is stopped (by PID / process group);
6. with ``search.repeat_restart`` (the default) repeats 2..R each run on a freshly started target, and they
   are interleaved in time across the choices (``run_matrix``): steps 1-5 for every choice, then repeat 2
   of every choice (reverse order), repeat 3 of every choice, ... (without restarts all repeats share the
   first process, one choice after another).

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
import os
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from deploybench.compare_doc import (
    SUMMARY_NAME,
    Choice,
    ChoiceResult,
    CompareRun,
    LoadFigures,
    RateInterval,
    Skipped,
    judge_thresholds,
    rank,
    verdict,
)
from deploybench.decisions.compare.config import CompareConfig, SearchConfig, open_loop_users, step_duration_s
from deploybench.decisions.compare.driver import (
    Driver,
    Target,
    core_split,
    process_tree_affinity,
    process_tree_cpu_s,
    resolve_pin,
)
from deploybench.decisions.compare.saturation import (
    RateMeasurement,
    RatePoint,
    RepeatEstimate,
    SaturationResult,
    SloRules,
    StabilityResult,
    Window,
    dither_factors,
    dithered_search,
    final_cell_log,
    measure_until_stable,
    repeat_bracket,
    saturation_search,
)
from deploybench.decisions.plan import PlanRequest, capacity_doc, capacity_sentence
from deploybench.env import capture_env
from deploybench.errors import TargetError, UsageError
from deploybench.io import utc_now
from deploybench.procs import answer_time_s, settle
from deploybench.record import SWEEP_FILE, RecordWarning, RunRecord
from deploybench.stats import (
    decode_histogram,
    encode_histogram,
    few_samples_percentiles,
    merge_histograms,
    summarize_histogram,
)
from deploybench.sweep import Sweep, point_file_name, point_from_record, save_sweep
from deploybench.thresholds import parse_thresholds

# Between load runs on one target: wait until /health is answered within max(SETTLE_FLOOR_S, SETTLE_FACTOR x
# its time on the idle target), at most SETTLE_MAX_S, so that a probe does not start behind what an
# overloaded probe left queued (requests in uvicorn, connections in gunicorn's accept queue). A guard: the
# generator waits for its requests in flight before it exits, and in compare's Flask runs of 2026-12-04 it
# waited 1-2 ms (docs/measurements/load-engines.md).
SETTLE_FLOOR_S = 0.010
SETTLE_FACTOR = 4.0
SETTLE_MAX_S = 15.0


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


class ChoiceRun:
    """One choice's measurement, in passes that ``run_matrix`` interleaves across the choices:

    - ``first()``: start the target, stability windows, the common rate, the coarse search and the first
      repeated search (all of them when ``search.repeat_restart`` is off: they share that process), stop it;
    - ``repeat(k)``: repeated search k (k >= 1) on a freshly started target (an external service is not
      restarted), with the full warm-up before its first step, then stop it;
    - ``finish()``: the choice's result from the repeats done.

    Each pass marks the result failed on an error; KeyboardInterrupt propagates (a choice interrupted in its
    first pass is marked interrupted, one interrupted in a later pass keeps the repeats it finished).
    ``save`` is called after every phase."""

    def __init__(
        self,
        choice: Choice,
        cfg: CompareConfig,
        driver: Driver,
        out_dir: Path,
        result: ChoiceResult,
        save: Callable[[], None],
    ) -> None:
        self.choice, self.cfg, self.driver, self.out_dir = choice, cfg, driver, out_dir
        self.result, self.save = result, save
        self.cdir = out_dir / choice.id
        ms = cfg.measure
        self.rules = SloRules(
            round(cfg.slo.p99_ms * 1000),
            cfg.slo.max_error_ratio,
            cfg.slo.min_throughput_ratio,
            poisson=ms.load_model == "poisson",
        )
        self.target: Target | None = None
        self.stab: StabilityResult | None = None
        self.fresh = False  # the target was just (re)started: its next step gets the full warm-up
        self.used = False  # a load ran on this target process: settle before the next one
        self.idle_answer_s: float | None = None  # /health's answer time on the idle target
        self.settled: dict[str, Any] = {}  # the last settle: seconds waited, and whether it settled
        self.phase = "coarse"
        self.probes: list[dict[str, Any]] = []
        self.sat: SaturationResult | None = None
        self.coarse: dict[str, Any] = {}
        self.bracket: tuple[float, float] | None = None
        self.n_probes = 0
        self.dithers: list[float] = []
        self.reps: list[RepeatEstimate] = []
        self.restarts = 0
        self.first_done = False
        self.finished = False

    # -- the passes --------------------------------------------------------------------------------------

    @property
    def planned_repeats(self) -> int:
        """Repeated searches this choice will run (0: none, e.g. nothing passed in the coarse search)."""
        return len(self.dithers)

    def pending(self, k: int) -> bool:
        """Whether repeat ``k`` is still to run in a pass of its own."""
        done = len(self.reps)
        return self.result.status == "running" and self.first_done and done == k < self.planned_repeats

    def first(self) -> None:
        se = self.cfg.search
        with self._pass(first=True), contextlib.ExitStack() as instance:
            self.target = instance.enter_context(self.driver.start(self.choice, self.cdir / "server.log"))
            self._started()
            self.result.server_affinity = process_tree_affinity(self.target.pid) if self.target.pid else None
            self.result.generator_cpus = getattr(self.driver, "generator_cpus", None)
            self.result.target_health = getattr(self.target, "health", None)  # an external choice's /health
            self._stability()
            self._common_rate()
            self._sweeps()
            self._coarse_search()
            if se.repeats and self.bracket is not None:
                self.n_probes = repeat_probes(self.bracket, se.repeat_probes, se.rel_tolerance)
                self.dithers = dither_factors(
                    zlib.crc32(self.choice.id.encode()), *self.bracket, self.n_probes, se.repeats
                )
                # with restarts the first repeat shares the coarse search's process, the rest get their own
                for k in range(1 if se.repeat_restart else se.repeats):
                    self._one_repeat(k)
            self.first_done = True

    def repeat(self, k: int) -> None:
        with self._pass(first=False), contextlib.ExitStack() as instance:
            # a fresh process: the repeats then sample the start-to-start variation of the target's speed
            self.target = instance.enter_context(self.driver.start(self.choice, self.cdir / "server.log"))
            self._started()
            self.fresh = True
            self.restarts += not self.choice.external
            self._one_repeat(k)

    def finish(self, interrupted: bool = False) -> bool:
        """End the choice, once: a running one whose first pass completed becomes complete from the repeats
        it finished; a failed one stays failed. Returns whether this call ended it (False: already ended, or
        never got that far: pending or interrupted in its first pass)."""
        status = self.result.status
        if (
            self.finished
            or status not in ("running", "failed")
            or (status == "running" and not self.first_done)
        ):
            return False
        self.finished = True
        if status == "failed":
            return True
        if self.reps and len(self.reps) < self.planned_repeats:
            why = "compare was interrupted" if interrupted else "the remaining repeats did not run"
            self.result.add_warning(
                RecordWarning(
                    "fewer-repeats",
                    f"{why} after {len(self.reps)} of {self.planned_repeats} repeated searches: the interval "
                    f"is from {len(self.reps)}",
                    series="saturation",
                )
            )
        if self.sat is not None:
            self.result.saturation = {**(self.result.saturation or {}), "status": self.sat.status}
        self.result.status = "complete"
        judge_thresholds(self.result, parse_thresholds(self.cfg.slo.thresholds))
        self.save()
        return True

    @contextlib.contextmanager
    def _pass(self, first: bool) -> Iterator[None]:
        result = self.result
        start_ns = time.perf_counter_ns()
        if first:
            self.cdir.mkdir(parents=True, exist_ok=True)
            result.status = "running"
            result.started_utc = utc_now()
            result.server_log = None if self.choice.external else f"{self.choice.id}/server.log"
            self.save()
        try:
            yield
        except KeyboardInterrupt:
            if first:
                result.status = "interrupted"
                result.error = "interrupted (Ctrl-C)"
            raise
        except (TargetError, UsageError) as exc:  # e.g. a missing artifact: this choice cannot run
            result.status = "failed"
            result.error = str(exc)
        except Exception as exc:  # one broken choice must not lose the others
            result.status = "failed"
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.target = None
            result.ended_utc = utc_now()
            result.wall_s = (result.wall_s or 0.0) + (time.perf_counter_ns() - start_ns) / 1e9
            self.save()

    # -- the phases --------------------------------------------------------------------------------------

    def _rel(self, p: Path) -> str:
        return str(p.relative_to(self.out_dir))

    def _load(self, path: Path, **kw: Any) -> LoadFigures:
        assert self.target is not None
        self._settle()
        record = self.driver.load(self.target, record_path=path, **kw)
        return figures_from_record(record, self._rel(path))

    def _started(self) -> None:
        """A target process was just started (or an external one is about to be measured): time /health on
        it idle, the yardstick of ``_settle``."""
        assert self.target is not None
        times = [answer_time_s(self.target.url) for _ in range(3)]
        answered = [t for t in times if t is not None]
        self.idle_answer_s = min(answered) if answered else None
        self.used = False

    def _settle(self) -> None:
        """Before every load run but the first on a target process: let it work off what the last run left
        queued (``procs.settle``); a target still slow after ``SETTLE_MAX_S`` is a warning."""
        assert self.target is not None
        if not self.used or self.idle_answer_s is None:
            self.used = True
            self.settled = {}
            return
        within_s = max(SETTLE_FLOOR_S, SETTLE_FACTOR * self.idle_answer_s)
        waited_s, ok = settle(self.target.url, within_s, SETTLE_MAX_S)
        self.settled = {"settle_s": round(waited_s, 3), "settled": ok}
        if not ok:
            self.result.add_warning(
                RecordWarning(
                    "not-settled",
                    f"/health still took over {within_s * 1000:.0f} ms after {waited_s:.1f} s of waiting for "
                    "the last run's queue to drain: the next run may start behind it",
                    series=f"settle ({self.phase})",
                )
            )

    def _add_warnings(self, warnings: Sequence[RecordWarning], series: str) -> None:
        for w in warnings:
            self.result.add_warning(RecordWarning(w.code, w.message, w.hint, series=series))

    def _check_alive(self) -> None:
        assert self.target is not None
        _check_alive(self.target)

    def _stability(self) -> None:
        ms, se, result = self.cfg.measure, self.cfg.search, self.result

        def window(i: int) -> Window:
            fig = self._load(
                self.cdir / f"window-{i + 1:02d}.json",
                load_model="closed",
                users=ms.users,
                duration_s=ms.window_s,
                warmup_s=ms.warmup_s if i == 0 else se.step_warmup_s,
            )
            _phase_warnings(result, f"window {i + 1}", fig, p99_needed=False)
            return Window(fig.throughput_rps, fig.latency_us.get("p50"), fig.count, {"record": fig.record})

        self.stab = measure_until_stable(
            window,
            n=ms.stability_windows,
            tolerance=ms.stability_tolerance,
            max_windows=ms.max_windows,
            max_duration_s=ms.max_stability_s,
        )
        result.stability = self.stab.to_dict()
        self._add_warnings(self.stab.warnings, "stability")
        self.save()
        self._check_alive()

    def _sweeps(self) -> None:
        """``[measure] sweep_users`` / ``sweep_rates``: one run per point on this target, in order; the curve
        and its knee (``deploybench.sweep``) kept in the result and in ``CHOICE/sweep-AXIS/sweep.json``."""
        ms, se = self.cfg.measure, self.cfg.search
        for axis, values in (("users", ms.sweep_users), ("rate", ms.sweep_rates)):
            if not values:
                continue
            load_model = "closed" if axis == "users" else ms.load_model
            scenario = getattr(self.driver, "scenario", ms.scenario)
            shared = {"choice": self.choice.id, "scenario": scenario, "duration_s": ms.sweep_s,
                      "warmup_s": se.step_warmup_s, "engine": ms.engine}  # fmt: skip
            sweep = Sweep(axis, load_model, config=shared)
            sdir = self.cdir / f"sweep-{axis}"
            for i, value in enumerate(values):
                name = point_file_name(i, axis, value)
                if axis == "users":
                    kw: dict[str, Any] = {"users": int(value)}
                else:
                    kw = {"rate_rps": value, "users": open_loop_users(self.cfg, value)}
                assert self.target is not None
                self._settle()
                record = self.driver.load(self.target, record_path=sdir / name, load_model=load_model,
                                          duration_s=ms.sweep_s, warmup_s=se.step_warmup_s, **kw)  # fmt: skip
                sweep.add(point_from_record(value, record, name))
                self._check_alive()
            sweep.finish()
            save_sweep(sweep, sdir / SWEEP_FILE)
            self.result.sweeps[axis] = sweep.to_dict()
            self.save()

    def _common_rate(self) -> None:
        """The same open-loop load for every choice, with the server's CPU (only for a target we started: an
        external one is not ours to measure)."""
        ms, se = self.cfg.measure, self.cfg.search
        assert self.target is not None
        pid = self.target.pid
        cpu0, t0 = process_tree_cpu_s(pid) if pid else None, time.perf_counter_ns()
        fig = self._load(
            self.cdir / "common-rate.json",
            load_model=ms.load_model,
            rate_rps=ms.common_rate_rps,
            users=open_loop_users(self.cfg, ms.common_rate_rps),
            duration_s=step_duration_s(self.cfg, ms.common_rate_rps, ms.common_duration_s),
            warmup_s=se.step_warmup_s,
        )
        cpu1, t1 = process_tree_cpu_s(pid) if pid else None, time.perf_counter_ns()
        common = fig.to_dict()
        common["server_cpu_percent"] = (
            None if cpu0 is None or cpu1 is None else 100.0 * (cpu1 - cpu0) / ((t1 - t0) / 1e9)
        )
        self.result.common = common
        _phase_warnings(self.result, f"common rate {ms.common_rate_rps:g} rps", fig, p99_needed=True)
        self.save()
        self._check_alive()

    def _coarse_search(self) -> None:
        ms, se = self.cfg.measure, self.cfg.search
        assert self.stab is not None
        lo, hi = search_bounds(se, self.stab.throughput_rps or ms.common_rate_rps)
        self.sat = saturation_search(
            self._measure,
            self.rules,
            lo,
            hi,
            max_probes=se.max_probes,
            rel_tolerance=se.rel_tolerance,
            max_expansions=se.max_expansions,
            on_point=self._on_point,
        )
        self.coarse = self.sat.to_dict()
        self.coarse["bounds_rps"] = [lo, hi]
        self.result.saturation = {**self.coarse, "points": list(self.probes)}
        self.save()
        self._add_warnings(self.sat.warnings, "saturation")
        self.bracket = repeat_bracket(self.sat, se.repeat_margin)

    def _measure(self, rate: float) -> RateMeasurement:
        ms, se = self.cfg.measure, self.cfg.search
        fig = self._load(
            self.cdir / f"rate-{len(self.probes) + 1:02d}-{rate:.0f}rps.json",
            load_model=ms.load_model,
            rate_rps=rate,
            users=open_loop_users(self.cfg, rate),
            duration_s=step_duration_s(self.cfg, rate),
            warmup_s=ms.warmup_s if self.fresh else se.step_warmup_s,
        )
        self.fresh = False
        self._check_alive()
        m = rate_measurement(fig)
        m.extra["phase"] = self.phase
        m.extra.update(self.settled)
        m.extra["warnings"] = [asdict(w) for w in _relevant(fig, p99_needed=True)]
        return m

    def _on_point(self, point: RatePoint) -> None:
        result = self.result
        for wd in point.extra.get("warnings", []):
            w = RecordWarning.from_dict(wd)
            if point.passed or w.code not in OVERLOAD_CODES:
                where = f"rate {point.offered_rps:.1f} rps ({point.extra.get('phase')})"
                result.add_warning(RecordWarning(w.code, w.message, w.hint, series=where))
        self.probes.append(point.to_dict())
        saturation = dict(result.saturation or {})
        saturation.update({"status": "running", "points": list(self.probes)})
        saturation.setdefault("max_rps", None)
        result.saturation = saturation
        self.save()

    def _one_repeat(self, k: int) -> None:
        se = self.cfg.search
        assert self.bracket is not None
        self.phase = f"repeat {k + 1}"
        est = dithered_search(
            self._measure,
            self.rules,
            *self.bracket,
            self.dithers[k],
            probes=self.n_probes,
            max_extra=se.repeat_extra_probes,
            on_point=self._on_point,
        )
        self.reps.append(est)
        interval = repeats_interval(self.reps, self.bracket, self.n_probes)
        repeats = interval.to_dict()
        repeats["bracket_rps"] = list(self.bracket)
        repeats["restarts"] = self.restarts
        repeats["probes"] = self.n_probes
        repeats["runs"] = [
            {key: v for key, v in r.to_dict().items() if key != "points"} | {"probes": len(r.points)}
            for r in self.reps
        ]
        self.result.saturation = {**self.coarse, "points": list(self.probes), "repeats": repeats}
        self.result.warnings = [w for w in self.result.warnings if w.code != "censored-repeat"]
        if interval.censored:
            self.result.add_warning(
                RecordWarning(
                    "censored-repeat",
                    f"{interval.censored} of {interval.n} repeated searches found the boundary outside their "
                    "bracket: their estimate is only a bound",
                    hint="a wider search.repeat_margin, or longer steps (search.step_s)",
                    series="saturation",
                )
            )
        self.save()


def run_choice(
    choice: Choice,
    cfg: CompareConfig,
    driver: Driver,
    out_dir: Path,
    result: ChoiceResult,
    save: Callable[[], None],
) -> ChoiceResult:
    """Measure one choice into ``result``, all its passes one after the other (``run_matrix`` interleaves
    them across choices instead)."""
    cr = ChoiceRun(choice, cfg, driver, out_dir, result, save)
    cr.first()
    for k in range(1, cr.planned_repeats):
        if cr.pending(k):
            cr.repeat(k)
    cr.finish()
    return result


def search_bounds(se: SearchConfig, closed_rps: float) -> tuple[float, float]:
    """The coarse search's [lo, hi]: ``lo_rps``/``hi_rps`` where given, else factors of the closed-loop
    throughput ``closed_rps``; hi at least twice lo."""
    lo = se.lo_rps or closed_rps * se.lo_factor
    hi = se.hi_rps or closed_rps * se.hi_factor
    return (lo, lo * 2.0) if lo >= hi else (lo, hi)


def repeats_interval(
    reps: Sequence[RepeatEstimate], bracket: tuple[float, float], probes: int
) -> RateInterval:
    """A choice's interval from its repeated searches of ``bracket`` (``probes`` bisections each): its floor
    is half a final cell."""
    return RateInterval(
        tuple(r.estimate_rps for r in reps),
        floor_log=final_cell_log(*bracket, probes) / 2.0,
        censored=sum(bool(r.censored) for r in reps),
    )


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


def plan_request(cfg: CompareConfig) -> PlanRequest:
    """The ``[plan]`` table as a plan request (0 price: no costs; 0 cores: as measured)."""
    p = cfg.plan
    return PlanRequest(traffic_rps=p.traffic_rps, headroom=p.headroom,
                       core_hour_price=p.core_hour_price or None,
                       cores_per_replica=p.cores_per_replica or None)  # fmt: skip


def run_matrix(
    cfg: CompareConfig,
    choices: Sequence[Choice],
    skipped: Sequence[Skipped],
    scenario: str,
    driver: Driver,
    out_dir: Path,
    *,
    env: dict[str, Any] | None = None,
    on_progress: Callable[[ChoiceResult, str], None] | None = None,
) -> CompareRun:
    """Run every choice, saving ``compare.json`` as it goes.

    Interleaved in time: first every choice's first pass (``ChoiceRun.first``), in matrix order; then, with
    ``search.repeat_restart``, repeat 2 of every choice (in reverse order), then repeat 3 (in order) and so
    on. A slow minute of the machine then lowers one repeat of several choices, not every repeat of one (it
    widens their intervals instead of biasing one ratio), and alternating the order balances a steady drift.
    ``on_progress(result, what)`` after each pass ("first pass", "repeat 2", ...) and when a choice is
    "done". Ctrl-C marks the run interrupted, finishes every choice from the repeats it completed, and
    re-raises (the caller still writes the report from the saved document)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    server_cpus = core_split(os.sched_getaffinity(0))[0] if resolve_pin(cfg.measure.pin) else None
    run = CompareRun(
        config=cfg.to_dict(),
        scenario=scenario,
        env=env if env is not None else capture_env(server_cpus),
        results=[ChoiceResult(c) for c in choices],
        skipped=list(skipped),
    )
    path = out_dir / SUMMARY_NAME
    start_ns = time.perf_counter_ns()

    def save() -> None:
        run.wall_s = (time.perf_counter_ns() - start_ns) / 1e9
        run.save(path)

    def progress(cr: ChoiceRun, what: str) -> None:
        if on_progress is not None:
            on_progress(cr.result, what)

    def finish(cr: ChoiceRun) -> None:
        if cr.finish():
            progress(cr, "done")

    runs = [ChoiceRun(r.choice, cfg, driver, out_dir, r, save) for r in run.results]
    save()
    try:
        for cr in runs:
            cr.first()
            if cr.pending(1):
                progress(cr, "first pass")
            else:  # nothing more to measure (or it failed): done now
                finish(cr)
        for k in range(1, max((cr.planned_repeats for cr in runs), default=0)):
            for cr in runs if k % 2 == 0 else reversed(runs):
                if cr.pending(k):
                    cr.repeat(k)
                    if cr.result.status == "running":
                        progress(cr, f"repeat {k + 1}")
                    else:  # the restart or the repeat failed
                        finish(cr)
        for cr in runs:
            finish(cr)
        run.status = "complete"
    except KeyboardInterrupt:
        run.status = "interrupted"
        for cr in runs:
            cr.finish(interrupted=True)
        raise
    finally:
        run.ended_utc = utc_now()
        run.verdict = verdict(rank(run.results), run.slo_p99_us, cfg.search.rel_tolerance)
        if cfg.plan.traffic_rps > 0:  # [plan]: the capacity section, and cost at that traffic in the verdict
            run.capacity = capacity_doc(run, plan_request(cfg))
            run.verdict = f"{run.verdict} {capacity_sentence(run.capacity)}"
        save()
    return run
