"""The lean engine's accounting, driven in-process with fake connections and a fake clock (no socket, no
process): the same cases as the Locust path's (tests/unit/test_open_loop_accounting.py) — nothing hidden
under overload (``count + errors == scheduled``), late / dropped / not-sent / unfinished slots, corrected vs
uncorrected latency, Server-Timing, HTTP errors, servers that close every connection — and its batch
histogram arithmetic against hdrh's own. The open-loop cases run with both kinds of reads: answers read as
they arrive (event loop) and deferred reads (read at the pacer's wake-ups, timed by the kernel's receive
timestamp: here a fake socket's)."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import select
import socket
import struct
import time
from collections.abc import Iterator
from time import CLOCK_REALTIME
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

import deploybench.loadtests.lean as lean
from deploybench.loadtests.lean import Engine, EngineSpec, RequestPlan
from deploybench.measure import DROPPED, NOT_SENT, UNFINISHED
from deploybench.pacer import NS_PER_S
from deploybench.stats import decode_histogram, encode_histogram, new_histogram, record_many_us, record_us

MS = 1_000_000
T0 = 1_000 * NS_PER_S
REALTIME_OFFSET_NS = 1_700_000_000 * NS_PER_S  # CLOCK_REALTIME - perf_counter_ns on the fake clock
LABEL = "POST /predict"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def perf_counter_ns(self) -> int:
        return self.now

    def monotonic(self) -> float:
        return self.now / 1e9

    def clock_gettime_ns(self, clock: int) -> int:
        assert clock == CLOCK_REALTIME
        return self.now + REALTIME_OFFSET_NS


class FakeTimer:
    def __init__(self) -> None:
        self.deadline: int | None = None

    def at(self, when_ns: int, period_ns: int = 0) -> None:
        self.deadline = when_ns

    def stop(self) -> None:
        self.deadline = None

    def close(self) -> None:
        self.deadline = None


class FakeTransport:
    def __init__(self, sim: Sim, conn: lean.Conn) -> None:
        self.sim, self.conn, self.closed = sim, conn, False

    def write(self, data: bytes) -> None:
        self.sim.arrive(self.conn, data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default  # no socket: lean._shutdown leaves it to close()


class FakeSock:
    """A deferred-reads socket: what the server answered is readable once the fake clock reaches its time,
    with the kernel's receive timestamp (CLOCK_REALTIME) as ``recvmsg``'s ancillary data."""

    def __init__(self, sim: Sim) -> None:
        self.sim, self.closed = sim, False
        self.ready: list[tuple[int, bytes]] = []
        self.eof = False  # the server closed its end
        self.answered_at: int | None = None  # when the server's answer arrived (its first)
        self.closed_at: int | None = None

    def readable(self) -> bool:
        return self.eof or bool(self.ready and self.ready[0][0] <= self.sim.clock.now)

    def send(self, data: bytes) -> int:
        self.sim.arrive(self, data)
        return len(data)

    def recvmsg(self, size: int, ancsize: int) -> tuple[bytes, list[tuple[int, int, bytes]], int, None]:
        if not self.ready or self.ready[0][0] > self.sim.clock.now:
            if self.eof:
                return b"", [], 0, None
            raise BlockingIOError
        at, data = self.ready.pop(0)
        stamp = struct.pack("@qq", *divmod(at + REALTIME_OFFSET_NS, NS_PER_S))
        return data, [(socket.SOL_SOCKET, lean.SO_TIMESTAMPNS, stamp)], 0, None

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self.closed = True
        self.closed_at = self.sim.clock.now


class Sim:
    """One server that answers one request at a time in ``service_ms`` (a queue in front of it), events in
    time order on a fake clock; the engine's timer is a fake whose deadline is an event too."""

    def __init__(
        self, spec: EngineSpec, service_ms: float, *, status: int = 200, keep_alive: bool = True,
        stall_until_ns: int | None = None, reap_by_flush: bool = False,
    ) -> None:  # fmt: skip
        self.clock = Clock()
        # deferred reads: an answer that would wake the saturated engine is taken in by the periodic flush
        # first (its timer ran before the event loop polled the epoll set, so no wake-up follows)
        self.reap_by_flush = reap_by_flush
        self.service_ns = round(service_ms * MS)
        self.status, self.keep_alive, self.stall_until_ns = status, keep_alive, stall_until_ns
        self.free_at = T0
        self.events: list[tuple[int, int, Any]] = []  # (answer time, seq, Conn or FakeSock)
        self.seq = 0
        self.connects = 0
        self.socks: list[FakeSock] = []  # deferred reads: the connections opened (raw sockets)
        self.await_switches = 0  # deferred reads: turning the wake-on-answer on or off (an epoll_ctl each)
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        plan = RequestPlan([LABEL], [(0, b"POST /predict HTTP/1.1\r\n\r\n")])
        sim = self

        class FakeEngine(Engine):
            def _connect(self, conn: lean.Conn) -> None:
                sim.connects += 1
                conn.connection_made(FakeTransport(sim, conn))  # type: ignore[arg-type]
                assert conn.transport is not None
                conn.transport.write(conn.raw)

            def _open_socket(self) -> FakeSock:
                sim.connects += 1
                sim.socks.append(FakeSock(sim))
                return sim.socks[-1]

            def watch(self, conn: lean.RawConn) -> None:
                pass

            def unwatch(self, sock: Any) -> None:
                pass

            def readable(self) -> list[tuple[lean.RawConn, int]]:
                raw = [c for c in self.conns if isinstance(c, lean.RawConn)]
                socks = [c for c in raw if c.sock and c.sock.readable()]
                return [(c, select.EPOLLIN | (select.EPOLLRDHUP if c.sock.eof else 0)) for c in socks]

            def await_answers(self, on: bool) -> None:
                sim.await_switches += on != self.awaiting
                self.awaiting = on

        self.engine = FakeEngine(spec, plan)
        self.timer = FakeTimer()

    def arrive(self, conn: Any, data: bytes) -> None:
        start = max(self.clock.now, self.free_at)
        if self.stall_until_ns is not None:
            start = max(start, self.stall_until_ns)
        self.free_at = start + self.service_ns
        self.seq += 1
        heapq.heappush(self.events, (self.free_at, self.seq, conn))

    def response(self) -> bytes:
        conn_header = b"" if self.keep_alive else b"Connection: close\r\n"
        return (
            (
                f"HTTP/1.1 {self.status} X\r\n"
                f"Server-Timing: decode;dur=0.01, infer;dur={self.service_ns / MS:.3f}\r\n"
                "Content-Length: 2\r\n"
            ).encode()
            + conn_header
            + b"\r\n{}"
        )

    def run(self, until_ns: int) -> None:
        """Process the events up to ``until_ns``: answers, and the pacer's wake-ups."""
        while True:
            answer = self.events[0][0] if self.events else None
            wake = self.timer.deadline
            nxt = min(t for t in (answer, wake) if t is not None) if (answer or wake) else None
            if nxt is None or nxt > until_ns:
                break
            self.clock.now = nxt
            if answer is not None and answer == nxt:
                _, _, conn = heapq.heappop(self.events)
                if isinstance(conn, FakeSock):  # deferred reads: readable from now, read at a wake-up
                    if not conn.closed:
                        conn.ready.append((nxt, self.response()))
                        conn.answered_at = conn.answered_at or nxt
                        if self.engine.awaiting and self.reap_by_flush:
                            self.engine.flush()
                            self.loop.run_until_complete(asyncio.sleep(0))  # what it left for the loop
                        elif self.engine.awaiting:  # every connection busy: the answer wakes the engine
                            self.engine.pace()
                elif conn.transport is not None and not conn.transport.closed:  # type: ignore[attr-defined]
                    conn.data_received(self.response())
            else:
                self.timer.deadline = None
                self.engine.pace()
        self.clock.now = max(self.clock.now, until_ns)

    def finish(self) -> Any:
        self.engine.finish()
        self.loop.run_until_complete(self.engine.done.wait())
        return self.engine.measurement


@contextlib.contextmanager
def _sims(monkeypatch: pytest.MonkeyPatch, deferred: bool) -> Iterator[Any]:
    """``make(spec, service_ms, **kw)`` -> a ``Sim`` with deferred reads asked for or not, on a fake clock."""
    if deferred and not lean.deferred_reads_available():
        pytest.skip("no TCP receive timestamps on this platform")
    sims: list[Sim] = []

    def make(spec: EngineSpec, service_ms: float, **kw: Any) -> Sim:
        spec.deferred_reads = deferred
        sim = Sim(spec, service_ms, **kw)
        assert sim.engine.deferred == (deferred and spec.open_loop)
        monkeypatch.setattr(lean, "time", SimpleNamespace(perf_counter_ns=sim.clock.perf_counter_ns,
                                                          monotonic=sim.clock.monotonic,
                                                          clock_gettime_ns=sim.clock.clock_gettime_ns,
                                                          CLOCK_REALTIME=CLOCK_REALTIME))  # fmt: skip
        monkeypatch.setattr(lean, "process_cpu_s", lambda: 0.0)
        sims.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in sims:
            sim.loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture(params=["on-arrival", "deferred"])
def clocked(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Open loop: each case runs with answers read on arrival and with deferred reads."""
    with _sims(monkeypatch, request.param == "deferred") as make:
        yield make


@pytest.fixture
def closed_clocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Closed loop: answers are always read on arrival."""
    with _sims(monkeypatch, False) as make:
        yield make


@pytest.fixture
def deferred_clocked(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with _sims(monkeypatch, True) as make:
        yield make


def _spec(**kw: Any) -> EngineSpec:
    base: dict[str, Any] = {"url": "http://127.0.0.1:9", "scenario": "tabular", "drain_s": 0.0}
    return EngineSpec(**{**base, **kw})


def _start(sim: Sim) -> None:
    sim.engine.start(sim.clock.now, timer=sim.timer)


def _run(sim: Sim, until_ns: int) -> tuple[Any, Any]:
    """Start, run to ``until_ns``, finish: (the measurement, its one endpoint)."""
    _start(sim)
    sim.run(until_ns)
    m = sim.finish()
    return m, m.endpoints[LABEL]


def test_open_loop_under_capacity_measures_every_slot_at_the_service_time(clocked: Any) -> None:
    sim = clocked(_spec(load_model="constant", rate_rps=100, connections=4, duration_s=1.0), service_ms=1.0)
    _m, ep = _run(sim, T0 + NS_PER_S)
    assert ep.count == 100 and not ep.errors  # 100 rps for 1 s, far under capacity
    assert decode_histogram(encode_histogram(ep.latency)).get_total_count() == 100
    assert ep.latency.get_max_value() <= 1_001 and ep.latency.get_min_value() >= 999  # exactly the service
    assert ep.server_timing["infer"].get_total_count() == 100  # Server-Timing parsed in the batch
    assert sim.engine.schedule.counters()["scheduled_in_window"] == 100
    assert sim.engine.schedule.late == 0


def test_open_loop_overload_hides_nothing(clocked: Any) -> None:
    """Offered 2x capacity with 4 connections: slots wait in the schedule (late), past --max-lag they are
    dropped, those due when the window closes are not-sent, the requests in flight unfinished; every slot of
    the window is one of them or a success, and corrected latency includes the wait."""
    spec = _spec(load_model="constant", rate_rps=2000, connections=4, duration_s=1.0, max_lag_s=0.1)
    sim = clocked(spec, service_ms=1.0)
    _m, ep = _run(sim, T0 + NS_PER_S)
    counters = sim.engine.schedule.counters()
    assert ep.count + sum(ep.errors.values()) == counters["scheduled_in_window"] == 2000
    assert ep.errors[DROPPED] > 0 and ep.errors[NOT_SENT] > 0 and ep.errors[UNFINISHED] > 0
    assert 900 <= ep.count <= 1000  # one request a ms, the capacity
    assert counters["late_sends"] > 0
    assert ep.latency.get_max_value() > 50_000  # waited up to max_lag in the schedule ...
    assert ep.uncorrected.get_max_value() <= 4_001  # ... but never more than 4 in the server's queue
    assert sum(b.count for b in ep.blocks.values()) == ep.count
    if sim.engine.deferred:  # saturated from the 5th slot on: waking on answers stays on, not 2 switches each
        assert sim.await_switches <= 4, sim.await_switches


def test_a_saturated_open_loop_goes_on_when_the_flush_reads_the_answer_it_waited_for(
    deferred_clocked: Any,
) -> None:
    """Deferred reads, every connection busy: the pacer's timer is stopped and the first answer wakes it. When
    the periodic flush takes that answer in first, nothing is left to wake the pacer: the freed connection
    must. (Found at 48,000 rps against nginx: 5 of 8 runs of 8 s stalled for the rest of their window.)"""
    spec = _spec(load_model="constant", rate_rps=400, connections=2, duration_s=0.5, max_lag_s=10.0)
    sim = deferred_clocked(spec, service_ms=5.0, reap_by_flush=True)
    _m, ep = _run(sim, T0 + NS_PER_S // 2)
    assert ep.count >= 95, (ep.count, ep.errors)  # the server's capacity: one answer every 5 ms for 0.5 s
    assert ep.count + sum(ep.errors.values()) == sim.engine.schedule.counters()["scheduled_in_window"]


def test_a_saturated_open_loop_goes_on_after_the_watchdog_fails_every_request_in_flight(
    deferred_clocked: Any,
) -> None:
    """Deferred reads, a server that hangs with every connection busy: the watchdog fails the requests at the
    timeout and closes their connections, so no answer will ever wake the pacer; the freed connections do."""
    spec = _spec(load_model="constant", rate_rps=100, connections=2, duration_s=1.0, request_timeout_s=0.05)
    sim = deferred_clocked(spec, service_ms=1.0, stall_until_ns=T0 + 10 * NS_PER_S)
    _start(sim)
    sim.run(T0 + 30 * MS)  # slots 0 and 1 took both connections; slot 2 is due with none free
    engine = sim.engine
    assert len(engine.in_flight()) == 2 and not engine.idle and sim.timer.deadline is None
    sim.clock.now = T0 + 100 * MS  # past both requests' timeout
    engine.watchdog()
    sim.loop.run_until_complete(asyncio.sleep(0))  # what the failures left for the event loop
    sim.loop.run_until_complete(asyncio.sleep(0))
    assert len(engine.in_flight()) == 2  # the due slots went out on fresh connections
    assert sim.connects == 4


def test_a_stall_shows_in_the_corrected_latency_only(clocked: Any) -> None:
    """A 200 ms stall of the server at 100 rps: the slots due during the stall wait for a connection; the
    corrected P99 sees the stall, the uncorrected latency (from the actual send) does not all of it."""
    spec = _spec(load_model="constant", rate_rps=100, connections=2, duration_s=1.0)
    sim = clocked(spec, service_ms=1.0, stall_until_ns=T0 + 300 * MS)
    _m, ep = _run(sim, T0 + NS_PER_S)
    assert ep.count == 100 and not ep.errors
    assert ep.latency.get_max_value() >= 295_000  # the first slot waited the whole stall
    assert ep.latency.get_value_at_percentile(50) <= 1_100
    assert ep.latency.get_total_count() == ep.uncorrected.get_total_count() == 100


def test_closed_loop_records_from_the_send_and_classifies_http_errors(closed_clocked: Any) -> None:
    sim = closed_clocked(_spec(connections=2, duration_s=0.1), service_ms=5.0, status=503)
    m, ep = _run(sim, T0 + 100 * MS)
    assert ep.count == 0 and ep.errors["http-503"] >= 19  # 2 connections, one server, 5 ms each
    assert m.open_loop is False and ep.uncorrected is None


def test_a_server_that_closes_every_connection_costs_a_reconnect_not_an_error(
    closed_clocked: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = closed_clocked(_spec(connections=2, duration_s=0.1), service_ms=5.0, keep_alive=False)
    shut: list[bool] = []  # per answer: was the request still in flight (not yet booked) at the shutdown?
    monkeypatch.setattr(lean, "_shutdown", lambda t: shut.append(t.conn.item is not None))
    _m, ep = _run(sim, T0 + 100 * MS)
    assert ep.count >= 19 and not ep.errors
    # each answer closes its connection at once (gunicorn lingers until then), before it is booked
    assert len(shut) >= ep.count and all(shut)
    assert (
        sim.connects == ep.count + 2
    )  # every request on a fresh connection (+ the two in flight at the end)
    assert len(sim.engine.conns) == 2  # retired connections are dropped, never reused


def test_a_closed_loop_goes_on_raw_sockets_once_the_server_closes_every_connection(
    deferred_clocked: Any,
) -> None:
    """Closed loop over plain HTTP on Linux: after the first answer with ``Connection: close`` the new
    connections are the engine's own sockets, read on arrival (no transport and no task per connection), each
    closed the moment its answer arrives, and the next request goes out at once on a fresh one."""
    sim = deferred_clocked(_spec(connections=2, duration_s=0.1), service_ms=5.0, keep_alive=False)
    _m, ep = _run(sim, T0 + 100 * MS)
    assert ep.count >= 19 and not ep.errors
    assert sim.engine.prompt and sim.engine.snapshot()["generator"]["reads"] == "on-arrival"
    # the first two connections were transports, every later one a raw socket
    assert sim.connects == ep.count + 2 and len(sim.socks) == sim.connects - 2
    answered = [s for s in sim.socks if s.answered_at is not None]
    assert len(answered) >= ep.count - 2
    late = [s for s in answered if s.closed_at != s.answered_at]
    assert not late, [(s.answered_at, s.closed_at) for s in late]
    assert len(sim.engine.conns) == 2


def test_an_open_loop_against_a_server_that_closes_every_connection(clocked: Any) -> None:
    sim = clocked(_spec(load_model="constant", rate_rps=100, connections=2, duration_s=1.0), service_ms=1.0,
                  keep_alive=False)  # fmt: skip
    _m, ep = _run(sim, T0 + NS_PER_S)
    assert ep.count == 100 and not ep.errors
    assert ep.latency.get_max_value() <= 1_001
    assert sim.connects == 100  # a fresh connection per request, none left in flight
    assert len(sim.engine.conns) == 2
    if sim.engine.deferred:  # the server closes connections: from the first such answer on, answers wake it
        assert sim.engine.prompt and sim.engine.snapshot()["generator"]["reads"] == lean.PROMPT_READS


def test_once_the_server_closes_connections_every_answer_is_read_and_closed_on_arrival(
    deferred_clocked: Any,
) -> None:
    """Deferred reads against a server that closes every connection, overloaded (1,000 rps offered, 500
    served) so that every connection of the pool gets used: from the first such answer on, every answer wakes
    the engine, and its socket is closed the moment it arrives (the server may wait for that close)."""
    spec = _spec(load_model="constant", rate_rps=1000, connections=8, duration_s=0.1)
    sim = deferred_clocked(spec, service_ms=2.0, keep_alive=False)
    _m, ep = _run(sim, T0 + 100 * MS)
    assert ep.count >= 40 and sim.engine.prompt and sim.engine.awaiting
    answered = sorted((s for s in sim.socks if s.answered_at is not None), key=lambda s: s.answered_at or 0)
    assert len(answered) >= ep.count and len(sim.socks) == sim.connects  # raw sockets throughout
    late = [s for s in answered[1:] if s.closed_at != s.answered_at]
    assert not late, [(s.answered_at, s.closed_at) for s in late]


def test_deferred_reads_replace_an_idle_connection_the_server_closed(deferred_clocked: Any) -> None:
    """An idle keep-alive connection the server closed (end of file waiting on it) is replaced at the next
    wake-up, before any request is sent on it, so no request is lost to a reset."""
    spec = _spec(load_model="constant", rate_rps=0.5, connections=1, duration_s=5.0)
    sim = deferred_clocked(spec, service_ms=1.0)
    _start(sim)
    sim.run(T0 + NS_PER_S // 2)  # the first request answered (read at the next slot, 2 s later)
    (conn,) = sim.engine.conns
    conn.sock.eof = True  # (its answer still waits to be read)
    sim.run(T0 + 5 * NS_PER_S)
    m = sim.finish()
    ep = m.endpoints[LABEL]
    assert ep.count == 3 and not ep.errors
    assert sim.connects == 2  # the closed one was replaced once, the fresh one (idle 2 s, open) kept


def test_warmup_requests_stay_out_of_the_window(clocked: Any) -> None:
    spec = _spec(load_model="constant", rate_rps=100, connections=2, warmup_s=0.5, duration_s=0.5)
    sim = clocked(spec, service_ms=1.0)
    _m, ep = _run(sim, T0 + NS_PER_S)
    assert ep.count == 50 and ep.warmup_count == 50


def test_batch_recording_equals_hdrh_one_by_one() -> None:
    rng = np.random.default_rng(7)
    values = np.concatenate([rng.integers(0, 3000, 5000), rng.integers(0, 5_000_000_000, 5000), [0, 1, 2048]])
    one, batch = new_histogram(), new_histogram()
    for v in values:
        record_us(one, int(v))
    record_many_us(batch, values)
    assert encode_histogram(one) == encode_histogram(batch)
    assert (one.get_min_value(), one.get_max_value()) == (batch.get_min_value(), batch.get_max_value())


def test_server_timing_columns_parse_every_component() -> None:
    cols = lean._server_timing_columns([b"decode;dur=0.015, infer;dur=1.5", None, b'infer;desc="x";dur=2'])
    assert cols["decode"].tolist() == [15, -1, -1]
    assert cols["infer"].tolist() == [1500, -1, 2000]


def test_server_timing_is_found_in_the_head_whatever_its_case_and_count() -> None:
    head = (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nSERVER-TIMING: decode;dur=0.5\r\nx: 1\r\n"
            b"Server-Timing:  infer;dur=2 \r\n\r\n")  # fmt: skip
    assert lean.server_timing(head + b"{}") == b"decode;dur=0.5, infer;dur=2"
    assert lean.server_timing(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}") is None
    # the body is not the head: a "server-timing:" line in it is not a header
    body = b"\r\nserver-timing: a;dur=1\r\n"
    assert lean.server_timing(b"HTTP/1.1 200 OK\r\ncontent-length: 25\r\n\r\n" + body) is None


def test_an_answer_whose_head_spans_reads_keeps_its_server_timing() -> None:
    conn = lean.RawConn.__new__(lean.RawConn)
    conn.head = None
    for part in (b"HTTP/1.1 200 OK\r\nserver-tim", b"ing: infer;dur=1.5\r\ncontent-length: 2\r\n", b"\r\n{}"):
        conn.took(part)
    assert lean.server_timing(conn.head) == b"infer;dur=1.5"


@pytest.mark.parametrize(
    ("answer", "keep_alive"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", True),
    ],
)
def test_an_answer_says_whether_its_connection_stays_open(answer: bytes, keep_alive: bool) -> None:
    """Keep-alive is read in the answer's one callback (llhttp resets it once the answer is complete), for
    every answer on a connection, split across reads or not."""
    conn = lean.RawConn(None)  # type: ignore[arg-type]
    for _ in range(2):
        for part in (answer[:20], answer[20:]):
            conn.parser.feed_data(part)
        assert conn.complete and conn.keep_alive is keep_alive
        conn.complete = False
        if not keep_alive:
            break


@pytest.mark.skipif(not hasattr(__import__("os"), "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_the_process_that_runs_a_pinned_generator_is_pinned_with_it_for_the_run_only() -> None:
    import os

    from deploybench.env import own_cpus

    before = os.sched_getaffinity(0)
    one = min(before)
    with own_cpus([one]):
        assert os.sched_getaffinity(0) == {one}
    assert os.sched_getaffinity(0) == before
    with pytest.raises(RuntimeError), own_cpus([one]):
        raise RuntimeError("a failed run")
    assert os.sched_getaffinity(0) == before  # restored on an error too
    with own_cpus(None):
        assert os.sched_getaffinity(0) == before


def test_a_repeating_timer_wakes_each_evenly_spaced_slot_without_arming_again() -> None:
    """Constant arrivals: the timerfd repeats with the slots' spacing, so after the first ``at`` it is not
    armed again (one syscall less per paced request); no slot is woken before its time, none is missed. A
    wake-up late enough to find two slots due may arm it once more (a loaded machine), never more."""
    loop = asyncio.new_event_loop()
    period, n = 2 * MS, 40
    woke: list[tuple[int, int]] = []  # (slot's time, the wake-up that took it)
    late_wakes = 0
    first = time.perf_counter_ns() + 5 * MS
    dues = [first + i * period for i in range(n)]

    def pace() -> None:  # as the engine's pacer: every slot due by now, then the timer for the next one
        nonlocal late_wakes
        now, taken = time.perf_counter_ns(), 0
        while len(woke) < n and dues[len(woke)] <= now:
            woke.append((dues[len(woke)], now))
            taken += 1
        late_wakes += taken > 1
        if len(woke) == n:
            timer.stop()
            loop.stop()
        else:
            timer.at(dues[len(woke)], period)

    timer = lean.PreciseTimer(loop, pace)
    try:
        if timer.fd < 0:
            pytest.skip("no timerfd on this platform")
        timer.at(dues[0], period)
        guard = loop.call_later(30, loop.stop)  # (bounded: ends the loop even if a wake-up went missing)
        loop.run_forever()
        guard.cancel()
    finally:
        timer.close()
        loop.close()
    assert [d for d, _ in woke] == dues
    assert all(at >= due for due, at in woke)
    assert timer.armings <= 2 + late_wakes  # the first at() and the stop, + at most one per late wake-up


def test_stop_cancels_a_wake_up_without_timerfd(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where timerfd is not available the timer falls back to the event loop's own timers: ``stop`` cancels
    the wake-up armed there too."""

    def no_libc(*_: Any, **__: Any) -> Any:
        raise OSError("no libc here")

    monkeypatch.setattr(lean.ctypes, "CDLL", no_libc)
    loop = asyncio.new_event_loop()
    woke: list[int] = []
    try:
        timer = lean.PreciseTimer(loop, lambda: woke.append(1))
        assert timer.fd < 0
        timer.at(time.perf_counter_ns() + 20 * MS)
        timer.stop()
        timer.at(time.perf_counter_ns() + 10 * MS)  # armed again, and stopped again
        timer.stop()
        loop.run_until_complete(asyncio.sleep(0.05))
        assert not woke
        timer.at(time.perf_counter_ns() + 5 * MS)
        loop.run_until_complete(asyncio.sleep(0.05))
        assert woke == [1]
    finally:
        loop.close()
