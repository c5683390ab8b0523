"""How far one lean generator core reaches: the lean engine on CPU 0 against nginx on CPU 1 (a C server that
answers a fixed JSON body at tens of thousands of requests/s on one core, so the generator, not the server,
is the limit), open loop at rising constant rates and closed loop, with wrk (closed loop) alongside.

    .nox/tests/bin/python -m tests.measurements.engine_ceiling
        [--rates 4000,8000,16000,24000,32000,40000,48000] [--closed 16,64] [--rounds 3] [--duration 8]
        [--fastapi-rates 2000,4000,16000] > ceiling.json

Needs ``nginx`` and ``wrk`` on PATH (Debian: ``apt-get install nginx-light wrk``). nginx runs as one
process (``master_process off``), bound to 127.0.0.1 on a free port, from a config in a temporary folder, and
is stopped by its PID. For each run: the generator's CPU per request (its process tree) and its busy share
from the record's ``generator_headroom``, CPU 0's and CPU 1's busy share from /proc/stat (whole call, the
generator's start-up included), answered throughput, P50/P99 (corrected) and the share of late sends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deploybench.bench.overhead.loadgen import Request, run_wrk
from deploybench.procs import answer_time_s
from deploybench.targets.serve import ServerProcess, TargetConfig
from tests.measurements.cpu import busy_since, cpu_ticks
from tests.measurements.lean_api import lean_api_row

ANSWER = '{"predictions": [0]}'
BODY = b'{"features": [5.1, 3.5, 1.4, 0.2]}'
CONF = """daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type application/json; return 200 '{answer}'; }}
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_answering(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        if answer_time_s(url, timeout_s=0.5, path="/predict") is not None:
            return
        time.sleep(0.05)
    raise RuntimeError(f"nginx did not answer at {url} within {timeout_s:g} s")


def _lean(
    url: str, tmp: str, duration_s: float, rate: float | None, users: int | None, target: str = "nginx"
) -> dict[str, Any]:
    row = lean_api_row(url, tmp, BODY, duration_s, rate=rate, users=users)
    load = f"open {rate:g} rps" if rate else f"closed {users} connections"
    return {"engine": "lean", "target": target, "load": load, **row}


def _wrk(url: str, duration_s: float, connections: int) -> dict[str, Any]:
    before = cpu_ticks()
    r = run_wrk(url, Request("/predict", BODY, "application/json"), connections=connections,
                duration_s=duration_s, cpus=[0])  # fmt: skip
    busy = busy_since(before)
    cpu0 = busy["cpu0_busy"]
    return {
        "engine": "wrk", "target": "nginx", "load": f"closed {connections} connections", "offered_rps": None,
        "throughput_rps": round(r.throughput_rps, 1),
        "cpu_us_per_request": round(cpu0 * 1e6 / r.throughput_rps, 1) if r.throughput_rps else None,
        **busy, "p99_us": r.p99_us, "errors": r.errors,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.engine_ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rates", default="4000,8000,16000,24000,32000,40000,48000")
    p.add_argument("--closed", default="16,64", help="closed-loop connection counts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--fastapi-rates", default="",
                   help="also these open-loop rates against FastAPI + uvicorn (iris-mlp ONNX, CPU 1), "
                   "alternating with nginx at the same rate (the order flips every round)")  # fmt: skip
    args = p.parse_args(argv)
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None or shutil.which("wrk") is None:
        print("needs nginx and wrk on PATH (apt-get install nginx-light wrk)", file=sys.stderr)
        return 2
    rates = [float(r) for r in args.rates.split(",") if r]
    closed = [int(c) for c in args.closed.split(",") if c]
    fastapi_rates = [float(r) for r in args.fastapi_rates.split(",") if r]
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="deploybench-ceiling-"))
        fastapi = None
        if fastapi_rates:
            cfg = TargetConfig(framework="fastapi", server="uvicorn", model="iris-mlp", format="onnx",
                               cpus=[1])  # fmt: skip
            fastapi = stack.enter_context(ServerProcess(cfg))
        port = _free_port()
        Path(tmp, "nginx.conf").write_text(CONF.format(tmp=tmp, port=port, answer=ANSWER))
        proc = subprocess.Popen(["taskset", "-c", "1", nginx, "-p", tmp, "-c", f"{tmp}/nginx.conf"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_answering(url, proc)
            _wrk(url, 2.0, 16)  # warm-up
            for rnd in range(args.rounds):
                for conns in closed:
                    rows.append({"round": rnd, **_wrk(url, args.duration, conns)})
                    rows.append({"round": rnd, **_lean(url, tmp, args.duration, None, conns)})
                for rate in rates:
                    rows.append({"round": rnd, **_lean(url, tmp, args.duration, rate, None)})
                for rate in fastapi_rates:
                    assert fastapi is not None
                    pair = [(url, "nginx"), (fastapi.url, "fastapi")]
                    for target_url, name in pair if rnd % 2 == 0 else reversed(pair):
                        row = _lean(target_url, tmp, args.duration, rate, None, name)
                        rows.append({"round": rnd, **row})
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    json.dump({"args": vars(args), "rows": rows}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
