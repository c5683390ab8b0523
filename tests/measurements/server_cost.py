"""The target's CPU per request under different arrivals, and the generator's: the target alone on CPU 1,
the generator on CPU 0, each core's busy time from /proc/stat over the run.

For each round: wrk closed loop with 1 and 16 connections; then, for each ``--delays`` value, wrk paced by
a Lua ``delay()`` on 64 connections, and the lean engine at the rate wrk achieved (constant arrivals), with
deferred reads (its default) and with answers read as they arrive.

    python -m tests.measurements.server_cost --framework fastapi --server uvicorn --delays 15,11
    python -m tests.measurements.server_cost --framework flask --server gunicorn-sync --delays 32,23

(with the tests' virtualenv: ``.nox/tests/bin/python``)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

from deploybench.bench.overhead.engines import lean_reads
from deploybench.bench.overhead.loadgen import Request, run_wrk
from deploybench.loadtests.runner import run_load
from deploybench.targets.serve import ServerProcess, TargetConfig
from tests.measurements.cpu import busy_share, cpu_ticks

BODY = Request("/predict", b'{"features": [5.1, 3.5, 1.4, 0.2]}', "application/json")
SERVER_CPU, GENERATOR_CPU = 1, 0


def measured(run: Callable[..., tuple[float, float]], *args: Any) -> dict[str, Any]:
    """``run(*args)`` (returns requests/s and P99 µs); both cores' busy µs per request over it."""
    before = cpu_ticks()
    rps, p99_us = run(*args)
    after = cpu_ticks()
    per = 1e6 / rps if rps > 0 else float("nan")
    return {
        "rps": round(rps, 1), "p99_ms": round(p99_us / 1000, 2),
        "server_cpu_us_per_request": round(busy_share(before, after, SERVER_CPU) * per, 1),
        "generator_cpu_us_per_request": round(busy_share(before, after, GENERATOR_CPU) * per, 1),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.server_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--framework", default="fastapi")
    p.add_argument("--server", default="uvicorn")
    p.add_argument("--format", default="onnx")
    p.add_argument("--delays", default="15,11", help="wrk delay() per connection, ms (comma-separated)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=8.0)
    args = p.parse_args(argv)
    d = args.duration
    cfg = TargetConfig(framework=args.framework, server=args.server, model="iris-mlp", format=args.format,
                       cpus=[SERVER_CPU])  # fmt: skip
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="deploybench-cost-") as tmp, ServerProcess(cfg) as srv:
        os.sched_setaffinity(0, [GENERATOR_CPU])  # this process too (after the target got its own CPU)

        def wrk(conns: int, delay_ms: float | None = None) -> tuple[float, float]:
            r = run_wrk(srv.url, BODY, connections=conns, duration_s=d, cpus=[GENERATOR_CPU],
                        delay_ms=delay_ms)  # fmt: skip
            return r.throughput_rps, r.p99_us

        def lean(rate: float, reads: str = "deferred") -> tuple[float, float]:
            with lean_reads(reads):
                rec = run_load(srv.url, "tabular", duration_s=d, warmup_s=0, rate_rps=rate,
                               load_model="constant", engine="lean", generator_cpus=[GENERATOR_CPU],
                               results_dir=tmp)  # fmt: skip
            s = rec.series[0]
            return s.count / d, s.latency_us["p99"]

        wrk(8)  # warm-up
        for rnd in range(args.rounds):
            for conns in (1, 16):
                rows.append({"round": rnd, "load": f"wrk closed {conns}", **measured(wrk, conns)})
            for delay in (float(x) for x in args.delays.split(",")):
                paced = measured(wrk, 64, delay)
                rows.append({"round": rnd, "load": f"wrk paced 64 x delay {delay:g} ms", **paced})
                rows.append({"round": rnd, "load": "lean constant", **measured(lean, paced["rps"])})
                rows.append({"round": rnd, "load": "lean constant, reads on arrival",
                             **measured(lean, paced["rps"], "on-arrival")})  # fmt: skip
    json.dump({"target": vars(args), "rows": rows}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
