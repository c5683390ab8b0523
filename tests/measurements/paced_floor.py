"""The floor under a paced generator on this machine: a minimal open-loop client in C (``paced.c``, built
here with ``cc -O2``) against the lean engine, both on CPU 0, the target on CPU 1, at the same constant
rates, the order flipped every round.

- ``--fastapi-rates``: FastAPI + uvicorn serving iris-mlp ONNX. The C client reads answers at its next
  wake-up (as the lean engine does by default), so each request costs one wake-up, its send and its read:
  what is left for Python above the kernel at that rate.
- ``--flask-rates``: Flask + gunicorn-sync serving iris-mlp ONNX (it closes every connection and waits for
  the client's close). Both clients read each answer as it arrives and close at once. With wrk's closed loop
  (``--wrk-connections``) alongside: whether any open-loop client holds a corrected P99 under ``--slo-ms``
  at the rates wrk sustains.

Per run: answered requests/s, the client's CPU µs per answered request (the C client: its own
``getrusage`` over the window; lean: the record's ``generator_headroom``), corrected P50/P99, late sends
(more than 1 ms after the slot), errors; for every run CPU 0's and CPU 1's busy share from /proc/stat.

    .nox/tests/bin/python -m tests.measurements.paced_floor [--fastapi-rates 2000,4000]
        [--flask-rates 2300,2450,2600] [--rounds 3] [--duration 8] > floor.json

Needs a C compiler (``cc``); wrk is optional (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from deploybench.bench.overhead.loadgen import Request, run_wrk, wrk_path
from deploybench.loadtests.lean import build_plan
from deploybench.loadtests.runner import run_load
from deploybench.targets.serve import ServerProcess, TargetConfig
from tests.measurements.cpu import busy_share, cpu_ticks

BODY = b'{"features": [5.1, 3.5, 1.4, 0.2]}'
SERVER_CPU, CLIENT_CPU = 1, 0
WARMUP_S = 1.0
SOURCE = Path(__file__).with_name("paced.c")


def build(tmp: str) -> str:
    """``paced.c`` compiled into ``tmp``."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("needs a C compiler (cc) on PATH")
    exe = str(Path(tmp, "paced"))
    subprocess.run([cc, "-O2", "-o", exe, str(SOURCE)], check=True)
    return exe


def _busy(before: dict[int, tuple[int, int]]) -> dict[str, float]:
    after = cpu_ticks()
    return {f"cpu{c}_busy": round(busy_share(before, after, c), 3) for c in (CLIENT_CPU, SERVER_CPU)}


def run_c(exe: str, url: str, request_file: str, rate: float, duration_s: float, connections: int,
          reads: str) -> dict[str, Any]:  # fmt: skip
    parts = urllib.parse.urlsplit(url)
    before = cpu_ticks()
    out = subprocess.run(
        ["taskset", "-c", str(CLIENT_CPU), exe, parts.hostname or "127.0.0.1", str(parts.port), f"{rate:g}",
         f"{duration_s:g}", f"{WARMUP_S:g}", str(connections), reads, request_file],
        check=True, capture_output=True, text=True, timeout=duration_s + WARMUP_S + 30,
    ).stdout  # fmt: skip
    row = json.loads(out)
    sent = row.pop("sent")
    late = row.pop("late")
    return {"client": f"C, reads {reads}", "offered_rps": rate, **row,
            "late_share": round(late / sent, 4) if sent else None, **_busy(before)}  # fmt: skip


def run_lean(url: str, tmp: str, rate: float, duration_s: float, connections: int) -> dict[str, Any]:
    options = {"path": "/predict", "method": "POST", "payload": _payload(tmp)}
    before = cpu_ticks()
    rec = run_load(url, "api", duration_s=duration_s, warmup_s=WARMUP_S, rate_rps=rate, users=connections,
                   load_model="constant", generator_cpus=[CLIENT_CPU], results_dir=tmp,
                   scenario_options=options)  # fmt: skip
    busy = _busy(before)
    s = rec.series[0]
    head = rec.config["generator_headroom"] or {}
    pacing = rec.config.get("pacing") or {}
    sent = pacing.get("sent") or 0
    return {
        "client": "lean", "offered_rps": rate, "answered": s.count, "throughput_rps": s.throughput_rps,
        "errors": sum(s.errors.values()), "cpu_us_per_request": head.get("cpu_us_per_request"),
        "busy_percent": head.get("busy_percent_max"), "p50_us": s.latency_us["p50"],
        "p99_us": s.latency_us["p99"],
        "late_share": round(pacing.get("late_sends", 0) / sent, 4) if sent else None,
        "warnings": [w.code for w in rec.warnings], **busy,
    }  # fmt: skip


def run_wrk_row(url: str, duration_s: float, connections: int) -> dict[str, Any]:
    before = cpu_ticks()
    r = run_wrk(url, Request("/predict", BODY, "application/json"), connections=connections,
                duration_s=duration_s, cpus=[CLIENT_CPU])  # fmt: skip
    return {"client": f"wrk, closed {connections} connections", "throughput_rps": round(r.throughput_rps, 1),
            "p99_us": r.p99_us, "errors": r.errors, **_busy(before)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.paced_floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--fastapi-rates", default="2000,4000")
    p.add_argument("--flask-rates", default="")
    p.add_argument("--wrk-connections", default="4,16")
    p.add_argument("--connections", type=int, default=64, help="open-loop connections (both clients)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    args = p.parse_args(argv)
    fastapi_rates = [float(r) for r in args.fastapi_rates.split(",") if r]
    flask_rates = [float(r) for r in args.flask_rates.split(",") if r]
    wrk_conns = [int(c) for c in args.wrk_connections.split(",") if c] if wrk_path() else []
    d, n = args.duration, args.connections
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="deploybench-floor-"))
        exe = build(tmp)
        for framework, server, rates in (("fastapi", "uvicorn", fastapi_rates),
                                         ("flask", "gunicorn-sync", flask_rates)):  # fmt: skip
            if not rates:
                continue
            cfg = TargetConfig(framework=framework, server=server, model="iris-mlp", format="onnx",
                               cpus=[SERVER_CPU])  # fmt: skip
            with ServerProcess(cfg) as srv:
                request_file = str(Path(tmp, f"{framework}.http"))
                options = {"path": "/predict", "method": "POST", "payload": _payload(tmp)}
                raw = build_plan("api", srv.url, options=options).picks[0][1]
                Path(request_file).write_bytes(raw)
                reads = "deferred" if framework == "fastapi" else "arrival"
                run_c(exe, srv.url, request_file, rates[0], 2.0, n, reads)  # warm-up
                for rnd in range(args.rounds):
                    if framework == "flask":
                        for c in wrk_conns:
                            rows.append({"round": rnd, "target": framework, **run_wrk_row(srv.url, d, c)})
                    for rate in rates:
                        pair = ["c", "lean"] if rnd % 2 == 0 else ["lean", "c"]
                        for who in pair:
                            row = (run_c(exe, srv.url, request_file, rate, d, n, reads) if who == "c"
                                   else run_lean(srv.url, tmp, rate, d, n))  # fmt: skip
                            rows.append({"round": rnd, "target": framework, **row})
    json.dump({"args": vars(args), "rows": rows}, sys.stdout, indent=1)
    print()
    return 0


def _payload(tmp: str) -> str:
    path = Path(tmp, "payload.json")
    path.write_bytes(BODY)
    return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
