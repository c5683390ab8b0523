"""The floor under a paced generator on this machine: a minimal open-loop client in C (``paced.c``, built
here with ``cc -O2``) against the lean engine, both on CPU 0, the target on CPU 1, at the same constant
rates, the order flipped every round.

- ``--fastapi-rates``: FastAPI + uvicorn serving iris-mlp ONNX. The C client reads answers at its next
  wake-up (as the lean engine does by default), so each request costs one wake-up, its send and its read:
  what is left for Python above the kernel at that rate. A third client, a minimal Python loop
  (``minimal_python``: the same design on ``select.epoll``, a timerfd and httptools, no bookkeeping), shows
  what the interpreter alone adds.
- ``--flask-rates``: Flask + gunicorn-sync serving iris-mlp ONNX (it closes every connection and waits for
  the client's close). Both clients read each answer as it arrives and close at once. With wrk's closed loop
  (``--wrk-connections``) alongside: whether any open-loop client holds a corrected P99 under ``--slo-ms``
  at the rates wrk sustains.

Per run: answered requests/s, the client's CPU µs per answered request (the C client: its own
``getrusage`` over the window; lean: the record's ``generator_headroom``), corrected P50/P99, late sends
(more than 1 ms after the slot), errors; for every run CPU 0's and CPU 1's busy share from /proc/stat.

    .nox/tests/bin/python -m tests.measurements.paced_floor [--fastapi-rates 2000,4000] [--python]
        [--flask-rates 2000,2200,2400] [--rounds 3] [--duration 8] > floor.json

Needs a C compiler (``cc``); wrk is optional (``apt-get install wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httptools

from deploybench.bench.overhead.loadgen import Request, run_wrk, wrk_path
from deploybench.loadtests.lean import build_plan
from deploybench.targets.serve import ServerProcess, TargetConfig
from tests.measurements.cpu import busy_since, cpu_ticks
from tests.measurements.lean_api import GENERATOR_CPU, lean_api_row

BODY = b'{"features": [5.1, 3.5, 1.4, 0.2]}'
SERVER_CPU, CLIENT_CPU = 1, GENERATOR_CPU
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
            "late_share": round(late / sent, 4) if sent else None, **busy_since(before)}  # fmt: skip


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Answer:
    def __init__(self) -> None:
        self.done = False
        self.parser = httptools.HttpResponseParser(self)

    def on_message_complete(self) -> None:
        self.done = True


def minimal_python(url: str, raw: bytes, rate: float, duration_s: float, connections: int) -> dict[str, Any]:
    """The C client's design in Python, in this process (pinned to the client's CPU by the caller): constant
    slots from a repeating timerfd, keep-alive connections, answers read at the next wake-up and parsed by
    httptools; latency by the read's clock. Its CPU per answered request over the window (after warm-up)."""
    parts = urllib.parse.urlsplit(url)
    libc = ctypes.CDLL(None, use_errno=True)
    tfd = libc.timerfd_create(1, os.O_NONBLOCK | os.O_CLOEXEC)  # CLOCK_MONOTONIC = perf_counter_ns here
    period = round(1e9 / rate)
    t0 = time.perf_counter_ns() + 50_000_000
    window_start, end = t0 + round(WARMUP_S * 1e9), t0 + round((WARMUP_S + duration_s) * 1e9)
    spec = _Itimerspec(_Timespec(0, period), _Timespec(*divmod(t0, 1_000_000_000)))
    wake, answers = select.epoll(), select.epoll()
    socks: dict[int, tuple[socket.socket, _Answer]] = {}
    idle: list[int] = []
    intended: dict[int, int] = {}
    latencies: list[int] = []
    try:
        libc.timerfd_settime(tfd, 1, ctypes.byref(spec), None)
        wake.register(tfd, select.EPOLLIN)
        for _ in range(connections):
            s = socket.create_connection((parts.hostname, parts.port))
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks[s.fileno()] = (s, _Answer())
            answers.register(s.fileno(), select.EPOLLIN)
            idle.append(s.fileno())
        nxt, cpu0, counted = 0, None, 0
        while True:
            wake.poll()
            with contextlib.suppress(BlockingIOError):
                os.read(tfd, 8)
            for fd, _ in answers.poll(0):
                s, a = socks[fd]
                a.parser.feed_data(s.recv(65_536))
                if a.done:
                    a.done = False
                    start = intended[fd]
                    if start >= window_start:
                        latencies.append(time.perf_counter_ns() - start)
                    idle.append(fd)
            now = time.perf_counter_ns()
            if cpu0 is None and now >= window_start:
                cpu0, counted = time.process_time(), len(latencies)
            if now >= end:
                break
            while t0 + nxt * period <= now and idle:
                fd = idle.pop()
                intended[fd] = t0 + nxt * period
                nxt += 1
                socks[fd][0].send(raw)
        cpu = time.process_time() - (cpu0 or 0.0)
    finally:
        for s, _ in socks.values():
            s.close()
        wake.close()
        answers.close()
        os.close(tfd)
    n = len(latencies) - counted
    lat = sorted(latencies)
    return {
        "client": "minimal Python", "offered_rps": rate, "answered": len(lat),
        "throughput_rps": len(lat) / duration_s,
        "cpu_us_per_request": round(cpu * 1e6 / n, 1) if n > 0 else None,
        "busy_percent": round(100 * cpu / duration_s, 1),
        "p50_us": lat[len(lat) // 2] // 1000 if lat else None,
        "p99_us": lat[int(len(lat) * 0.99)] // 1000 if lat else None,
    }  # fmt: skip


def run_lean(url: str, tmp: str, rate: float, duration_s: float, connections: int) -> dict[str, Any]:
    row = lean_api_row(url, tmp, BODY, duration_s, rate=rate, users=connections, warmup_s=WARMUP_S)
    return {"client": "lean", **row}


def run_wrk_row(url: str, duration_s: float, connections: int) -> dict[str, Any]:
    before = cpu_ticks()
    r = run_wrk(url, Request("/predict", BODY, "application/json"), connections=connections,
                duration_s=duration_s, cpus=[CLIENT_CPU])  # fmt: skip
    return {"client": f"wrk, closed {connections} connections", "throughput_rps": round(r.throughput_rps, 1),
            "p99_us": r.p99_us, "errors": r.errors, **busy_since(before)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.paced_floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--fastapi-rates", default="2000,4000")
    p.add_argument("--flask-rates", default="")
    p.add_argument("--wrk-connections", default="4,16")
    p.add_argument("--connections", type=int, default=64, help="open-loop connections (both clients)")
    p.add_argument("--python", action="store_true",
                   help="also a minimal Python client (FastAPI rates only), in this process")  # fmt: skip
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
                own_cpus = os.sched_getaffinity(0)
                os.sched_setaffinity(0, [CLIENT_CPU])  # (the target has its own CPU; lean is pinned anyway)
                for rnd in range(args.rounds):
                    if framework == "flask":
                        for c in wrk_conns:
                            rows.append({"round": rnd, "target": framework, **run_wrk_row(srv.url, d, c)})
                    for rate in rates:
                        order = ["c", "lean"] + (["python"] if framework == "fastapi" and args.python else [])
                        for who in order if rnd % 2 == 0 else reversed(order):
                            if who == "python":
                                before = cpu_ticks()
                                row = {**minimal_python(srv.url, raw, rate, d, n), **busy_since(before)}
                            elif who == "c":
                                row = run_c(exe, srv.url, request_file, rate, d, n, reads)
                            else:
                                row = run_lean(srv.url, tmp, rate, d, n)
                            rows.append({"round": rnd, "target": framework, **row})
                os.sched_setaffinity(0, own_cpus)
    json.dump({"args": vars(args), "rows": rows}, sys.stdout, indent=1)
    print()
    return 0


def _payload(tmp: str) -> str:
    path = Path(tmp, "payload.json")
    path.write_bytes(BODY)
    return str(path)


if __name__ == "__main__":
    raise SystemExit(main())
