"""Exact per-endpoint load measurement: HdrHistograms in µs, errors by kind, Server-Timing components.

Pure aggregation code (no Locust): ``Measurement.add(...)`` per request, ``to_wire()`` to ship
the state from a Locust worker to the master, ``merge_wire()`` to pool workers (histograms are added,
percentiles are never averaged), ``to_series()`` for the RunRecord.

Which requests count: a request belongs to the measured window when its *intended* send time (open loop) or
actual send time (closed loop) is at or after the window start (test start + warm-up). Earlier requests are
counted as warm-up and kept out of the histograms.
"""

from __future__ import annotations

import errno
import re
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram

from deploybench.record import Series
from deploybench.stats import (
    decode_histogram,
    encode_histogram,
    merge_histograms,
    new_histogram,
    record_us,
    summarize_histogram,
)

_TIMING_RE = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:;(.*))?$")
_DUR_RE = re.compile(r"(?:^|;)\s*dur\s*=\s*\"?([0-9]+(?:\.[0-9]*)?)\"?")


def parse_server_timing(header: str | None) -> dict[str, int]:
    """``"decode;dur=0.12, infer;dur=4.5"`` -> ``{"decode": 120, "infer": 4500}`` (integer µs).

    Entries without a parsable ``dur`` are ignored; a malformed header gives an empty dict.
    """
    out: dict[str, int] = {}
    if not header:
        return out
    for part in header.split(","):
        m = _TIMING_RE.match(part)
        if not m or not m.group(2):
            continue
        d = _DUR_RE.search(m.group(2))
        if d:
            out[m.group(1)] = round(float(d.group(1)) * 1000)
    return out


def error_kind(exception: BaseException | None, status_code: int | None) -> str | None:
    """Classify a failed request: ``http-<code>``, ``connection-refused``, ``connection-reset``, ``timeout``,
    or ``error-<exceptionname>``. None for a success."""
    if exception is None:
        return None
    if status_code and status_code >= 400:
        return f"http-{status_code}"
    if isinstance(exception, ConnectionRefusedError):
        return "connection-refused"
    if isinstance(exception, ConnectionResetError | BrokenPipeError):
        return "connection-reset"
    if isinstance(exception, TimeoutError | socket.timeout):
        return "timeout"
    if isinstance(exception, OSError) and exception.errno in (errno.ECONNREFUSED,):
        return "connection-refused"
    name = type(exception).__name__.lower()
    if "timeout" in name:
        return "timeout"
    return f"error-{name}"


CONNECTION_KINDS = ("connection-refused", "connection-reset", "timeout")


@dataclass
class EndpointStats:
    latency: HdrHistogram = field(default_factory=new_histogram)  # corrected (open loop) or only (closed)
    uncorrected: HdrHistogram | None = None  # open loop only: from the actual send
    count: int = 0
    errors: Counter = field(default_factory=Counter)
    server_timing: dict[str, HdrHistogram] = field(default_factory=dict)
    warmup_count: int = 0
    warmup_errors: int = 0
    after_window_count: int = 0  # sent after the window closed (the generator was stopping)

    def to_wire(self) -> dict[str, Any]:
        return {
            "latency": encode_histogram(self.latency),
            "uncorrected": encode_histogram(self.uncorrected) if self.uncorrected is not None else None,
            "count": self.count,
            "errors": dict(self.errors),
            "server_timing": {k: encode_histogram(h) for k, h in self.server_timing.items()},
            "warmup_count": self.warmup_count,
            "warmup_errors": self.warmup_errors,
            "after_window_count": self.after_window_count,
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> EndpointStats:
        return cls(
            latency=decode_histogram(d["latency"]),
            uncorrected=decode_histogram(d["uncorrected"]) if d.get("uncorrected") else None,
            count=int(d["count"]),
            errors=Counter(d.get("errors", {})),
            server_timing={k: decode_histogram(v) for k, v in d.get("server_timing", {}).items()},
            warmup_count=int(d.get("warmup_count", 0)),
            warmup_errors=int(d.get("warmup_errors", 0)),
            after_window_count=int(d.get("after_window_count", 0)),
        )


@dataclass
class Measurement:
    """One load generator's measurement of one test (or several merged)."""

    open_loop: bool
    window_start_ns: int  # perf_counter_ns of the window start (test start + warm-up), this process only
    window_end_ns: int | None = None
    endpoints: dict[str, EndpointStats] = field(default_factory=dict)
    pacing: dict[str, int] = field(default_factory=dict)  # ArrivalSchedule.counters(), summed on merge
    # set on merged measurements (from per-generator windows; perf_counter clocks differ across processes)
    duration_s: float | None = None
    throughput_rps: dict[str, float] | None = None
    generators: list[dict[str, Any]] = field(default_factory=list)

    def endpoint(self, name: str) -> EndpointStats:
        ep = self.endpoints.get(name)
        if ep is None:
            ep = self.endpoints[name] = EndpointStats(uncorrected=new_histogram() if self.open_loop else None)
        return ep

    def add(
        self,
        name: str,
        *,
        start_ns: int,
        latency_us: int,
        send_delay_us: int = 0,
        error: str | None = None,
        server_timing_us: dict[str, int] | None = None,
    ) -> None:
        """Record one finished request. ``latency_us`` is from the actual send; ``send_delay_us`` is how late
        the send was against its intended time (open loop), so the corrected latency is their sum.
        ``start_ns`` (intended or actual send) decides warm-up vs window."""
        ep = self.endpoint(name)
        if start_ns < self.window_start_ns:
            ep.warmup_count += 1
            ep.warmup_errors += error is not None
            return
        if self.window_end_ns is not None and start_ns >= self.window_end_ns:
            ep.after_window_count += 1
            return
        if error is not None:
            ep.errors[error] += 1
            return
        ep.count += 1
        record_us(ep.latency, latency_us + max(0, send_delay_us))
        if ep.uncorrected is not None:
            record_us(ep.uncorrected, latency_us)
        for comp, us in (server_timing_us or {}).items():
            h = ep.server_timing.get(comp)
            if h is None:
                h = ep.server_timing[comp] = new_histogram()
            record_us(h, us)

    def window_s(self, now_ns: int) -> float:
        end = self.window_end_ns if self.window_end_ns is not None else now_ns
        return max(0.0, (end - self.window_start_ns) / 1e9)

    def close(self, now_ns: int) -> None:
        if self.window_end_ns is None:
            self.window_end_ns = now_ns

    # -- shipping between Locust processes ------------------------------------------------------------
    def to_wire(self, now_ns: int, generator: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON-able snapshot; the window length is computed here, on the generator's own clock."""
        return {
            "open_loop": self.open_loop,
            "window_s": self.window_s(now_ns),
            "closed": self.window_end_ns is not None,
            "endpoints": {k: v.to_wire() for k, v in self.endpoints.items()},
            "pacing": dict(self.pacing),
            "generator": generator or {},
        }

    @staticmethod
    def merge_wire(states: list[dict[str, Any]]) -> Measurement:
        """Pool generator snapshots: histograms added, counts summed; throughput = sum of per-generator
        rates (each over its own window); duration = longest window."""
        open_loop = any(s["open_loop"] for s in states)
        out = Measurement(open_loop=open_loop, window_start_ns=0)
        out.throughput_rps = {}
        durations = [float(s["window_s"]) for s in states]
        out.duration_s = max(durations) if durations else 0.0
        pacing: Counter = Counter()
        for s, window_s in zip(states, durations, strict=True):
            pacing.update(s.get("pacing", {}))
            out.generators.append({**s.get("generator", {}), "window_s": round(window_s, 6)})
            for name, wire in s["endpoints"].items():
                part = EndpointStats.from_wire(wire)
                ep = out.endpoint(name)
                ep.latency = merge_histograms([ep.latency, part.latency])
                if part.uncorrected is not None:
                    ep.uncorrected = merge_histograms([ep.uncorrected or new_histogram(), part.uncorrected])
                ep.count += part.count
                ep.errors.update(part.errors)
                ep.warmup_count += part.warmup_count
                ep.warmup_errors += part.warmup_errors
                ep.after_window_count += part.after_window_count
                for comp, h in part.server_timing.items():
                    ep.server_timing[comp] = merge_histograms(
                        [ep.server_timing.get(comp, new_histogram()), h]
                    )
                if window_s > 0:
                    out.throughput_rps[name] = out.throughput_rps.get(name, 0.0) + part.count / window_s
        out.pacing = dict(pacing)
        # Max lag is a max, not a sum.
        if "max_send_lag_us" in out.pacing:
            out.pacing["max_send_lag_us"] = max(
                (int(s.get("pacing", {}).get("max_send_lag_us", 0)) for s in states), default=0
            )
        return out

    def to_series(self, offered_rps: dict[str, float] | None = None) -> list[Series]:
        """One Series per endpoint (sorted by name). Call on a merged measurement."""
        series = []
        tput = self.throughput_rps
        for name in sorted(self.endpoints):
            ep = self.endpoints[name]
            unc = ep.uncorrected
            extra: dict[str, Any] = {
                "warmup_count": ep.warmup_count,
                "warmup_errors": ep.warmup_errors,
                "after_window_count": ep.after_window_count,
                "server_timing_histograms": {k: encode_histogram(h) for k, h in ep.server_timing.items()},
            }
            series.append(
                Series(
                    name=name,
                    count=ep.count,
                    latency_us=summarize_histogram(ep.latency),
                    errors=dict(sorted(ep.errors.items())),
                    duration_s=round(self.duration_s, 6) if self.duration_s is not None else None,
                    throughput_rps=round(tput.get(name, 0.0), 3) if tput is not None else None,
                    offered_rps=(offered_rps or {}).get(name),
                    uncorrected_latency_us=summarize_histogram(unc) if unc is not None else None,
                    server_timing_us=(
                        {k: summarize_histogram(h) for k, h in sorted(ep.server_timing.items())} or None
                    ),
                    histogram=encode_histogram(ep.latency),
                    uncorrected_histogram=encode_histogram(unc) if unc is not None else None,
                    extra=extra,
                )
            )
        return series
