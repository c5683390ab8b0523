"""Exact per-endpoint load measurement: HdrHistograms in µs, errors by kind, Server-Timing components.

Pure aggregation code (no Locust): ``Measurement.add(...)`` per request, ``to_wire()`` to ship
the state from a Locust worker to the master, ``merge_wire()`` to pool workers (histograms are added,
percentiles are never averaged), ``to_series()`` for the RunRecord.

Which requests count: a request belongs to the measured window when its *intended* send time (open loop) or
actual send time (closed loop) is at or after the window start (test start + warm-up) and before the window
end. Earlier requests are counted as warm-up and kept out of the histograms.

Open loop, nothing is hidden: every arrival slot scheduled in the window ends as a success, an HTTP /
connection error, or one of three error kinds of its own: ``dropped`` (taken more than ``--max-lag`` late,
never sent), ``not-sent`` (still pending when the window closed) and ``unfinished`` (sent, but no answer
within the drain time after the window closed). So ``count + errors == scheduled`` per endpoint, and the
error ratio includes the sends an overloaded generator could not make.

Blocks: the window is cut into consecutive blocks of ``block_ns`` (1 s) by the same time that decides the
window (intended or actual send); each block keeps its successes, errors (in all and by kind) and latency
histogram, and in open loop the uncorrected histogram too. Blocks of different generators are merged by
index (each generator counts from its own window start). The blocks' histograms add up to the endpoint's
histograms, their counts to its count and errors. Open loop, every slot of a block ends as a success or an
error of some kind, so a block's count + errors is the number of slots it offered (offered vs achieved).
"""

from __future__ import annotations

import errno
import math
import re
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

from deploybench.record import Series
from deploybench.stats import (
    Binned,
    add_binned,
    bin_us,
    decode_histogram,
    encode_histogram,
    merge_histograms,
    new_histogram,
    record_many_us,
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
DROPPED = "dropped"  # open loop: slot taken more than --max-lag after its intended time, never sent
NOT_SENT = "not-sent"  # open loop: slot scheduled in the window, still pending when the window closed
UNFINISHED = "unfinished"  # open loop: sent in the window, no answer within the drain time after it closed
UNSENT_KINDS = (DROPPED, NOT_SENT, UNFINISHED)
UNKNOWN_ENDPOINT = "(no endpoint)"  # label for not-sent slots of a generator whose senders never took one
BLOCK_NS = 1_000_000_000  # default block length: 1 s
MAX_BLOCKS = 600  # a longer window is cut into coarser blocks (whole multiples of BLOCK_NS) in the record
SLIVER_FRACTION = 0.05  # a last block shorter than this share of a block joins the one before it


@dataclass
class Block:
    """One time block of an endpoint's window: successes, errors (in all and by kind), latency (corrected
    in open loop) and, open loop, the uncorrected latency (from the actual send)."""

    count: int = 0
    errors: int = 0
    latency: HdrHistogram | None = None
    error_kinds: Counter = field(default_factory=Counter)
    uncorrected: HdrHistogram | None = None
    _encoded: tuple[int, str, str | None] | None = field(default=None, repr=False, compare=False)

    def record(self, value_us: int, uncorrected_us: int | None = None) -> None:
        if self.latency is None:
            self.latency = new_histogram()
        self.count += 1
        record_us(self.latency, value_us)
        if uncorrected_us is not None:
            if self.uncorrected is None:
                self.uncorrected = new_histogram()
            record_us(self.uncorrected, uncorrected_us)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.error_kinds[kind] += 1

    def _encode(self) -> tuple[int, str, str | None]:
        """The encoded histograms, cached while the count is unchanged (a past block is encoded once)."""
        if self._encoded is None or self._encoded[0] != self.count:
            unc = encode_histogram(self.uncorrected) if self.uncorrected is not None else None
            self._encoded = (self.count, encode_histogram(self.latency or new_histogram()), unc)
        return self._encoded

    def encoded(self) -> str:
        return self._encode()[1]

    def to_wire(self) -> dict[str, Any]:
        _, hist, unc = self._encode()
        d: dict[str, Any] = {"count": self.count, "errors": self.errors, "histogram": hist}
        if self.error_kinds:
            d["error_kinds"] = dict(sorted(self.error_kinds.items()))
        if unc is not None:
            d["uncorrected_histogram"] = unc
        return d

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Block:
        count = int(d["count"])
        unc = d.get("uncorrected_histogram")
        return cls(count=count, errors=int(d["errors"]),
                   latency=decode_histogram(d["histogram"]) if count else None,
                   error_kinds=Counter(d.get("error_kinds") or {}),
                   uncorrected=decode_histogram(unc) if unc and count else None)  # fmt: skip

    def add(self, other: Block) -> None:
        self.count += other.count
        self.errors += other.errors
        self.error_kinds.update(other.error_kinds)
        if other.latency is not None and other.count:
            self.latency = merge_histograms([self.latency or new_histogram(), other.latency])
        if other.uncorrected is not None and other.count:
            self.uncorrected = merge_histograms([self.uncorrected or new_histogram(), other.uncorrected])


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
    blocks: dict[int, Block] = field(default_factory=dict)
    in_flight: int = 0  # set on merged measurements: open-loop slots of the window not yet resolved

    def block(self, index: int) -> Block:
        b = self.blocks.get(index)
        if b is None:
            b = self.blocks[index] = Block()
        return b

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
            "blocks": {str(i): b.to_wire() for i, b in sorted(self.blocks.items())},
            "in_flight": self.in_flight,
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
            blocks={int(i): Block.from_wire(b) for i, b in (d.get("blocks") or {}).items()},
            in_flight=int(d.get("in_flight", 0)),
        )


def _add_to_block(block: Block, n: int, corrected: Binned | None, uncorrected: Binned | None) -> None:
    """``n`` successes of one time block, already put in buckets (``bin_us``): their corrected latencies and,
    in an open loop, their uncorrected ones."""
    if block.latency is None:
        block.latency = new_histogram()
    block.count += n
    add_binned(block.latency, corrected)
    if uncorrected is not None:
        if block.uncorrected is None:
            block.uncorrected = new_histogram()
        add_binned(block.uncorrected, uncorrected)


def weighted_round_robin(weights: dict[str, int], n: int) -> list[str]:
    """``n`` picks among ``weights``' keys in proportion to the weights (nginx's smooth weighted round robin:
    deterministic, each key within one pick of its exact share). Equal weights when all are 0."""
    keys = sorted(weights)
    if not keys:
        return []
    w = {k: max(0, weights[k]) for k in keys}
    if not any(w.values()):
        w = dict.fromkeys(keys, 1)
    total = sum(w.values())
    current = dict.fromkeys(keys, 0)
    out = []
    for _ in range(n):
        for k in keys:
            current[k] += w[k]
        best = max(keys, key=lambda k: current[k])
        current[best] -= total
        out.append(best)
    return out


@dataclass
class Measurement:
    """One load generator's measurement of one test (or several merged)."""

    open_loop: bool
    window_start_ns: int  # perf_counter_ns of the window start (test start + warm-up), this process only
    window_end_ns: int | None = None
    endpoints: dict[str, EndpointStats] = field(default_factory=dict)
    pacing: dict[str, int] = field(default_factory=dict)  # ArrivalSchedule.counters(), summed on merge
    block_ns: int = BLOCK_NS
    # set on merged measurements (from per-generator windows; perf_counter clocks differ across processes)
    duration_s: float | None = None
    throughput_rps: dict[str, float] | None = None
    generators: list[dict[str, Any]] = field(default_factory=list)
    # open loop: slots taken by a sender and not yet resolved (token -> (endpoint, intended_ns))
    pending: dict[int, tuple[str, int]] = field(default_factory=dict)
    sealed: bool = False  # after seal(): the counts are final, later completions are only after_window_count
    _next_token: int = 0

    def endpoint(self, name: str) -> EndpointStats:
        ep = self.endpoints.get(name)
        if ep is None:
            ep = self.endpoints[name] = EndpointStats(uncorrected=new_histogram() if self.open_loop else None)
        return ep

    def _place(self, ep: EndpointStats, start_ns: int) -> Block | None:
        """The window block of a request or slot at ``start_ns``, or None (counted as warm-up / after)."""
        if start_ns < self.window_start_ns:
            ep.warmup_count += 1
            return None
        if self.sealed or (self.window_end_ns is not None and start_ns >= self.window_end_ns):
            ep.after_window_count += 1
            return None
        return ep.block((start_ns - self.window_start_ns) // self.block_ns)

    def add(
        self,
        name: str,
        *,
        start_ns: int,
        latency_us: int,
        send_delay_us: int = 0,
        error: str | None = None,
        server_timing_us: dict[str, int] | None = None,
        token: int | None = None,
    ) -> None:
        """Record one finished request. ``latency_us`` is from the actual send; ``send_delay_us`` is how late
        the send was against its intended time (open loop), so the corrected latency is their sum.
        ``start_ns`` (intended or actual send) decides warm-up vs window. ``token``: the open-loop slot
        from ``begin`` (resolved here; after ``seal`` the request was already counted as unfinished)."""
        if token is not None:
            self.pending.pop(token, None)
        ep = self.endpoint(name)
        block = self._place(ep, start_ns)
        if block is None:
            ep.warmup_errors += error is not None and start_ns < self.window_start_ns
            return
        if error is not None:
            ep.errors[error] += 1
            block.error(error)
            return
        value_us = latency_us + max(0, send_delay_us)
        ep.count += 1
        record_us(ep.latency, value_us)
        block.record(value_us, latency_us if ep.uncorrected is not None else None)
        if ep.uncorrected is not None:
            record_us(ep.uncorrected, latency_us)
        for comp, us in (server_timing_us or {}).items():
            h = ep.server_timing.get(comp)
            if h is None:
                h = ep.server_timing[comp] = new_histogram()
            record_us(h, us)

    def add_successes(
        self,
        name: str,
        *,
        start_ns: np.ndarray,
        latency_us: np.ndarray,
        send_delay_us: np.ndarray | None = None,
        server_timing_us: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Record many successful requests of one endpoint at once: the same result as ``add`` for each,
        with the histogram arithmetic in numpy (the lean engine's path). Arrays are aligned by request;
        a ``server_timing_us`` component is -1 where that request's header did not carry it."""
        n = len(start_ns)
        if n == 0:
            return
        ep = self.endpoint(name)
        start = np.asarray(start_ns, dtype=np.int64)
        warm = start < self.window_start_ns
        if self.sealed:
            late = ~warm
        elif self.window_end_ns is not None:
            late = ~warm & (start >= self.window_end_ns)
        else:
            late = np.zeros(n, dtype=bool)
        ep.warmup_count += int(warm.sum())
        ep.after_window_count += int(late.sum())
        keep = ~warm & ~late
        if not keep.any():
            return
        latency = np.asarray(latency_us, dtype=np.int64)[keep]
        values = latency
        if send_delay_us is not None:
            values = latency + np.maximum(0, np.asarray(send_delay_us, dtype=np.int64)[keep])
        ep.count += len(values)
        # each set of values is put in buckets once, and added to the run's histogram and its block's
        corrected = bin_us(values, ep.latency)
        add_binned(ep.latency, corrected)
        uncorrected = None
        if ep.uncorrected is not None:
            uncorrected = bin_us(latency, ep.uncorrected)
            add_binned(ep.uncorrected, uncorrected)
        index = (start[keep] - self.window_start_ns) // self.block_ns
        first, last = int(index.min()), int(index.max())
        if first == last:  # all in one block (the usual case): the run's buckets are the block's
            _add_to_block(ep.block(first), len(values), corrected, uncorrected)
        else:
            for i in np.unique(index).tolist():
                here = index == i
                unc = bin_us(latency[here], ep.latency) if uncorrected is not None else None
                _add_to_block(ep.block(int(i)), int(here.sum()), bin_us(values[here], ep.latency), unc)
        for comp, arr in (server_timing_us or {}).items():
            col = np.asarray(arr, dtype=np.int64)[keep]
            col = col[col >= 0]
            if len(col):
                h = ep.server_timing.get(comp)
                if h is None:
                    h = ep.server_timing[comp] = new_histogram()
                record_many_us(h, col)

    def add_unsent(self, name: str, *, start_ns: int, kind: str) -> None:
        """An open-loop slot that got no answer (``dropped``, ``not-sent``, ``unfinished``): an error of that
        kind at its intended time ``start_ns``, with no latency."""
        ep = self.endpoint(name)
        block = self._place(ep, start_ns)
        if block is None:
            ep.warmup_errors += start_ns < self.window_start_ns
            return
        ep.errors[kind] += 1
        block.error(kind)

    # -- open-loop slots in flight ----------------------------------------------------------------------
    def begin(self, name: str, start_ns: int) -> int:
        """A sender took the slot due at ``start_ns`` for endpoint ``name``: a token until it is resolved."""
        self.endpoint(name)
        self._next_token += 1
        self.pending[self._next_token] = (name, start_ns)
        return self._next_token

    def cancel(self, token: int) -> None:
        """The slot is outside the window (taken early, due after the close): forget it, count nothing."""
        self.pending.pop(token, None)

    def abandon(self, token: int, kind: str) -> None:
        """The sender ended without the request event (stopped while sleeping or in flight): count the slot
        as ``kind`` unless it was resolved or the window was sealed already."""
        entry = self.pending.pop(token, None)
        if entry is not None and not self.sealed:
            self.add_unsent(entry[0], start_ns=entry[1], kind=kind)

    def in_flight(self) -> int:
        """Slots of the window (or warm-up) taken and not yet resolved."""
        end = self.window_end_ns
        return sum(1 for _, t in self.pending.values() if end is None or t < end)

    def distribute_not_sent(self, intended_ns: list[int]) -> None:
        """The slots pending when the window closed (``ArrivalSchedule.close``) become ``not-sent`` errors.
        They were never bound to an endpoint: they are shared among the endpoints in proportion to the
        window's slots each one took (one endpoint: all of them), deterministically."""
        if not intended_ns:
            return
        weights = {
            name: ep.count + sum(ep.errors.values()) + sum(1 for n, _ in self.pending.values() if n == name)
            for name, ep in self.endpoints.items()
        }
        names = weighted_round_robin(weights, len(intended_ns)) or [UNKNOWN_ENDPOINT] * len(intended_ns)
        for name, t in zip(names, intended_ns, strict=True):
            self.add_unsent(name, start_ns=t, kind=NOT_SENT)

    def seal(self) -> int:
        """Make the counts final: slots still in flight become ``unfinished`` errors (at their intended
        times); later completions only count as after-window. Returns how many were unfinished."""
        if self.sealed:
            return 0
        pending = list(self.pending.values())
        self.pending.clear()
        for name, t in pending:
            self.add_unsent(name, start_ns=t, kind=UNFINISHED)
        self.sealed = True
        return len(pending)

    def answered(self) -> int:
        """Requests this generator sent that got an answer or failed (warm-up and after the window included;
        never-sent slots excluded): the denominator of the generator's CPU per request."""
        total = 0
        for ep in self.endpoints.values():
            sent_errors = sum(v for k, v in ep.errors.items() if k not in UNSENT_KINDS)
            total += ep.count + ep.warmup_count + ep.warmup_errors + ep.after_window_count + sent_errors
        return total

    def window_s(self, now_ns: int) -> float:
        end = self.window_end_ns if self.window_end_ns is not None else now_ns
        return max(0.0, (end - self.window_start_ns) / 1e9)

    def close(self, now_ns: int) -> None:
        if self.window_end_ns is None:
            self.window_end_ns = now_ns

    def _pending_by_endpoint(self) -> Counter:
        end = self.window_end_ns
        return Counter(
            n for n, t in self.pending.values() if t >= self.window_start_ns and (end is None or t < end)
        )

    # -- shipping between Locust processes ------------------------------------------------------------
    def to_wire(self, now_ns: int, generator: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JSON-able snapshot; the window length is computed here, on the generator's own clock."""
        pending = self._pending_by_endpoint()
        endpoints = {}
        for k, v in self.endpoints.items():
            v.in_flight = pending.get(k, 0)
            endpoints[k] = v.to_wire()
        return {
            "open_loop": self.open_loop,
            "window_s": self.window_s(now_ns),
            "closed": self.window_end_ns is not None,
            "sealed": self.sealed,
            "block_s": self.block_ns / 1e9,
            "endpoints": endpoints,
            "pacing": dict(self.pacing),
            "generator": generator or {},
        }

    def local_view(self, now_ns: int, generator: dict[str, Any] | None = None) -> Measurement:
        """This process's measurement as ``merge_wire([self.to_wire(now_ns, generator)])`` would give it,
        without encoding and decoding every histogram (the local runner saves it every few seconds on the
        event loop that also paces the sends)."""
        window_s = self.window_s(now_ns)
        out = Measurement(open_loop=self.open_loop, window_start_ns=0, block_ns=self.block_ns)
        pending = self._pending_by_endpoint()
        for name, ep in self.endpoints.items():
            ep.in_flight = pending.get(name, 0)
        out.endpoints = self.endpoints  # shared, read only
        out.pacing = dict(self.pacing)
        out.duration_s = window_s
        out.throughput_rps = {n: ep.count / window_s for n, ep in self.endpoints.items()} if window_s else {}
        out.generators = [{**(generator or {}), "window_s": round(window_s, 6)}]
        return out

    @staticmethod
    def merge_wire(states: list[dict[str, Any]]) -> Measurement:
        """Pool generator snapshots: histograms added, counts summed, blocks merged by index; throughput =
        sum of per-generator rates (each over its own window); duration = longest window."""
        open_loop = any(s["open_loop"] for s in states)
        block_s = {float(s.get("block_s", BLOCK_NS / 1e9)) for s in states}
        if len(block_s) > 1:
            raise ValueError(f"generators measured with different block lengths: {sorted(block_s)}")
        block_ns = round(block_s.pop() * 1e9) if block_s else BLOCK_NS
        out = Measurement(open_loop=open_loop, window_start_ns=0, block_ns=block_ns)
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
                ep.in_flight += part.in_flight
                for comp, h in part.server_timing.items():
                    ep.server_timing[comp] = merge_histograms(
                        [ep.server_timing.get(comp, new_histogram()), h]
                    )
                for i, b in part.blocks.items():
                    ep.block(i).add(b)
                if window_s > 0:
                    out.throughput_rps[name] = out.throughput_rps.get(name, 0.0) + part.count / window_s
        out.pacing = dict(pacing)
        # Max lag is a max, not a sum.
        if "max_send_lag_us" in out.pacing:
            out.pacing["max_send_lag_us"] = max(
                (int(s.get("pacing", {}).get("max_send_lag_us", 0)) for s in states), default=0
            )
        return out

    def series_blocks(self, ep: EndpointStats) -> list[dict[str, Any]]:
        """The endpoint's blocks over the (merged) window ``duration_s``: every block of the window, empty
        ones too, ``start_s`` from the window start; the last one may be shorter (its ``duration_s``), a
        last sliver under SLIVER_FRACTION of a block joins the one before it, and more than MAX_BLOCKS are
        coalesced into whole multiples. Exact: histograms add up to the series histogram."""
        block_s = self.block_ns / 1e9
        window_s = float(self.duration_s or 0.0)
        n = max(math.ceil(window_s / block_s - 1e-9), max(ep.blocks, default=-1) + 1)
        if n <= 0:
            return []
        groups = [[i] for i in range(n)]
        if n > 1 and window_s - (n - 1) * block_s < SLIVER_FRACTION * block_s:
            last = groups.pop()
            groups[-1] = groups[-1] + last
        k = math.ceil(len(groups) / MAX_BLOCKS)
        if k > 1:
            groups = [[b for g in groups[i : i + k] for b in g] for i in range(0, len(groups), k)]
        out = []
        for g in groups:
            start_s = g[0] * block_s
            end_s = window_s if g[-1] == n - 1 else (g[-1] + 1) * block_s
            parts = [ep.blocks[i] for i in g if i in ep.blocks]
            if len(parts) == 1:
                merged = parts[0]
            else:
                merged = Block()
                for p in parts:
                    merged.add(p)
            block = {
                "start_s": round(start_s, 6),
                "duration_s": round(max(0.0, end_s - start_s), 6),
                **merged.to_wire(),
            }
            out.append(block)
        return out

    def to_series(self, offered_rps: dict[str, float] | None = None) -> list[Series]:
        """One Series per endpoint (sorted by name). Call on a merged measurement (``merge_wire`` or
        ``local_view``)."""
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
            if self.open_loop and ep.in_flight:
                extra["in_flight"] = ep.in_flight  # a running record: slots sent, not yet answered
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
                    blocks=self.series_blocks(ep) if self.duration_s is not None else None,
                    scheduled=(ep.count + sum(ep.errors.values()) + ep.in_flight) if self.open_loop else None,
                    extra=extra,
                )
            )
        return series
