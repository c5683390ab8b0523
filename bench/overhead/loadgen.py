"""Load generators of the overhead benchmark: the same one drives a minimal app and our target in one run.

- ``wrk`` (when on PATH): closed loop, ``-t1 -cC -dD``; a Lua ``done`` hook reports the request count,
  errors and latency percentiles in µs (wrk's own histogram).
- ``lean``: the in-project fallback, the lean load engine (``deploybench.loadtests.lean``: uvloop +
httptools, the
  engine-neutral measurement core), closed loop with C connections, or open loop at a fixed rate (latency
  counted from each request's intended send time, so a stalled server is not hidden by coordinated
  omission). It costs a few times wrk's CPU per request (README "Load engines"); the output says which
  generator ran.

Each run returns a ``LoadResult`` (nothing is printed).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deploybench.env import pinned_argv
from deploybench.loadtests.lean import EngineSpec, raw_request_plan, run_engine
from deploybench.measure import Measurement
from deploybench.stats import summarize_histogram

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

    generator: str  # "wrk" | "lean"
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
    generator_cpu_us_per_request: float | None = None  # the lean generator's own CPU per request

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def default_generator() -> str:
    return "wrk" if wrk_path() else "lean"


# -- wrk -------------------------------------------------------------------------------------------------
def run_wrk(
    url: str,
    request: Request,
    *,
    connections: int,
    duration_s: float,
    cpus: list[int] | None = None,
    delay_ms: float | None = None,
) -> LoadResult:
    """wrk -t1 -cC -dD against ``url + request.path`` (closed loop), on ``cpus`` when given. ``delay_ms``:
    each connection waits that long after an answer before its next request (wrk's Lua ``delay()``), which
    paces the load at about connections / (delay + latency) requests/s."""
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
            f'wrk.headers["Content-Type"] = {json.dumps(request.content_type)}\n'
            + _WRK_DONE
            + (f"function delay() return {float(delay_ms)!r} end\n" if delay_ms else "")
        )
        cmd = [
            wrk, "-t1", f"-c{connections}", f"-d{max(1, round(duration_s))}s", "--timeout", "10s",
            "-s", str(script), url.rstrip("/") + request.path,
        ]  # fmt: skip
        proc = subprocess.run(
            pinned_argv(cmd, cpus, sys.executable), capture_output=True, text=True,
            timeout=duration_s + WRK_TIMEOUT_MARGIN_S, check=False,
        )  # fmt: skip
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


# -- the in-project generator: the lean load engine --------------------------------------------------------
def run_python(
    url: str,
    request: Request,
    *,
    connections: int,
    duration_s: float,
    rate_rps: float | None = None,
) -> LoadResult:
    """The in-project generator, the lean load engine (``deploybench.loadtests.lean``) run in this process:
    closed loop with ``connections``, or open loop at ``rate_rps`` (then ``connections`` senders; a slot waits
    for a free one, latency from its intended send time, unsent slots errors)."""
    hostport = url.split("//", 1)[1].split("/", 1)[0]
    host, _, port_text = hostport.rpartition(":")
    raw = request.raw(host.strip("[]"), int(port_text))
    spec = EngineSpec(
        url=url, scenario="api", load_model="closed" if rate_rps is None else "constant",
        connections=connections, rate_rps=rate_rps or 0.0, duration_s=duration_s,
    )  # fmt: skip
    state = run_engine(spec, raw_request_plan(f"POST {request.path}", raw))
    m = Measurement.merge_wire([state])
    ep = next(iter(m.endpoints.values()), None)
    count = ep.count if ep is not None else 0
    errors = sum(ep.errors.values()) if ep is not None else 0
    lat = summarize_histogram(ep.latency) if ep is not None and count else {}
    nan = float("nan")
    window_s = float(m.duration_s or 0.0)
    gen = m.generators[0] if m.generators else {}
    return LoadResult(
        generator="lean",
        load_model="closed" if rate_rps is None else "open",
        connections=connections,
        duration_s=window_s,
        requests=count + errors,
        errors=errors,
        throughput_rps=count / window_s if window_s > 0 else 0.0,
        p50_us=float(lat.get("p50") or nan),
        p90_us=float(lat.get("p90") or nan),
        p99_us=float(lat.get("p99") or nan),
        max_us=float(lat.get("max") or nan),
        rate_rps=rate_rps,
        generator_cpu_us_per_request=gen.get("cpu_us_per_request"),
    )


def run_load(
    generator: str,
    url: str,
    request: Request,
    *,
    connections: int,
    duration_s: float,
) -> LoadResult:
    """One closed-loop run with ``generator`` ("wrk" | "lean"; "python" is the lean engine's old name)."""
    if generator == "wrk":
        return run_wrk(url, request, connections=connections, duration_s=duration_s)
    return run_python(url, request, connections=connections, duration_s=duration_s)
