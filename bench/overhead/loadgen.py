"""Load generators of the overhead benchmark: the same one drives a minimal app and our target in one run.

- ``wrk`` (when on PATH): closed loop, ``-t1 -cC -dD``; a Lua ``done`` hook reports the request count,
  errors and latency percentiles in µs (wrk's own histogram).
- ``python``: the in-project fallback — an asyncio HTTP/1.1 client over raw keep-alive connections
  (uvloop when installed), closed loop with C connections, or open loop at a fixed rate (latency counted
  from each request's intended send time, so a stalled server is not hidden by coordinated omission). It
  shares the Python interpreter's limits: on a fast model it saturates before the server does, so its
  ratios understate the difference (the output says which generator ran).

Each run returns a ``LoadResult`` (nothing is printed).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deploybench.stats import percentile

WRK_TIMEOUT_MARGIN_S = 30.0
_WRK_JSON = re.compile(r"^DEPLOYBENCH_WRK (\{.*\})$", re.MULTILINE)

# wrk's Lua hook: one JSON line with what the run measured (latency in µs)
_WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'DEPLOYBENCH_WRK {"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,'
    .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


@dataclass(frozen=True)
class Request:
    """One HTTP request the generator repeats: path, body and content type."""

    path: str
    body: bytes
    content_type: str

    def raw(self, host: str, port: int) -> bytes:
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.body)}\r\n\r\n"
        )
        return head.encode("latin-1") + self.body


@dataclass
class LoadResult:
    """One measured run against one server."""

    generator: str  # "wrk" | "python"
    load_model: str  # "closed" | "open"
    connections: int
    duration_s: float
    requests: int
    errors: int  # non-2xx answers + socket errors (+ open loop: slots never answered)
    throughput_rps: float  # successful answers per second
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    rate_rps: float | None = None  # open loop: the offered rate
    # CPU time (user + system) the server's processes spent per request during the run: unlike throughput,
    # hardly moved by other work on a shared machine
    server_cpu_us_per_request: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def default_generator() -> str:
    return "wrk" if wrk_path() else "python"


# -- wrk -------------------------------------------------------------------------------------------------
def run_wrk(url: str, request: Request, *, connections: int, duration_s: float) -> LoadResult:
    """wrk -t1 -cC -dD against ``url + request.path`` (closed loop)."""
    wrk = wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not on PATH")
    with tempfile.TemporaryDirectory(prefix="deploybench-wrk-") as tmp:
        body_path = Path(tmp) / "body.bin"
        body_path.write_bytes(request.body)
        script = Path(tmp) / "post.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            f'local f = assert(io.open({json.dumps(str(body_path))}, "rb"))\n'
            'wrk.body = f:read("*all")\nf:close()\n'
            f'wrk.headers["Content-Type"] = {json.dumps(request.content_type)}\n' + _WRK_DONE
        )
        cmd = [
            wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s",
            "-s", str(script), url.rstrip("/") + request.path,
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration_s + WRK_TIMEOUT_MARGIN_S, check=False
        )
    m = _WRK_JSON.search(proc.stdout)
    if proc.returncode != 0 or m is None:
        why = proc.stderr.strip() or proc.stdout[-500:]
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {why}")
    d = json.loads(m.group(1))
    elapsed_s = d["duration_us"] / 1e6
    errors = d["status_errors"] + d["socket_errors"]
    return LoadResult(
        generator="wrk",
        load_model="closed",
        connections=connections,
        duration_s=elapsed_s,
        requests=d["requests"],
        errors=errors,
        throughput_rps=max(0, d["requests"] - errors) / elapsed_s if elapsed_s > 0 else 0.0,
        p50_us=float(d["p50_us"]),
        p90_us=float(d["p90_us"]),
        p99_us=float(d["p99_us"]),
        max_us=float(d["max_us"]),
    )


# -- the in-project generator ------------------------------------------------------------------------------
async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length framed); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            break
    if length:
        await reader.readexactly(length)
    return status


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self, raw: bytes) -> int:
        """The status of one request (0: no answer). A kept-alive connection the server closed while it sat
        idle (uvicorn's keep-alive timeout is 5 s; open-loop senders at a low rate idle longer) is reopened
        and the request sent again once, as HTTP clients do; a fresh connection that fails is an error."""
        for _ in range(2):
            fresh = self.writer is None
            if fresh:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.write(raw)
                return await _read_response(self.reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                self.close()
                if fresh:
                    return 0
        return 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _closed(host: str, port: int, raw: bytes, connections: int, duration_s: float) -> tuple:
    lat_ns: list[int] = []
    errors = 0
    stop_ns = time.perf_counter_ns() + round(duration_s * 1e9)

    async def user() -> None:
        nonlocal errors
        conn = _Conn(host, port)
        while time.perf_counter_ns() < stop_ns:
            t0 = time.perf_counter_ns()
            status = await conn.send(raw)
            t1 = time.perf_counter_ns()
            if 200 <= status < 300:
                lat_ns.append(t1 - t0)
            else:
                errors += 1
        conn.close()

    t0 = time.perf_counter_ns()
    await asyncio.gather(*(user() for _ in range(connections)))
    return lat_ns, errors, (time.perf_counter_ns() - t0) / 1e9, 0


async def _open(host: str, port: int, raw: bytes, senders: int, duration_s: float, rate_rps: float) -> tuple:
    lat_ns: list[int] = []
    errors = 0
    n_slots = max(1, round(duration_s * rate_rps))
    interval_ns = 1e9 / rate_rps
    next_slot = 0
    start_ns = time.perf_counter_ns()
    grace_ns = start_ns + round((duration_s + 10.0) * 1e9)  # a slot not answered by then is an error

    async def sender() -> None:
        nonlocal errors, next_slot
        conn = _Conn(host, port)
        while next_slot < n_slots and time.perf_counter_ns() < grace_ns:
            k, next_slot = next_slot, next_slot + 1
            intended_ns = start_ns + round(k * interval_ns)
            wait_ns = intended_ns - time.perf_counter_ns()
            if wait_ns > 0:
                await asyncio.sleep(wait_ns / 1e9)
            status = await conn.send(raw)
            if 200 <= status < 300:
                lat_ns.append(time.perf_counter_ns() - intended_ns)  # from the intended send time
            else:
                errors += 1
        conn.close()

    await asyncio.gather(*(sender() for _ in range(senders)))
    unsent = n_slots - len(lat_ns) - errors
    return lat_ns, errors + unsent, (time.perf_counter_ns() - start_ns) / 1e9, n_slots


def _run_loop(coro: Any) -> Any:
    try:
        import uvloop  # import cost: the faster event loop, only where this generator runs

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def run_python(
    url: str,
    request: Request,
    *,
    connections: int,
    duration_s: float,
    rate_rps: float | None = None,
) -> LoadResult:
    """The in-project generator: closed loop with ``connections``, or open loop at ``rate_rps`` (then
    ``connections`` is the number of concurrent senders, and a slot waits for a free one)."""
    hostport = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port_text = hostport.rpartition(":")
    host, port = host.strip("[]"), int(port_text)
    raw = request.raw(host, port)
    if rate_rps is None:
        lat_ns, errors, elapsed_s, _ = _run_loop(_closed(host, port, raw, connections, duration_s))
    else:
        lat_ns, errors, elapsed_s, _ = _run_loop(_open(host, port, raw, connections, duration_s, rate_rps))
    lat_us = np.asarray(lat_ns, dtype=np.float64) / 1e3
    pct = {p: (percentile(lat_us, p) if lat_us.size else float("nan")) for p in (50, 90, 99)}
    return LoadResult(
        generator="python",
        load_model="closed" if rate_rps is None else "open",
        connections=connections,
        duration_s=elapsed_s,
        requests=len(lat_ns) + errors,
        errors=errors,
        throughput_rps=len(lat_ns) / elapsed_s if elapsed_s > 0 else 0.0,
        p50_us=pct[50],
        p90_us=pct[90],
        p99_us=pct[99],
        max_us=float(lat_us.max()) if lat_us.size else float("nan"),
        rate_rps=rate_rps,
    )


def run_load(
    generator: str,
    url: str,
    request: Request,
    *,
    connections: int,
    duration_s: float,
) -> LoadResult:
    """One closed-loop run with ``generator`` ("wrk" | "python")."""
    if generator == "wrk":
        return run_wrk(url, request, connections=connections, duration_s=duration_s)
    return run_python(url, request, connections=connections, duration_s=duration_s)
