"""How fast each client closes against a server that waits for the client's close after every answer
(gunicorn-sync's lingering close), and what that costs the server: Flask + gunicorn-sync serving iris-mlp
ONNX on CPU 1, the client on CPU 0, closed loop with 4 connections, rounds interleaved:

- wrk (when on PATH);
- a minimal Python epoll client: it reads until the answer is complete (by its ``Content-Length``), closes,
  connects and sends the next request, with no other parsing and no bookkeeping: a reference for how soon
  Python can close, not a load generator. Run again with a busy wait of ``--delay-us`` before each close;
- the lean engine on its own sockets (its default against such servers since 69808f5);
- the lean engine on asyncio transports (``DEPLOYBENCH_LEAN_READS=on-arrival``, the engine before).

Per run: answered requests/s, each core's busy share and busy µs per request from /proc/stat; for the
minimal client also when each close started, counted from the kernel's receive timestamp of the answer.

    python -m tests.measurements.closing_servers [--rounds 2] [--duration 6]

(with the tests' virtualenv: ``.nox/tests/bin/python``)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import socket
import struct
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np

from deploybench.bench.overhead.engines import lean_reads
from deploybench.bench.overhead.loadgen import Request, run_wrk, wrk_path
from deploybench.loadtests.lean import SO_TIMESTAMPNS, build_plan
from deploybench.loadtests.runner import run_load
from deploybench.targets.serve import ServerProcess, TargetConfig
from tests.measurements.cpu import busy_share, cpu_ticks

BODY = Request("/predict", b'{"features": [5.1, 3.5, 1.4, 0.2]}', "application/json")
SERVER_CPU, CLIENT_CPU = 1, 0
CONNECTIONS = 4
_TIMESPEC = struct.Struct("@qq")
_ANC = socket.CMSG_SPACE(_TIMESPEC.size)
_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*([0-9]+)", re.IGNORECASE)


def _complete(buf: bytes) -> bool:
    """Whether ``buf`` holds a whole answer with a ``Content-Length`` (the targets' answers have one)."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    m = _LENGTH.search(buf, 0, head_end + 2)
    return m is not None and len(buf) - head_end - 4 >= int(m.group(1))


def minimal_client(
    url: str, raw: bytes, connections: int, duration_s: float, delay_us: float = 0.0
) -> dict[str, Any]:
    """Closed loop on ``connections`` fresh sockets: each answer is read to its end, its socket closed (after
    a busy wait of ``delay_us``) and a new one opened with the next request. Returns the answers, errors and
    when each close started, after the kernel's receive timestamp of the answer's last read."""
    parts = urllib.parse.urlsplit(url)
    addr = (parts.hostname or "127.0.0.1", parts.port or 80)
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    bufs: dict[int, bytes] = {}
    delay_ns = round(delay_us * 1000)

    def open_one() -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.connect_ex(addr)
        s.send(raw)
        socks[s.fileno()] = s
        bufs[s.fileno()] = b""
        ep.register(s.fileno(), select.EPOLLIN)

    for _ in range(connections):
        open_one()
    answers = errors = 0
    delays_ns: list[int] = []
    offset_ns = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.perf_counter_ns()
    start = time.perf_counter()
    end = start + duration_s
    try:
        while time.perf_counter() < end:
            for fd, _events in ep.poll(0.1):
                s = socks[fd]
                data, anc, _flags, _addr = s.recvmsg(65_536, _ANC)
                buf = bufs[fd] + data
                if data and not _complete(buf):
                    bufs[fd] = buf
                    continue
                del socks[fd], bufs[fd]
                if delay_ns:
                    until = time.perf_counter_ns() + delay_ns
                    while time.perf_counter_ns() < until:
                        pass
                closing_ns = time.perf_counter_ns()
                s.close()
                if data and buf.startswith(b"HTTP/1.1 200"):
                    answers += 1
                else:
                    errors += 1
                if anc:
                    sec, nsec = _TIMESPEC.unpack_from(anc[-1][2])
                    delays_ns.append(closing_ns - (sec * 1_000_000_000 + nsec - offset_ns))
                open_one()
        elapsed = time.perf_counter() - start
    finally:
        for s in socks.values():
            s.close()
        ep.close()
    us = np.array(delays_ns) / 1000
    return {
        "rps": answers / elapsed, "errors": errors,
        "close_after_answer_us": {f"p{q}": round(float(np.percentile(us, q)), 1) for q in (10, 50, 90)},
    }  # fmt: skip


def measured(run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``run()`` (returns at least ``rps``), with both cores' busy share and busy µs per request over it."""
    before = cpu_ticks()
    out = run()
    after = cpu_ticks()
    rps = out.pop("rps")
    server, client = busy_share(before, after, SERVER_CPU), busy_share(before, after, CLIENT_CPU)
    per_us = 1e6 / rps if rps > 0 else float("nan")
    return {
        "rps": round(rps, 1), "server_busy_percent": round(100 * server, 1),
        "server_cpu_us_per_request": round(server * per_us, 1),
        "client_cpu_us_per_request": round(client * per_us, 1), **out,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.measurements.closing_servers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--duration", type=float, default=6.0)
    p.add_argument(
        "--delay-us", type=float, default=12.0, help="the minimal client's busy wait before a close"
    )
    args = p.parse_args(argv)
    d = args.duration
    cfg = TargetConfig(framework="flask", server="gunicorn-sync", model="iris-mlp", format="onnx",
                       cpus=[SERVER_CPU])  # fmt: skip
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="deploybench-closing-") as tmp, ServerProcess(cfg) as srv:
        os.sched_setaffinity(0, [CLIENT_CPU])  # this process too (after the target got its own CPU)
        raw = build_plan("tabular", srv.url).picks[0][1]

        def wrk() -> dict[str, Any]:
            r = run_wrk(srv.url, BODY, connections=CONNECTIONS, duration_s=d, cpus=[CLIENT_CPU])
            return {"rps": r.throughput_rps}

        def lean(reads: str) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                with lean_reads(reads):
                    rec = run_load(srv.url, "tabular", duration_s=d, warmup_s=0.5, users=CONNECTIONS,
                                   engine="lean", generator_cpus=[CLIENT_CPU], results_dir=tmp)  # fmt: skip
                s = rec.series[0]
                return {"rps": s.count / d, "errors": sum(s.errors.values())}

            return run

        clients: dict[str, Callable[[], dict[str, Any]]] = {
            "minimal epoll client": lambda: minimal_client(srv.url, raw, CONNECTIONS, d),
            f"minimal epoll client, +{args.delay_us:g} µs before each close": lambda: minimal_client(
                srv.url, raw, CONNECTIONS, d, args.delay_us
            ),
            "lean, own sockets": lean("deferred"),
            "lean, transports": lean("on-arrival"),
        }
        if wrk_path() is not None:
            clients = {"wrk": wrk, **clients}
        minimal_client(srv.url, raw, CONNECTIONS, 1.0)  # warm-up
        for rnd in range(args.rounds):
            names = list(clients) if rnd % 2 == 0 else list(reversed(clients))
            for name in names:
                rows.append({"round": rnd, "client": name, **measured(clients[name])})
    json.dump({"connections": CONNECTIONS, "duration_s": d, "rows": rows}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
