"""The engine-neutral half of a load run: options, the record's config, the generator's headroom, the warnings
and the save. Locust-free: the Locust adapter (``deploybench.loadtests.common``) and the lean engine
(``deploybench.loadtests.lean``) both feed a ``deploybench.measure.Measurement`` and hand it here.

Generator headroom (measured, never assumed): every generator process reports its CPU time over the run
(user + system, ``cpu_s``), its wall time and the requests it completed, so the record carries the generator's
CPU per request and its busy share (``config.generator_headroom``). A generator busier than
``--generator-bound-percent`` of a core is a ``generator-bound`` warning: its figures are then a lower bound
of the target's capacity, not the target's.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from deploybench.errors import UsageError
from deploybench.io import utc_now
from deploybench.loadtests.payloads import HEADERS_ENV, merge_headers
from deploybench.measure import DROPPED, NOT_SENT, UNFINISHED, Measurement
from deploybench.paths import results_dir as default_results_dir
from deploybench.procs import fetch_health
from deploybench.record import RunRecord
from deploybench.stats import few_samples_percentiles
from deploybench.vocabulary import LOAD_MODELS, OPEN_LOOP_MODELS

GENERATOR_BOUND_PERCENT = 85.0  # of one core
DRAIN_TIMEOUT_S = 5.0  # open loop: after the window closes, how long requests in flight may still answer
KEPT_WARNINGS = ("target-health-unavailable", "worker-final-missing")  # set once, not by each save


@dataclass
class LoadOptions:
    load_model: str = "closed"
    rate_rps: float = 0.0
    warmup_s: float = 0.0
    duration_s: float = 0.0
    max_lag_s: float = 5.0
    max_requests: int = 0
    seed: int = 0
    model: str = ""
    results_dir: str = field(default_factory=lambda: str(default_results_dir()))
    record: str = ""
    save_interval_s: float = 2.0
    abort_after_errors: int = 200
    generator_bound_percent: float = GENERATOR_BOUND_PERCENT
    master_port_file: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    extra_config: dict[str, Any] = field(default_factory=dict)

    @property
    def open_loop(self) -> bool:
        return self.load_model in OPEN_LOOP_MODELS

    @classmethod
    def from_parsed(cls, parsed: Any) -> LoadOptions:
        """Validate Locust's parsed options; raise UsageError naming the bad option."""
        g = lambda name, default: getattr(parsed, name, default) if parsed is not None else default  # noqa: E731
        o = cls(
            load_model=g("load_model", "closed"),
            rate_rps=float(g("rate", 0.0) or 0.0),
            warmup_s=float(g("warmup", 0.0) or 0.0),
            duration_s=float(g("duration", 0.0) or 0.0),
            max_lag_s=float(g("max_lag", 5.0)),
            max_requests=int(g("max_requests", 0) or 0),
            seed=int(g("seed", 0) or 0),
            model=str(g("model", "") or ""),
            results_dir=str(g("results_dir", "") or default_results_dir()),
            record=str(g("record", "") or ""),
            save_interval_s=float(g("save_interval", 2.0)),
            abort_after_errors=int(g("abort_after_errors", 200) or 0),
            generator_bound_percent=float(g("generator_bound_percent", GENERATOR_BOUND_PERCENT)),
            master_port_file=str(g("master_port_file", "") or ""),
            headers=merge_headers(os.environ.get(HEADERS_ENV, ""), g("header", None)),
        )
        if o.load_model not in LOAD_MODELS:
            raise UsageError(f"--load-model must be one of {', '.join(LOAD_MODELS)} (got {o.load_model!r})")
        if o.open_loop and not (math.isfinite(o.rate_rps) and o.rate_rps > 0):
            raise UsageError(f"--load-model {o.load_model} needs --rate > 0 (requests/s)")
        if o.warmup_s < 0 or not math.isfinite(o.warmup_s):
            raise UsageError("--warmup must be >= 0 seconds")
        if o.duration_s < 0 or not math.isfinite(o.duration_s):
            raise UsageError("--duration must be >= 0 seconds")
        if o.max_lag_s <= 0:
            raise UsageError("--max-lag must be > 0 seconds")
        if o.max_requests < 0:
            raise UsageError("--max-requests must be >= 0")
        if o.save_interval_s <= 0:
            raise UsageError("--save-interval must be > 0")
        if not (math.isfinite(o.generator_bound_percent) and o.generator_bound_percent >= 0):
            raise UsageError("--generator-bound-percent must be >= 0 (percent of one core)")
        raw = g("extra_config", "") or ""
        if raw:
            try:
                extra = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise UsageError(f"--extra-config is not valid JSON ({exc})") from None
            if not isinstance(extra, dict):
                raise UsageError("--extra-config must be a JSON object")
            o.extra_config = extra
        return o


def is_loopback(host: str | None) -> bool:
    return bool(host) and any(h in host for h in ("://127.", "://localhost", "://[::1]"))


SCENARIO_OPTION_NAMES = (
    "batch_size", "payload_mix", "image_size", "image_format", "image_count",  # built-in scenarios
    "path", "method", "payload", "multipart_field",  # the api scenario (your own endpoint)
)  # fmt: skip


def scenario_options(parsed: Any) -> dict[str, Any]:
    return {k: getattr(parsed, k) for k in SCENARIO_OPTION_NAMES if hasattr(parsed, k)}


def process_cpu_s() -> float:
    """This process's CPU time so far (user + system, its threads included), seconds."""
    t = os.times()
    return t.user + t.system


def cpu_usage(cpu0_s: float, wall0_ns: int, requests: int) -> dict[str, Any]:
    """A generator process's cost since ``(cpu0_s, wall0_ns)`` (``process_cpu_s()``, ``perf_counter_ns()``
    at its start): CPU seconds, wall seconds, requests answered and CPU µs per request."""
    cpu_s = process_cpu_s() - cpu0_s
    wall_s = (time.perf_counter_ns() - wall0_ns) / 1e9 if wall0_ns else 0.0
    return {
        "cpu_s": round(cpu_s, 4),
        "wall_s": round(wall_s, 4),
        "requests": requests,
        "cpu_us_per_request": round(cpu_s * 1e6 / requests, 1) if requests else None,
    }


def base_config(
    options: LoadOptions, scenario: str, host: str | None, scenario_opts: dict[str, Any], *, engine: str
) -> dict[str, Any]:
    """The record's config that both engines write (each adds its own generator details)."""
    o = options
    return {
        "scenario": scenario,
        "model": o.model or None,
        "engine": engine,
        "load_model": o.load_model,
        "loop": "open-loop" if o.open_loop else "closed-loop",
        "rate_rps": o.rate_rps if o.open_loop else None,
        "warmup_s": o.warmup_s,
        "max_lag_s": o.max_lag_s if o.open_loop else None,
        "max_requests": o.max_requests or None,
        "seed": o.seed,
        "host": host,
        "scenario_options": scenario_opts,
        "request_headers": sorted(o.headers) or None,  # names only: values may be secrets
        "generator": {
            "engine": engine,
            "generator_bound_percent": o.generator_bound_percent,
            "shares_machine_with_target": is_loopback(host),
        },
    }


def new_record(config: dict[str, Any], env: dict[str, Any], options: LoadOptions) -> RunRecord:
    """A load record for ``config``: the target's /health (framework, model, format when it says them; a
    warning when it does not answer), then ``options.extra_config`` on top."""
    host = config.get("host")
    health = fetch_health(host, headers=options.headers)
    if health is not None:
        config["target_health"] = health
        for k in ("framework", "model", "format"):
            if health.get(k) and not config.get(k):
                config[k] = health[k]
    elif config.get("scenario") == "oip":  # an OIP server (e.g. MLServer) need not have /health: its metadata
        meta = fetch_health(host, headers=options.headers, path="/v2")
        if meta is not None:
            config["target_health"] = health = {"oip_server": meta}
    config.update(options.extra_config)
    rec = RunRecord(kind="load", config=config, env=env)
    if health is None:
        rec.add_warning("target-health-unavailable", f"GET {host}/health failed")
    return rec


def offered_rps(merged: Measurement, options: LoadOptions) -> dict[str, float]:
    """Open loop: the real offered rate, the sum of the rate shares of the generators that reported (one
    process: --rate), split among the endpoints by their share of the window's slots."""
    if not options.open_loop:
        return {}
    total_rate = sum(float(g.get("rate_rps") or 0.0) for g in merged.generators if not g.get("refused"))
    slots = {n: ep.count + sum(ep.errors.values()) + ep.in_flight for n, ep in merged.endpoints.items()}
    total = sum(slots.values())
    if not total or not total_rate:
        return {}
    return {n: round(total_rate * k / total, 3) for n, k in slots.items()}


def busy_percent(gen: dict[str, Any]) -> float | None:
    """A generator process's busy share of one core over its run (100 = one core): its CPU time over its
    wall time when it reported them (the lean engine, and Locust processes since this change), else the mean
    of its sampled CPU% (older records)."""
    cpu_s, wall_s = gen.get("cpu_s"), gen.get("wall_s")
    if isinstance(cpu_s, int | float) and isinstance(wall_s, int | float) and wall_s > 0:
        return 100.0 * cpu_s / wall_s
    mean = gen.get("cpu_percent_mean")
    return float(mean) if isinstance(mean, int | float) else None


def generator_headroom(merged: Measurement) -> dict[str, Any] | None:
    """The generator's own cost in this run: CPU µs per completed request (all its processes together) and
    the busiest process's share of a core. None when no process reported its CPU time."""
    gens = [g for g in merged.generators if isinstance(g.get("cpu_s"), int | float)]
    if not gens:
        return None
    cpu_s = sum(float(g["cpu_s"]) for g in gens)
    requests = sum(int(g.get("requests") or 0) for g in gens)
    busy = [b for b in (busy_percent(g) for g in gens) if b is not None]
    return {
        "processes": len(gens),
        "cpu_s": round(cpu_s, 4),
        "requests": requests,
        "cpu_us_per_request": round(cpu_s * 1e6 / requests, 1) if requests else None,
        "busy_percent_max": round(max(busy), 1) if busy else None,
    }


def fill_record(
    rec: RunRecord,
    merged: Measurement,
    options: LoadOptions,
    status: str,
    error: str | None = None,
) -> None:
    """Put a (merged) measurement into the record: series, generators, pacing, headroom, warnings, status."""
    rec.series = merged.to_series(offered_rps(merged, options))
    rec.config["generators"] = merged.generators
    rec.config["pacing"] = merged.pacing or None
    rec.config["generator_headroom"] = generator_headroom(merged)
    rec.warnings = [w for w in rec.warnings if w.code in KEPT_WARNINGS]
    add_warnings(rec, merged, options)
    rec.status = status
    rec.error = error
    rec.ended_utc = None if status == "running" else utc_now()


def add_warnings(rec: RunRecord, merged: Measurement, options: LoadOptions) -> None:
    """The record's warnings from what was measured (each generator's busy share, unsent slots, late sends,
    few samples, errors)."""
    bound = options.generator_bound_percent
    for gen in merged.generators:
        mean = busy_percent(gen)
        if mean is not None and mean > bound:
            rec.add_warning(
                "generator-bound",
                f"load generator process {gen.get('pid')} ({gen.get('role')}) used {mean:.0f}% of a core "
                f"on average (> {bound:g}%): latency and throughput may be the "
                "generator's, not the target's",
                hint="give the generator more cores (--processes with --generator-cpus), use the lean "
                "engine (--engine lean), or pin the generator and the target to separate cores",
            )
    for gen in merged.generators:
        if gen.get("refused"):
            rec.add_warning(
                "worker-refused",
                f"worker process {gen.get('pid')} joined after the test started (no share of the rate "
                "was assigned to it): it sent nothing; the other workers' shares were kept",
                hint="start every worker before the test starts (--expect-workers)",
            )
    pacing = merged.pacing or {}
    errors: Counter[str] = Counter()
    for s in rec.series:
        errors.update(s.errors)
    if errors[DROPPED]:
        rec.add_warning(
            "dropped-sends",
            f"{errors[DROPPED]} scheduled sends in the window were more than "
            f"{options.max_lag_s:g} s late and were dropped (never sent): counted as errors of "
            f"kind '{DROPPED}'",
            hint="more users (senders) or a lower --rate",
        )
    if errors[NOT_SENT]:
        rec.add_warning(
            "not-sent",
            f"{errors[NOT_SENT]} sends scheduled in the window were still waiting for a free sender when "
            f"it closed: counted as errors of kind '{NOT_SENT}'",
            hint="more users (senders) or a lower --rate",
        )
    if errors[UNFINISHED]:
        rec.add_warning(
            "unfinished",
            f"{errors[UNFINISHED]} requests sent in the window had no answer {DRAIN_TIMEOUT_S:g} s after "
            f"it closed: counted as errors of kind '{UNFINISHED}'",
        )
    if pacing.get("late_sends") and pacing.get("sent"):
        share = pacing["late_sends"] / pacing["sent"]
        if share > 0.05:
            rec.add_warning(
                "late-sends",
                f"{share:.0%} of sends left more than 1 ms after their intended time (late pick-up or "
                "overslept wait); corrected latency includes it",
                hint="if the target is not saturated, add users so a sender is free at each slot",
            )
    for s in rec.series:
        few = few_samples_percentiles(s.count)
        if few:
            rec.add_warning(
                "few-samples",
                f"{s.count} samples cannot resolve {', '.join(few)} (the value is at or near the max)",
                hint="run longer or at a higher rate",
                series=s.name,
            )
        if s.count == 0 and (s.duration_s or 0) == 0:
            rec.add_warning(
                "no-window", "the run ended before the warm-up did: nothing measured", series=s.name
            )
        if s.error_ratio > 0.01:
            what = "of requests failed"
            if s.scheduled is not None:
                what = "of the window's scheduled sends failed or got no answer"
            rec.add_warning("errors", f"{s.error_ratio:.1%} {what}: {s.errors}", series=s.name)
