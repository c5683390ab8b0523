"""`deploybench compare`: run a matrix of deployment choices, find each one's max throughput under a P99 SLO,
rank them.

Per choice (``Choice``: framework x server x model x format x workers x threads), in this order:

1. start the real target (``ServerProcess``; ``--pin``: server on CPU 1, load generator on CPU 0);
2. warm up, then closed-loop windows until 3 consecutive windows are within 10% (or a max duration):
   the closed-loop throughput seeds the search bounds;
3. an open-loop run at the matrix's common rate: P50/P95/P99, errors and server CPU at the same load for all;
4. the saturation search (``reports.saturation``): short open-loop runs, bisection over the arrival rate,
   for the highest rate whose corrected P99 meets the SLO with errors <= 1% and achieved >= 95% of offered;
5. stop the target (by PID / process group).

Everything is saved as it goes in ``results/compare/<stamp>-<name>/``: every load record under
``<choice-id>/``, the server log, and ``compare.json`` (rewritten atomically after each phase). A choice
whose server fails to start is recorded as failed and the next one runs; Ctrl-C stops the current choice,
keeps what finished and still writes the report (``report.md``, ``report.html``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from deploybench.errors import TargetError, UsageError
from deploybench.paths import results_dir
from deploybench.paths import zoo_dir as default_zoo_dir
from reports.compare_config import (
    Choice,
    CompareConfig,
    ModelInfo,
    Skipped,
    apply_overrides,
    expand,
    load_config,
    zoo_catalog,
)
from reports.record import RecordWarning, RunRecord, read_json_object, utc_now, write_json_atomic
from reports.saturation import (
    RateMeasurement,
    SaturationResult,
    SloRules,
    StabilityResult,
    Window,
    measure_until_stable,
    saturation_search,
)
from reports.stats import (
    decode_histogram,
    encode_histogram,
    few_samples_percentiles,
    merge_histograms,
    summarize_histogram,
)

COMPARE_SCHEMA_VERSION = 1
SUMMARY_NAME = "compare.json"
SERVER_PIN_CPUS = [1]
GENERATOR_PIN_CPUS = [0]


# ---------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------


@dataclass
class LoadFigures:
    """What the compare report needs from one load record (all series pooled: histograms are merged)."""

    offered_rps: float | None
    throughput_rps: float
    count: int
    error_count: int
    errors: dict[str, int]
    latency_us: dict[str, int | None]  # corrected for open loop
    histogram: str | None  # merged, encoded (corrected)
    warnings: list[RecordWarning] = field(default_factory=list)
    record: str | None = None  # path relative to the compare folder
    duration_s: float | None = None  # measured window (the longest of the series)
    status: str = "complete"  # the load record's status

    @property
    def error_ratio(self) -> float:
        total = self.count + self.error_count
        return self.error_count / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["error_ratio"] = self.error_ratio
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LoadFigures:
        return cls(
            offered_rps=d.get("offered_rps"),
            throughput_rps=float(d.get("throughput_rps") or 0.0),
            count=int(d.get("count") or 0),
            error_count=int(d.get("error_count") or 0),
            errors=dict(d.get("errors") or {}),
            latency_us=dict(d.get("latency_us") or {}),
            histogram=d.get("histogram"),
            warnings=[RecordWarning.from_dict(w) for w in d.get("warnings", [])],
            record=d.get("record"),
            duration_s=d.get("duration_s"),
            status=d.get("status", "complete"),
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


@dataclass
class ChoiceResult:
    choice: Choice
    status: str = "pending"  # pending | running | complete | failed | interrupted
    error: str | None = None
    started_utc: str | None = None
    ended_utc: str | None = None
    wall_s: float | None = None
    stability: dict[str, Any] | None = None  # StabilityResult.to_dict()
    common: dict[str, Any] | None = None  # LoadFigures.to_dict() + server_cpu_percent
    saturation: dict[str, Any] | None = None  # SaturationResult.to_dict()
    warnings: list[RecordWarning] = field(default_factory=list)
    server_log: str | None = None
    server_affinity: list[int] | None = None  # CPUs the target's processes ran on, read from the OS

    @property
    def max_rps(self) -> float | None:
        return (self.saturation or {}).get("max_rps")

    @property
    def resolution(self) -> float | None:
        return (self.saturation or {}).get("resolution")

    def common_pct(self, key: str) -> int | None:
        return ((self.common or {}).get("latency_us") or {}).get(key)

    def add_warning(self, w: RecordWarning) -> None:
        if w not in self.warnings:
            self.warnings.append(w)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choice"] = self.choice.to_dict()
        d["id"] = self.choice.id
        d["label"] = self.choice.label
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChoiceResult:
        return cls(
            choice=Choice.from_dict(d["choice"]),
            status=d.get("status", "pending"),
            error=d.get("error"),
            started_utc=d.get("started_utc"),
            ended_utc=d.get("ended_utc"),
            wall_s=d.get("wall_s"),
            stability=d.get("stability"),
            common=d.get("common"),
            saturation=d.get("saturation"),
            warnings=[RecordWarning.from_dict(w) for w in d.get("warnings", [])],
            server_log=d.get("server_log"),
            server_affinity=d.get("server_affinity"),
        )


@dataclass
class CompareRun:
    """The compare document (``compare.json``): config, environment, skipped combos, one result per choice."""

    config: dict[str, Any]
    scenario: str
    env: dict[str, Any]
    results: list[ChoiceResult]
    skipped: list[Skipped] = field(default_factory=list)
    status: str = "running"  # running | complete | interrupted
    started_utc: str = field(default_factory=utc_now)
    ended_utc: str | None = None
    wall_s: float | None = None
    kind: str = "compare"
    schema_version: int = COMPARE_SCHEMA_VERSION

    @property
    def slo_p99_us(self) -> int:
        return round(float(self.config["slo"]["p99_ms"]) * 1000)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["results"] = [r.to_dict() for r in self.results]
        return {"schema_version": d.pop("schema_version"), "kind": d.pop("kind"), **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompareRun:
        if d.get("kind") != "compare" or not isinstance(d.get("schema_version"), int):
            raise UsageError("not a deploybench compare document (kind 'compare' + schema_version)")
        if d["schema_version"] > COMPARE_SCHEMA_VERSION:
            raise UsageError(f"compare schema_version {d['schema_version']} is newer than this deploybench")
        return cls(
            config=d["config"],
            scenario=d["scenario"],
            env=d.get("env", {}),
            results=[ChoiceResult.from_dict(r) for r in d.get("results", [])],
            skipped=[Skipped(**s) for s in d.get("skipped", [])],
            status=d.get("status", "complete"),
            started_utc=d.get("started_utc", ""),
            ended_utc=d.get("ended_utc"),
            wall_s=d.get("wall_s"),
        )

    def save(self, path: Path) -> Path:
        return write_json_atomic(path, self.to_dict())


def load_compare(path: str | os.PathLike[str]) -> CompareRun:
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_NAME
    data = read_json_object(p, "deploybench compare document")
    try:
        return CompareRun.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise UsageError(f"{p}: malformed compare document ({exc!r})") from None


# ---------------------------------------------------------------------------------------------------------
# Ranking
# ---------------------------------------------------------------------------------------------------------


def rank(results: Sequence[ChoiceResult]) -> list[ChoiceResult]:
    """Complete choices first, by max throughput under the SLO (desc; none = 0), then by P99 at the common
    rate (asc), then by id; then every other choice (failed / interrupted / pending) in run order."""
    done = [r for r in results if r.status == "complete"]
    rest = [r for r in results if r.status != "complete"]
    inf = float("inf")
    done.sort(key=lambda r: (-(r.max_rps or 0.0), r.common_pct("p99") or inf, r.choice.id))
    return done + rest


def _fmt_rps(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def best_sentence(ranked: Sequence[ChoiceResult], slo_p99_us: int, rel_tolerance: float = 0.10) -> str:
    """The best choice in one sentence, with its margin over the runner-up (or why there is none)."""
    slo = f"{slo_p99_us / 1000:g} ms P99 SLO"
    done = [r for r in ranked if r.status == "complete"]
    if not done:
        return "No choice completed, so there is nothing to rank."
    best = done[0]
    if best.max_rps is None:
        return f"No choice met the {slo} at any rate tried, so there is no best choice."
    lead = f"Best: **{best.choice.label}** sustains {_fmt_rps(best.max_rps)} rps under the {slo}"
    if len(done) == 1:
        return f"{lead}; it is the only choice that completed, so there is no runner-up."
    second = done[1]
    if second.max_rps is None:
        return f"{lead}, while the runner-up **{second.choice.label}** met the SLO at no rate tried."
    diff = best.max_rps - second.max_rps
    margin = diff / second.max_rps
    resolution = max(rel_tolerance, *(r.resolution for r in (best, second) if r.resolution is not None))
    sentence = (
        f"{lead}, {margin:.0%} ({_fmt_rps(diff)} rps) more than the runner-up "
        f"**{second.choice.label}** ({_fmt_rps(second.max_rps)} rps)"
    )
    if margin <= resolution:
        sentence += f" — within the search resolution (~{resolution:.0%}), so treat it as a tie"
    return sentence + "."


# ---------------------------------------------------------------------------------------------------------
# Driving real targets (a Driver interface so the orchestration is testable with fakes)
# ---------------------------------------------------------------------------------------------------------


class Target(Protocol):
    url: str
    pid: int

    def is_alive(self) -> bool: ...


class Driver(Protocol):
    def start(self, choice: Choice, log_path: Path) -> contextlib.AbstractContextManager[Target]:
        """Start the target (raise TargetError when it does not come up); stop it on exit."""
        ...

    def load(
        self,
        target: Target,
        *,
        load_model: str,
        duration_s: float,
        warmup_s: float,
        record_path: Path,
        users: int | None = None,
        rate_rps: float | None = None,
    ) -> RunRecord:
        """One bounded load run against the running target; the record is saved at record_path."""
        ...


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


def process_tree_affinity(pid: int) -> list[int] | None:
    """The CPUs a process and its children may run on (union; None when it cannot be read)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        cpus: set[int] = set()
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                cpus.update(p.cpu_affinity())
        return sorted(cpus) or None
    except Exception:
        return None


def process_tree_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process and its children (None when it cannot be read)."""
    try:
        import psutil

        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total
    except Exception:
        return None


class RealDriver:
    """Targets from ``targets.serve`` and load from ``loadtests.runner.run_load``."""

    def __init__(self, cfg: CompareConfig, scenario: str, zoo_dir: Path, results_dir: Path) -> None:
        self.cfg = cfg
        self.scenario = scenario
        self.zoo_dir = zoo_dir
        self.results_dir = results_dir
        self.pin = cfg.measure.pin
        self.model: str | None = None

    @contextlib.contextmanager
    def start(self, choice: Choice, log_path: Path) -> Iterator[Target]:
        from targets.serve import ServerProcess, TargetConfig

        self.model = choice.model
        config = TargetConfig(
            framework=choice.framework,
            server=choice.server,
            model=choice.model,
            format=choice.format,
            workers=choice.workers,
            threads=choice.threads,
            intra_op_threads=self.cfg.matrix.intra_op_threads,
            cpus=list(SERVER_PIN_CPUS) if self.pin else None,
            zoo_dir=str(self.zoo_dir),
        )
        server = ServerProcess(config, log_path=log_path)
        try:
            server.start()
            yield server
        finally:
            server.stop()
            server.cleanup()

    def load(
        self,
        target: Target,
        *,
        load_model: str,
        duration_s: float,
        warmup_s: float,
        record_path: Path,
        users: int | None = None,
        rate_rps: float | None = None,
    ) -> RunRecord:
        from loadtests.runner import run_load

        return run_load(
            target.url,
            self.scenario,
            duration_s=duration_s,
            warmup_s=warmup_s,
            users=users,
            rate_rps=rate_rps,
            load_model=load_model,
            results_dir=self.results_dir,
            record_path=record_path,
            generator_cpus=list(GENERATOR_PIN_CPUS) if self.pin else None,
            model=self.model,
        )


def check_pin_possible() -> None:
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        raise UsageError("--pin needs Linux CPU affinity (os.sched_getaffinity)") from None
    need = set(SERVER_PIN_CPUS + GENERATOR_PIN_CPUS)
    if not need <= cpus:
        raise UsageError(f"--pin needs CPUs {sorted(need)}; this process may use {sorted(cpus)}")


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
    result.server_log = f"{choice.id}/server.log"
    save()

    def rel(p: Path) -> str:
        return str(p.relative_to(out_dir))

    def load(phase: str, path: Path, **kw: Any) -> LoadFigures:
        record = driver.load(target, record_path=path, **kw)
        return figures_from_record(record, rel(path))

    try:
        with driver.start(choice, cdir / "server.log") as target:
            result.server_affinity = process_tree_affinity(target.pid) if target.pid else None

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
            cpu0, t0 = process_tree_cpu_s(target.pid), time.perf_counter_ns()
            fig = load(
                "common",
                cdir / "common-rate.json",
                load_model=ms.load_model,
                rate_rps=ms.common_rate_rps,
                duration_s=ms.common_duration_s,
                warmup_s=se.step_warmup_s,
            )
            cpu1, t1 = process_tree_cpu_s(target.pid), time.perf_counter_ns()
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
    from reports.env import capture_env

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


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _csv_int(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        default=None,
        help="matrix file (TOML) or the name of one in configs/ (default: quick)",
    )
    g = parser.add_argument_group("matrix overrides (comma-separated lists replace the config's axis)")
    g.add_argument("--framework", type=_csv, help="e.g. fastapi,flask")
    g.add_argument("--server", type=_csv, help="gunicorn-sync, gunicorn-gthread, uvicorn, gunicorn-uvicorn")
    g.add_argument("--model", type=_csv, help="e.g. iris-rf,iris-mlp")
    g.add_argument("--format", type=_csv, help="pickle, onnx, torchscript, pt2")
    g.add_argument("--workers", type=_csv_int, help="e.g. 1,2")
    g.add_argument("--threads", type=_csv_int, help="gunicorn-gthread threads, e.g. 1,4")
    g.add_argument("--intra-op-threads", type=int, help="model runtime threads per worker")
    m = parser.add_argument_group("measurement overrides")
    m.add_argument("--slo-ms", type=float, help="P99 SLO in milliseconds")
    m.add_argument("--rate", type=float, help="the common open-loop rate (rps) every choice is measured at")
    m.add_argument("--users", type=int, help="closed-loop users for warm-up and stability windows")
    m.add_argument("--step-s", type=float, help="measured seconds per saturation-search step")
    m.add_argument("--max-probes", type=int, help="rates tried per choice by the saturation search")
    m.add_argument("--pin", action="store_true", default=None, help="server on CPU 1, generator on CPU 0")
    parser.add_argument("--zoo", type=Path, default=None, help="model zoo folder (default: artifacts/zoo)")
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: results/compare/<stamp>-<name>)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the expanded matrix and skipped combos, run nothing"
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        default=None,
        help="only re-render the report of an earlier compare folder (or its compare.json)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "matrix.framework": args.framework,
        "matrix.server": args.server,
        "matrix.model": args.model,
        "matrix.format": args.format,
        "matrix.workers": args.workers,
        "matrix.threads": args.threads,
        "matrix.intra_op_threads": args.intra_op_threads,
        "slo.p99_ms": args.slo_ms,
        "measure.common_rate_rps": args.rate,
        "measure.users": args.users,
        "measure.pin": args.pin,
        "search.step_s": args.step_s,
        "search.max_probes": args.max_probes,
    }


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def _progress(quiet: bool) -> Callable[[str], None]:
    import sys

    def say(msg: str) -> None:
        if not quiet:
            print(msg, file=sys.stderr, flush=True)

    return say


def write_compare_report(run: CompareRun, out_dir: Path) -> list[Path]:
    from reports.compare_render import write_report

    return write_report(run, out_dir)


def run(args: argparse.Namespace) -> int:
    say = _progress(args.quiet)
    if args.report is not None:
        compare = load_compare(args.report)
        folder = args.report if args.report.is_dir() else args.report.parent
        for p in write_compare_report(compare, folder):
            print(p)
        return 0

    cfg = apply_overrides(load_config(args.config), _overrides(args))
    catalog: dict[str, ModelInfo] = zoo_catalog()
    choices, skipped, scenario = expand(cfg, catalog)
    if args.dry_run:
        print(f"{cfg.name}: {len(choices)} choice(s), scenario {scenario}, P99 SLO {cfg.slo.p99_ms:g} ms")
        for c in choices:
            print(f"  {c.id}")
        for s in skipped:
            print(f"  skipped {s.combo}: {s.reason}")
        return 0
    if cfg.measure.pin:
        check_pin_possible()
    zoo = args.zoo or default_zoo_dir()
    if not (zoo / "manifest.json").is_file():
        raise UsageError(f"{zoo}: no model zoo here (run `deploybench build` first, or pass --zoo)")

    out_dir = args.out or results_dir() / "compare" / f"{_stamp()}-{cfg.name}"
    say(f"compare {cfg.name}: {len(choices)} choice(s) -> {out_dir}")
    for s in skipped:
        say(f"  skipped {s.combo}: {s.reason}")
    driver = RealDriver(cfg, scenario, zoo, out_dir / "_runner")

    def done(r: ChoiceResult) -> None:
        mx = "-" if r.max_rps is None else f"{r.max_rps:.1f} rps"
        why = f" ({r.error.splitlines()[0]})" if r.error else ""
        say(f"  {r.choice.id}: {r.status}, max under SLO {mx}, {r.wall_s or 0:.0f} s{why}")

    interrupted = False
    try:
        compare = run_matrix(cfg, choices, skipped, scenario, driver, out_dir, on_choice_done=done)
    except KeyboardInterrupt:
        interrupted = True
        compare = load_compare(out_dir)
    paths = write_compare_report(compare, out_dir)
    from reports.compare_render import ranked_table_markdown

    print(ranked_table_markdown(compare))
    for p in paths:
        print(p)
    if interrupted:
        raise KeyboardInterrupt
    return 0
