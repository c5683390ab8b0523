"""The load generators' own cost: CPU per request of the lean engine (with deferred reads, its default, and
with answers read as they arrive: ``lean-on-arrival``), the Locust path and wrk, driving the
same pinned target (FastAPI + uvicorn serving iris-mlp ONNX on CPU 1, the generator on CPU 0), open loop at
fixed rates and closed loop, rounds interleaved.

    python -m deploybench.bench.overhead --engines [--rates 2000,4000] [--duration 10] [--rounds 3]

Each lean / Locust run is a real ``deploybench load`` run (``deploybench.loadtests.runner.run_load``): the
generator's CPU per request and busy share come from its record (``config.generator_headroom``: user + system
CPU time of every generator process over its run, divided by the requests it sent). wrk (closed loop only: it
has no open loop; when on PATH) is measured the same way, from its child-process CPU time (``getrusage``).
Nothing is printed here: the rows are returned and rendered by ``deploybench.bench.overhead.report``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploybench.bench.overhead.loadgen import Request, run_wrk, wrk_path
from deploybench.env import capture_env
from deploybench.loadtests.lean import READS_ENV
from deploybench.loadtests.runner import run_load
from deploybench.record import RunRecord
from deploybench.targets.serve import ServerProcess, TargetConfig

SERVER_CPUS = [1]
GENERATOR_CPUS = [0]
IRIS_BODY = b'{"features": [5.1, 3.5, 1.4, 0.2]}'


@dataclass
class EngineOptions:
    rates_rps: tuple[float, ...] = (2000.0,)
    duration_s: float = 10.0
    warmup_s: float = 2.0
    rounds: int = 3
    closed_users: int = 16
    engines: tuple[str, ...] = ("lean", "lean-on-arrival", "locust")
    wrk: bool = True
    zoo_dir: str | None = None
    out_dir: Path = field(default_factory=lambda: Path("results/overhead/engines"))


# a row's engine name -> (the run's --engine, DEPLOYBENCH_LEAN_READS for it)
VARIANTS = {
    "lean": ("lean", "deferred"),
    "lean-on-arrival": ("lean", "on-arrival"),
    "locust": ("locust", None),
}


@contextlib.contextmanager
def lean_reads(value: str | None) -> Iterator[None]:
    """``DEPLOYBENCH_LEAN_READS`` set to ``value`` for one run (the generator processes inherit it)."""
    before = os.environ.get(READS_ENV)
    if value is not None:
        os.environ[READS_ENV] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(READS_ENV, None)
        else:
            os.environ[READS_ENV] = before


def _row(engine: str, loop: str, rate: float | None, rec: RunRecord) -> dict[str, Any]:
    head = rec.config.get("generator_headroom") or {}
    s = rec.series[0] if rec.series else None
    lat = s.latency_us if s else {}
    unc = (s.uncorrected_latency_us or {}) if s else {}
    pacing = rec.config.get("pacing") or {}
    sent = pacing.get("sent") or 0
    return {
        "engine": engine,
        "loop": loop,
        "rate_rps": rate,
        "throughput_rps": s.throughput_rps if s else None,
        "errors": sum(s.errors.values()) if s else None,
        "generator_cpu_us_per_request": head.get("cpu_us_per_request"),
        "generator_busy_percent": head.get("busy_percent_max"),
        "p50_us": lat.get("p50"),
        "p99_us": lat.get("p99"),
        "uncorrected_p99_us": unc.get("p99"),
        "late_sends_share": round(pacing.get("late_sends", 0) / sent, 4) if sent else None,
        "warnings": sorted({w.code for w in rec.warnings}),
        "status": rec.status,
        "record": rec.config.get("record_path"),
    }


def _wrk_row(url: str, users: int, duration_s: float) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_wrk(url, Request("/predict", IRIS_BODY, "application/json"), connections=users,
                     duration_s=duration_s, cpus=GENERATOR_CPUS)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "engine": "wrk",
        "loop": "closed",
        "rate_rps": None,
        "throughput_rps": round(result.throughput_rps, 1),
        "errors": result.errors,
        "generator_cpu_us_per_request": round(cpu_s * 1e6 / result.requests, 1) if result.requests else None,
        "generator_busy_percent": round(100 * cpu_s / result.duration_s, 1) if result.duration_s else None,
        "p50_us": result.p50_us,
        "p99_us": result.p99_us,
        "uncorrected_p99_us": None,
        "late_sends_share": None,
        "warnings": [],
        "status": "complete",
        "record": None,
    }


def run_engines(
    opts: EngineOptions, on_row: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Every (round, generator, load) on one target process: rows, in the order they ran."""
    config = TargetConfig(framework="fastapi", server="uvicorn", model="iris-mlp", format="onnx",
                          cpus=list(SERVER_CPUS), zoo_dir=opts.zoo_dir)  # fmt: skip
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    server = ServerProcess(config, log_path=opts.out_dir / "server.log")
    use_wrk = opts.wrk and wrk_path() is not None
    loads: Sequence[tuple[str, float | None]] = [*(("open", r) for r in opts.rates_rps), ("closed", None)]
    try:
        server.start()
        for rnd in range(opts.rounds):
            order = list(opts.engines) if rnd % 2 == 0 else list(reversed(opts.engines))
            for loop, rate in loads:
                for engine in order:
                    run_engine, reads = VARIANTS[engine]
                    with lean_reads(reads):
                        rec = run_load(
                            server.url, "tabular", duration_s=opts.duration_s, warmup_s=opts.warmup_s,
                            users=opts.closed_users if rate is None else None, rate_rps=rate,
                            load_model="closed" if rate is None else "constant",
                            generator_cpus=GENERATOR_CPUS, engine=run_engine,
                            results_dir=opts.out_dir / "records",
                        )  # fmt: skip
                    row = {"round": rnd + 1, **_row(engine, loop, rate, rec)}
                    rows.append(row)
                    if on_row is not None:
                        on_row(row)
            if use_wrk:
                row = {"round": rnd + 1, **_wrk_row(server.url, opts.closed_users, opts.duration_s)}
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    finally:
        server.stop()
        server.cleanup()
    return {
        "kind": "generator-cost",
        "target": "fastapi + uvicorn, iris-mlp onnx, CPU 1",
        "generator_cpus": GENERATOR_CPUS,
        "duration_s": opts.duration_s,
        "warmup_s": opts.warmup_s,
        "closed_users": opts.closed_users,
        "rounds": opts.rounds,
        "wrk": use_wrk,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "env": capture_env(),
        "pid": os.getpid(),
        "rows": rows,
    }
