"""The highest closed-loop throughput wrk gets from a pinned target with P99 under an SLO: wrk on CPU 0,
the target on CPU 1, 1..64 connections, ``--rounds`` rounds.

    .nox/tests/bin/python -m tests.measurements.wrk_ceiling --framework flask --server gunicorn-sync
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from deploybench.bench.overhead.loadgen import Request, run_wrk
from deploybench.targets.serve import ServerProcess, TargetConfig

BODY = Request("/predict", b'{"features": [5.1, 3.5, 1.4, 0.2]}', "application/json")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.wrk_ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--framework", default="fastapi")
    p.add_argument("--server", default="uvicorn")
    p.add_argument("--format", default="onnx")
    p.add_argument("--slo-ms", type=float, default=50.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=8.0)
    args = p.parse_args(argv)
    cfg = TargetConfig(framework=args.framework, server=args.server, model="iris-mlp", format=args.format,
                       cpus=[1])  # fmt: skip
    rows: list[dict[str, Any]] = []
    with ServerProcess(cfg) as srv:
        run_wrk(srv.url, BODY, connections=8, duration_s=3, cpus=[0])  # warm-up
        for rnd in range(args.rounds):
            for conns in (1, 2, 4, 8, 16, 32, 64):
                r = run_wrk(srv.url, BODY, connections=conns, duration_s=args.duration, cpus=[0])
                rows.append({"round": rnd, "connections": conns, "rps": round(r.throughput_rps, 1),
                             "p99_ms": r.p99_us / 1000, "errors": r.errors})  # fmt: skip
    ok = [r["rps"] for r in rows if r["p99_ms"] < args.slo_ms and r["errors"] == 0]
    json.dump({"target": vars(args), "max_rps_under_slo": max(ok, default=None), "rows": rows}, sys.stdout,
              indent=1)  # fmt: skip
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
