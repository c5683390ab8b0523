"""Known-latency servers measured by the lean engine, Locust and wrk: closed loop against a 1 ms and a 20 ms
server (interleaved rounds), and a 1 s stall in an open loop (the corrected P99 against the truth), the
lean engine there with deferred reads (its default) and with answers read as they arrive.

    .nox/tests/bin/python -m tests.measurements.known_latency [--rounds 3] [--parts closed,stall] > known.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from typing import Any

from deploybench.bench.overhead.engines import VARIANTS, lean_reads
from deploybench.bench.overhead.loadgen import Request, run_wrk
from deploybench.loadtests.runner import run_load
from tests.support.known_latency import KnownLatencyServer

BODY = Request("/predict", b'{"features": [5.1, 3.5, 1.4, 0.2]}', "application/json")


def closed_loop(service_ms: float, rounds: int, users: int, out_dir: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with KnownLatencyServer(service_ms=service_ms) as srv:
        for rnd in range(rounds):
            for engine in ("lean", "locust"):
                rec = run_load(srv.url, "tabular", duration_s=10, warmup_s=2, users=users, engine=engine,
                               generator_cpus=[0], results_dir=out_dir)  # fmt: skip
                s = rec.series[0]
                rows.append({
                    "generator": engine, "round": rnd, "p50_us": s.latency_us["p50"],
                    "p99_us": s.latency_us["p99"], "rps": s.throughput_rps,
                    "generator_cpu_us": rec.config["generator_headroom"]["cpu_us_per_request"],
                })  # fmt: skip
            w = run_wrk(srv.url, BODY, connections=users, duration_s=10, cpus=[0])
            rows.append({"generator": "wrk", "round": rnd, "p50_us": w.p50_us, "p99_us": w.p99_us,
                         "rps": w.throughput_rps})  # fmt: skip
    return rows


def stall(runs: int, out_dir: str) -> list[dict[str, Any]]:
    """100 rps constant for 8 s; every request arriving in the 1 s from 3 s after the first POST waits until
    that second ends. The true P99 of the 800 latencies is the 9th longest wait: 911-921 ms by the phase of
    the arrivals against the stall (10 ms apart), plus the 1 ms service."""
    rows: list[dict[str, Any]] = []
    for _ in range(runs):
        for engine in ("lean", "lean-on-arrival", "locust"):
            run_engine, reads = VARIANTS[engine]
            with KnownLatencyServer(service_ms=1.0, stall_at_s=3.0, stall_s=1.0) as srv, lean_reads(reads):
                rec = run_load(srv.url, "tabular", duration_s=8, warmup_s=0, users=200, rate_rps=100.0,
                               load_model="constant", engine=run_engine, generator_cpus=[0],
                               results_dir=out_dir)  # fmt: skip
            s = rec.series[0]
            rows.append({"generator": engine, "count": s.count, "p99_us": s.latency_us["p99"],
                         "uncorrected_p99_us": (s.uncorrected_latency_us or {}).get("p99")})  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.known_latency", description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--parts", default="closed,stall", help="closed, stall or both (default %(default)s)")
    args = p.parse_args(argv)
    parts = set(args.parts.split(","))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="deploybench-known-") as tmp:
        if "closed" in parts:
            out.update({f"{ms:g}ms": closed_loop(ms, args.rounds, args.users, tmp) for ms in (1.0, 20.0)})
        if "stall" in parts:
            out["stall"] = stall(2, tmp)
    json.dump(out, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
