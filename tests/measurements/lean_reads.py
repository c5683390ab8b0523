"""The lean engine's open loop with deferred reads (its default) against answers read as they arrive: the
generator's CPU per request in alternating pairs of runs (the order flips every pair) at fixed rates,
against FastAPI + uvicorn serving iris-mlp ONNX on CPU 1, the generator on CPU 0.

    .nox/tests/bin/python -m tests.measurements.lean_reads [--rates 2000,4000] [--pairs 10] > reads.json

This VM's speed drifts by tens of percent from minute to minute, so a single pair says little: the summary
counts the pairs in which deferred reads cost less, and gives both medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from typing import Any

from deploybench.bench.overhead.engines import lean_reads
from deploybench.loadtests.runner import run_load
from deploybench.targets.serve import ServerProcess, TargetConfig

MODES = ("deferred", "on-arrival")


def _row(pair: int, rate: float, rec: Any) -> dict[str, Any]:
    s = rec.series[0]
    head = rec.config["generator_headroom"]
    return {
        "pair": pair, "rate_rps": rate, "reads": rec.config["generators"][0]["reads"],
        "cpu_us_per_request": head["cpu_us_per_request"], "busy_percent_max": head["busy_percent_max"],
        "p50_us": s.latency_us["p50"], "p99_us": s.latency_us["p99"], "errors": sum(s.errors.values()),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.lean_reads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rates", default="2000,4000")
    p.add_argument("--pairs", type=int, default=10)
    p.add_argument("--duration", type=float, default=8.0)
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    cfg = TargetConfig(framework="fastapi", server="uvicorn", model="iris-mlp", format="onnx", cpus=[1])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="deploybench-reads-") as tmp, ServerProcess(cfg) as srv:
        for pair in range(args.pairs):
            for rate in rates:
                for mode in MODES if pair % 2 == 0 else reversed(MODES):
                    with lean_reads(mode):
                        rec = run_load(srv.url, "tabular", duration_s=args.duration, warmup_s=1.0,
                                       rate_rps=rate, load_model="constant", generator_cpus=[0],
                                       results_dir=tmp)  # fmt: skip
                    rows.append(_row(pair, rate, rec))
    summary = []
    for rate in rates:
        at = [r for r in rows if r["rate_rps"] == rate]
        by = {m: {r["pair"]: r["cpu_us_per_request"] for r in at if r["reads"] == m} for m in MODES}
        wins = sum(by["deferred"][k] < by["on-arrival"][k] for k in by["deferred"])
        summary.append({
            "rate_rps": rate, "pairs": len(by["deferred"]), "deferred_lower_in": wins,
            **{f"{m}_median_us": statistics.median(by[m].values()) for m in MODES},
            **{f"{m}_range_us": [min(by[m].values()), max(by[m].values())] for m in MODES},
        })  # fmt: skip
    json.dump({"summary": summary, "rows": rows}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
