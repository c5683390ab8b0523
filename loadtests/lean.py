"""The lean load engine: built-in scenarios and URL + payload runs at a small fraction of the CPU per request
that Locust spends, so a figure taken on one generator core is the server's, not the generator's.

Why this design (figures measured on this project's 2-core machine, README "Load engines"):
- **uvloop + httptools** (both already installed with ``uvicorn[standard]``): libuv's event loop and the
  llhttp parser run in C; Python only runs one callback per response.
- **No task or future per request.** Each connection is an ``asyncio.Protocol``; a response's callback
  records the result and writes the next request on the same connection (closed loop) or hands the
  connection back to the pacer (open loop).
- **Requests encoded once.** Every request the run will send (head + body) is built up front as bytes; a
  send is one ``transport.write``.
- **Results recorded in batches.** A response appends four integers (and its Server-Timing durations, one
  regex call) to flat lists; four times a second the batch goes into the HdrHistograms with numpy
  (``Measurement.add_successes``, bucket arithmetic vectorised), never one Python ``record_value`` per
  request, and the pause that costs the loop stays well under a millisecond.
- **No collector pauses.** The set-up's objects are frozen out of the cyclic garbage collector and its young
  generation runs 50x less often: the run allocates little that is cyclic.
- **Exact pacing without spinning.** Open loop, the next slot's intended time arms a Linux ``timerfd``
  (nanosecond deadline, woken by epoll); libuv's own timers round to whole milliseconds, which would add a
  mean ~0.5 ms of send delay to every corrected latency. Constant arrivals are evenly spaced, so the timerfd
  repeats on its own instead of being armed for every slot.
- **One wake-up per paced request.** Open loop over plain HTTP on Linux, answers do not wake the generator:
  each connection is a non-blocking socket the event loop does not watch, read at the generator's next
  wake-up (the next slot's timer, the 4 Hz flush, the drain), and each answer is timed by the kernel's
  receive timestamp of its last bytes (``SO_TIMESTAMPNS``), not by the read. A wake-up costs ~20-30 µs of
  CPU on this project's VM, so this saves one per request; ``DEPLOYBENCH_LEAN_READS=on-arrival`` turns it
  off (every answer read as it arrives, as in the closed loop and over HTTPS).

The measurement is the engine-neutral one (``deploybench.measure`` + ``deploybench.pacer`` +
``deploybench.loadtests.core``), fed exactly as the Locust path feeds it: intended-time coordinated-omission
correction, per-endpoint HdrHistograms, 1 s blocks, ``dropped`` / ``not-sent`` / ``unfinished`` slots,
Server-Timing and errors by kind. Open loop, the connections are the senders: a slot is taken only when a
connection is free (as a Locust user takes one), so a slot waits in the schedule, late, when every connection
is busy, and is dropped past ``--max-lag``.

One process per generator core: ``run_lean`` starts ``processes`` copies of ``python -m
deploybench.loadtests.lean`` (each pinned to its core when CPUs are given), each with its share of the rate
(constant schedules offset, so the merged arrivals stay evenly spaced; Poisson schedules seeded apart) and of
the connections. Each writes a snapshot of its measurement (``Measurement.to_wire``) to its own state file
every ``save_interval_s`` and a final one when it ends; the parent merges them exactly (histograms added) into
the run record.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import gc
import itertools
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httptools
import numpy as np

from deploybench.env import capture_env, pinned_argv
from deploybench.errors import UsageError
from deploybench.io import write_atomic
from deploybench.loadtests.core import (
    DRAIN_TIMEOUT_S,
    LoadOptions,
    base_config,
    cpu_usage,
    fetch_health,
    fill_record,
    new_record,
    process_cpu_s,
)
from deploybench.loadtests.payloads import (
    BOUNDARY,
    HEADERS_ENV,
    KINDS,
    base64_body,
    make_images,
    make_payload,
    merge_headers,
    multipart_body,
    oip_options,
    oip_plan,
    parse_mix,
    parse_size,
    payload_rng,
    request_spec,
    row_width,
)
from deploybench.measure import DROPPED, NOT_SENT, UNFINISHED, Measurement, error_kind
from deploybench.pacer import NS_PER_S, ArrivalSchedule
from deploybench.procs import STOP_GRACE_S, signal_group, stop_process_group
from deploybench.vocabulary import OPEN_LOOP_MODELS

ENGINE = "lean"
STATE_POLL_S = 0.2  # the parent checks its generator processes (and the target) this often
FLUSH_S = 0.25  # results go into the histograms this often
WATCHDOG_S = 0.5  # how often requests in flight are checked against the timeout
REQUEST_TIMEOUT_S = 30.0  # as Locust's FastHttpUser network_timeout
CONNECT_TIMEOUT_S = 10.0
PICKS = 1024  # length of the seeded request sequence a generator cycles through
TABULAR_BODIES = 64  # distinct tabular request bodies per generator
USER_AGENT = "deploybench-lean"
PROMPT_READS = "deferred, then on arrival (the server closes connections)"
READS_ENV = "DEPLOYBENCH_LEAN_READS"  # deferred (default) | on-arrival: how an open loop reads its answers
READ_BYTES = 65_536
PERIODIC_SLACK_NS = 2_000  # a repeating timer may wake a constant schedule's slot this much late
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # its cmsg type SCM_TIMESTAMPNS is the same number
_TIMESPEC = struct.Struct("@qq")
_CLOSED = getattr(select, "EPOLLRDHUP", 0) | getattr(select, "EPOLLHUP", 0)  # (Linux only, as deferred reads)
_ANC_BYTES = socket.CMSG_SPACE(_TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0
_ST_ENTRY = re.compile(rb'([A-Za-z0-9_.-]+)\s*;(?:[^,]*?;)?\s*dur\s*=\s*"?([0-9]+(?:\.[0-9]*)?)')


# -- what to send --------------------------------------------------------------------------------------------
@dataclass
class RequestPlan:
    """Every request a generator sends, encoded once: endpoint labels and a cycle of (label index, bytes)."""

    labels: list[str]
    picks: list[tuple[int, bytes]]
    describe: dict[str, Any] = field(default_factory=dict)


def _encode(method: str, target: str, host_header: str, headers: dict[str, str], body: bytes | None,
            content_type: str | None) -> bytes:  # fmt: skip
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {host_header}",
        f"User-Agent: {USER_AGENT}",
        "Accept: */*",
    ]
    names = {k.lower() for k in headers}
    if body is not None:
        if content_type and "content-type" not in names:
            lines.append(f"Content-Type: {content_type}")
        lines.append(f"Content-Length: {len(body)}")
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def build_plan(
    scenario: str,
    url: str,
    *,
    options: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    seed: int = 0,
    generator_index: int = 0,
) -> RequestPlan:
    """The requests of a built-in scenario (tabular, image, health, oip) or of ``api`` (path/method/payload),
    for one generator process. The same choices as the Locust scenarios make: iris rows (or seeded rows of
    the width /health reports), the image mix by weight, api bodies cycled in order."""
    options = dict(options or {})
    headers = dict(headers or {})
    parts = urllib.parse.urlsplit(url)
    host_header = parts.netloc
    prefix = parts.path.rstrip("/")
    rng = payload_rng(seed, generator_index, 0)

    def enc(method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> bytes:
        return _encode(method, prefix + path, host_header, headers, body, ctype)

    if scenario == "health":
        return RequestPlan(["GET /health"], [(0, enc("GET", "/health"))])
    if scenario == "tabular":
        batch = max(1, int(options.get("batch_size") or 1))
        width = row_width(fetch_health(url, headers=headers))
        bodies = [json.dumps(make_payload(rng, batch, width)).encode() for _ in range(TABULAR_BODIES)]
        return RequestPlan(
            ["POST /predict"], [(0, enc("POST", "/predict", b, "application/json")) for b in bodies]
        )
    if scenario == "image":
        mix = parse_mix(options.get("payload_mix") or "multipart=1,base64=1")
        size = parse_size(options.get("image_size") or "224x224")
        fmt = options.get("image_format") or "jpeg"
        count = max(1, int(options.get("image_count") or 4))
        images = make_images(size, fmt, count, seed)
        kinds = [k for k, w in mix.items() if w > 0]
        labels = [f"POST {KINDS[k]}" for k in kinds]
        encoded = {
            "multipart": [enc("POST", KINDS["multipart"], multipart_body(b, fmt),
                              f"multipart/form-data; boundary={BOUNDARY}") for b in images],
            "base64": [enc("POST", KINDS["base64"], base64_body(b, fmt).encode(), "application/json")
                       for b in images],
        }  # fmt: skip
        weights = [mix[k] for k in kinds]
        picks = []
        for i in range(PICKS):
            k = rng.choices(range(len(kinds)), weights)[0]
            picks.append((k, encoded[kinds[k]][i % count]))
        return RequestPlan(labels, picks)
    if scenario == "oip":  # Open Inference Protocol v2: the model name and metadata run_lean resolved
        resolved = dict(options)
        if "oip_metadata" not in resolved:  # called directly, not through run_lean (a test)
            resolved.update(oip_options(url, "", headers, options))
        path, bodies = oip_plan(resolved, rng, TABULAR_BODIES)
        return RequestPlan([f"POST {path}"], [(0, enc("POST", path, b, "application/json")) for b in bodies])
    if scenario == "api":
        spec = request_spec(
            str(options.get("method") or ""), str(options.get("path") or "/"),
            str(options.get("payload") or ""), str(options.get("multipart_field") or "file"),
        )  # fmt: skip
        label = f"{spec.method} {spec.path}"
        if spec.payloads is None:
            return RequestPlan([label], [(0, enc(spec.method, spec.path))], spec.describe())
        p = spec.payloads
        picks = [
            (0, enc(spec.method, spec.path, b, ct)) for b, ct in zip(p.bodies, p.content_types, strict=True)
        ]
        return RequestPlan([label], picks, spec.describe())
    raise ValueError(f"the lean engine has no scenario {scenario!r}")


# -- precise wake-ups: a timerfd on the event loop -----------------------------------------------------------
class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class PreciseTimer:
    """One-shot wake-ups at an absolute ``perf_counter_ns`` time (CLOCK_MONOTONIC on Linux) through a
    timerfd watched by the event loop: nanosecond deadlines where libuv's timers round to milliseconds.
    Falls back to ``loop.call_at`` where timerfd is not available.

    Evenly spaced deadlines (constant arrivals) may pass their spacing as ``period_ns``: the timerfd then
    repeats on its own, and a deadline that its next expiry already meets (no earlier, at most
    ``PERIODIC_SLACK_NS`` later) is not armed again: no ``timerfd_settime`` through ctypes per paced request
    (6-7 µs on this project's VM for a deadline due soon). The repeating timerfd re-arms itself when its
    count is read, which is done after the callback's sends. ``stop`` ends the repeats. Measured in
    docs/measurements/load-engines.md ("A repeating timer for constant arrivals")."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Any) -> None:
        self.loop = loop
        self.callback = callback
        self.fd = -1
        self._handle: asyncio.TimerHandle | None = None
        self._spec = _Itimerspec()
        self.armed_ns = -1  # the deadline armed now (-1: none); arming the same one again is skipped
        self.period_ns = 0  # the timerfd repeats with this period (0: one-shot)
        self.next_ns = -1  # repeating: its next expiry
        self.armings = 0  # timerfd_settime calls (what the repeats save)
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            create, self._settime = libc.timerfd_create, libc.timerfd_settime
            fd = create(1, os.O_NONBLOCK | os.O_CLOEXEC)  # CLOCK_MONOTONIC
        except (OSError, AttributeError):
            fd = -1
        if fd >= 0 and time.get_clock_info("perf_counter").implementation.endswith("(CLOCK_MONOTONIC)"):
            self.fd = fd
            loop.add_reader(fd, self._fired)
        elif fd >= 0:
            os.close(fd)

    def at(self, when_ns: int, period_ns: int = 0) -> None:
        if when_ns == self.armed_ns:
            return
        if self.fd >= 0:
            if (
                period_ns
                and period_ns == self.period_ns
                and when_ns <= self.next_ns <= when_ns + PERIODIC_SLACK_NS
            ):
                self.armed_ns = when_ns  # the next repeat meets it
                return
            self._arm(max(1, when_ns), period_ns)
            self.armed_ns = when_ns
            return
        self.armed_ns = when_ns
        if self._handle is not None:
            self._handle.cancel()
        delay = max(0.0, (when_ns - time.perf_counter_ns()) / 1e9)
        self._handle = self.loop.call_later(delay, self._fired)

    def _arm(self, when_ns: int, period_ns: int) -> None:
        spec = self._spec
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(when_ns, NS_PER_S)
        spec.it_interval.tv_sec, spec.it_interval.tv_nsec = divmod(period_ns, NS_PER_S)
        self._settime(self.fd, 1, ctypes.byref(spec), None)  # TFD_TIMER_ABSTIME (expirations unread: reset)
        self.armings += 1
        self.period_ns = period_ns
        self.next_ns = when_ns if period_ns else -1

    def stop(self) -> None:
        """No wake-up until the next ``at`` (ends the repeats)."""
        if self.fd >= 0 and self.period_ns:
            self._arm(0, 0)  # (an it_value of zero disarms)
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.armed_ns = -1

    def _fired(self) -> None:
        self.armed_ns = -1
        period = self.period_ns
        if self.fd < 0 or not period:
            if self.fd >= 0:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.fd, 8)
            self.callback()
            return
        # Repeating: reading the expirations re-arms the timerfd (it reprograms the clock), so the read comes
        # after the callback's sends; meanwhile the expiry that woke us is taken as the only one.
        self.next_ns += period
        armings = self.armings
        self.callback()
        if self.armings != armings:  # armed anew (or stopped) by the callback: its count was reset
            return
        try:
            ticks = int.from_bytes(os.read(self.fd, 8), sys.byteorder)
        except BlockingIOError:
            ticks = 0
        if ticks != 1:
            self.next_ns += (ticks - 1) * period
            if ticks > 1:  # the next expiry passed during the callback, and this read took it: wake now
                self.loop.call_soon(self.callback)

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        if self._handle is not None:
            self._handle.cancel()


# -- one connection ------------------------------------------------------------------------------------------
class _Response:
    """What both kinds of connection share: the request in flight, the httptools callback and the answer's
    first bytes. One Python callback per answer (its end, which also reads keep-alive), none per header: the
    Server-Timing header is found in the answer's head (``server_timing``) once it is complete."""

    __slots__ = ("complete", "engine", "head", "item", "keep_alive", "parser", "raw")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.parser = httptools.HttpResponseParser(self)
        self.item: tuple[int, int, int, int] | None = None  # (label index, start_ns, send_ns, slot or -1)
        self.head: bytes | None = None  # the answer's bytes so far, until its head is complete
        self.complete = False
        self.keep_alive = True
        self.raw = b""  # the request to write once connected

    def took(self, data: bytes) -> None:
        """Keep the answer's first bytes until they hold its whole head (usually the first read does)."""
        head = self.head
        if head is None:
            self.head = data
        elif head.find(b"\r\n\r\n") < 0:
            self.head = head + data

    def on_message_complete(self) -> None:
        # (llhttp resets keep-alive once this callback returns: read here, one callback per answer)
        self.keep_alive = self.parser.should_keep_alive()
        self.complete = True


def server_timing(raw: bytes) -> bytes | None:
    """The Server-Timing header of an answer's head in ``raw`` (several joined by ", "), or None."""
    end = raw.find(b"\r\n\r\n")
    head = raw[:end] if end >= 0 else raw
    low = head.lower()
    at = low.find(b"\r\nserver-timing:")
    if at < 0:
        return None
    values = []
    while at >= 0:
        start = at + 16
        stop = head.find(b"\r\n", start)
        values.append(head[start : stop if stop >= 0 else len(head)].strip(b" \t"))
        at = low.find(b"\r\nserver-timing:", start)
    return b", ".join(values)


def _shutdown(transport: asyncio.Transport) -> None:
    """Shut a connection down now (a FIN to the server), not on the event loop's next turn. The transport's
    socket object does not allow ``shutdown``: a socket object over the same descriptor does, and is detached
    (the transport still owns and closes the descriptor)."""
    handle = transport.get_extra_info("socket")
    if handle is None:
        return
    sock = socket.socket(handle.family, handle.type, 0, handle.fileno())
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


class Conn(_Response, asyncio.Protocol):
    """One HTTP/1.1 connection on the event loop: writes a request, parses the response as it arrives, hands
    it to the engine (closed loop, and open loop where deferred reads are not available)."""

    __slots__ = ("transport",)

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.transport: asyncio.Transport | None = None

    def shut(self, abort: bool = False) -> None:
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort() if abort else transport.close()

    # asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.took(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.engine.failed_request(self, exc, None)
            return
        if self.complete:
            self.complete = False
            if self.keep_alive or self.transport is None or self.engine.ssl is not None:
                self.engine.response(self, self.parser.get_status_code(), self.keep_alive)
                return
            # The server closes after this answer, and may wait for our close before it takes its next
            # connection (gunicorn's lingering close): close at once, before the bookkeeping and before the
            # transport's own close, which the event loop carries out only on its next turn. (Not under TLS,
            # whose close sends a close_notify through the socket first.)
            end_ns = time.perf_counter_ns()
            _shutdown(self.transport)
            self.engine.response(self, self.parser.get_status_code(), False, end_ns)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.engine.lost(self, exc)


class RawConn(_Response):
    """Open loop over plain HTTP with deferred reads: a non-blocking socket in the engine's own epoll set,
    which the event loop does not watch while a connection is free.

    An answer does not wake the generator. It is read at the next wake-up the generator has anyway (a slot's
    timer, the 4 Hz flush, the drain): one ``epoll_wait(0)`` names the sockets with something to read. Its
    end time is the kernel's receive timestamp of its last bytes (``SO_TIMESTAMPNS``), not the time of the
    read. So each paced request costs one wake-up, not two (one wake-up costs ~20-30 µs of CPU on this
    project's VM: docs/measurements/load-engines.md). The engine wakes on answers (the epoll set's own
    descriptor on the event loop) only when every connection is busy. Once the server has closed a
    connection after its answer, every answer wakes the generator (the epoll set stays on the event loop)
    and its socket is closed as soon as it is parsed: such a server may wait for the client's close before
    it takes the next connection (gunicorn's lingering close), so a late read would be the server's latency.
    The connections stay raw sockets then: connect and request in two calls, a close in one, no transport
    or task per connection (near the server's capacity ~20 % less CPU per request than ``Conn``s, and a
    higher compare figure: docs/measurements/load-engines.md). The closed loop starts on ``Conn``s and, once
    the server has closed a connection after its answer, opens RawConns in the same way (the epoll set on the
    event loop, each answer read on arrival and the next request sent at once on a fresh socket)."""

    __slots__ = ("sock", "writing")

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.sock: Any = None  # a socket.socket once connecting (tests pass a fake)
        self.writing = False  # the rest of a request waits for the socket to be writable

    def shut(self, abort: bool = False) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            if self.writing:
                self.engine.loop.remove_writer(sock.fileno())
                self.writing = False
            self.engine.unwatch(sock)
            sock.close()  # (closing it also takes it out of the epoll set)


def deferred_reads_wanted(environ: dict[str, str] | None = None) -> bool:
    """``DEPLOYBENCH_LEAN_READS``: ``deferred`` (the default; used where the platform allows) or
    ``on-arrival`` (every answer wakes the generator, as before deferred reads)."""
    value = (os.environ if environ is None else environ).get(READS_ENV, "").strip().lower() or "deferred"
    if value not in ("deferred", "on-arrival"):
        raise UsageError(f"{READS_ENV}={value!r}: use deferred or on-arrival")
    return value == "deferred"


def deferred_reads_available() -> bool:
    """Whether this platform gives TCP receive timestamps (Linux: ``SO_TIMESTAMPNS``, ``recvmsg``)."""
    if not sys.platform.startswith("linux") or not _ANC_BYTES:
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            return bool(probe.getsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS))
    except OSError:
        return False


# -- the engine (one process) --------------------------------------------------------------------------------
@dataclass
class EngineSpec:
    """What one lean generator process runs (written as JSON by ``run_lean``)."""

    url: str
    scenario: str
    load_model: str = "closed"
    connections: int = 8
    rate_rps: float = 0.0  # this process's share
    warmup_s: float = 0.0
    duration_s: float = 10.0
    max_lag_s: float = 5.0
    max_requests: int = 0
    seed: int = 0
    worker_index: int = 0
    worker_count: int = 1
    scenario_options: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    state_path: str = ""
    save_interval_s: float = 2.0
    abort_after_errors: int = 200
    drain_s: float = DRAIN_TIMEOUT_S
    request_timeout_s: float = REQUEST_TIMEOUT_S
    deferred_reads: bool = True  # open loop over http on Linux: answers read at wake-ups, kernel-timestamped

    @property
    def open_loop(self) -> bool:
        return self.load_model in OPEN_LOOP_MODELS


class Engine:
    """Drives the connections of one process, paces open-loop slots and feeds the Measurement."""

    def __init__(self, spec: EngineSpec, plan: RequestPlan) -> None:
        self.spec = spec
        self.plan = plan
        parts = urllib.parse.urlsplit(spec.url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":  # as Locust's FastHttpUser (insecure = True): no certificate check
            self.ssl = ssl.create_default_context()
            self.ssl.check_hostname = False
            self.ssl.verify_mode = ssl.CERT_NONE
        self.loop: asyncio.AbstractEventLoop = asyncio.get_event_loop()
        self.measurement: Measurement | None = None
        self.schedule: ArrivalSchedule | None = None
        # plain HTTP where the kernel timestamps received bytes: the engine may use its own sockets (RawConn)
        raw = spec.deferred_reads and self.ssl is None and deferred_reads_available()
        # open loop: answers are read at the generator's own wake-ups (RawConn), else as they arrive (Conn, on
        # the event loop); closed loop: Conns, until the server closes a connection after its answer
        self.deferred = spec.open_loop and raw
        self.raw_on_close = raw and not spec.open_loop
        self.idle: list[Any] = []  # Conn, or RawConn with deferred reads
        self.conns: set[Any] = set()
        self._addr: tuple[int, Any] | None = None
        self._poller: Any = select.epoll() if self.deferred else None  # RawConns' sockets
        self._by_fd: dict[int, RawConn] = {}
        self.awaiting = False  # deferred reads, every connection busy: the epoll set is on the event loop
        # deferred reads: a slot was due with every connection busy, so the pacer stopped its timer and waits
        # for an answer's wake-up; a connection freed elsewhere (an answer taken in by the flush's reap, a
        # failed request) must wake it, since the answer it waited for may be read already
        self.starved = False
        # the server closed a connection after its answer: it may wait for our close (gunicorn's lingering
        # close waits up to 2 s), so from then on every answer wakes the generator (deferred reads), and the
        # closed loop's new connections are RawConns too
        self.prompt = False
        self.connecting = 0
        self.batch = Batch()
        self.seq = itertools.cycle(plan.picks)
        self.sending = False
        self.failed: str | None = None
        self.interrupted = False
        self.consecutive_conn_errors = 0
        self.done = asyncio.Event()
        self.timer: PreciseTimer | None = None
        self.period_ns = 0  # open loop, constant arrivals: the slots' spacing (the timer repeats)
        self.cpu0_s = 0.0
        self.wall0_ns = 0
        self.window_end_ns = 0
        self.finishing = False

    # -- sending ---------------------------------------------------------------------------------------------
    def _send(self, conn: Conn, start_ns: int, slot: int) -> None:
        label, raw = self.plan.picks[slot % len(self.plan.picks)] if slot >= 0 else next(self.seq)
        send_ns = time.perf_counter_ns()
        if slot >= 0 and self.schedule is not None:
            self.schedule.sent_count += 1
            lag = send_ns - start_ns
            if lag > self.schedule.late_tolerance_ns:
                self.schedule.late += 1
            if lag > self.schedule.max_lag_seen_ns:
                self.schedule.max_lag_seen_ns = lag
        else:
            start_ns = send_ns
        conn.item = (label, start_ns, send_ns, slot)
        if isinstance(conn, RawConn):
            self._send_raw(conn, raw)
        elif conn.transport is None:
            conn.raw = raw
            self._connect(conn)
        else:
            conn.transport.write(raw)

    def _new_conn(self) -> Any:
        return RawConn(self) if self._poller is not None else Conn(self)

    def _send_raw(self, conn: RawConn, raw: bytes) -> None:
        """Deferred reads: write the request on the connection's socket (connecting it first if need be)."""
        try:
            if conn.sock is None:
                conn.sock = self._open_socket()
                self.watch(conn)
            sent = conn.sock.send(raw)
        except BlockingIOError:  # still connecting (a remote server), or the socket's buffer is full
            sent = 0
        except OSError as exc:
            self.failed_request(conn, exc, None)
            return
        if sent < len(raw):
            self._write_rest(conn, memoryview(raw)[sent:])

    def _open_socket(self) -> Any:
        """A non-blocking TCP socket to the target with receive timestamps on, its connect started."""
        if self._addr is None:
            family, _, _, _, addr = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)[0]
            self._addr = (family, addr)
        family, addr = self._addr
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            err = sock.connect_ex(addr)
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))  # (picks the subclass: ConnectionRefusedError ...)
        except BaseException:
            sock.close()
            raise
        return sock

    def _write_rest(self, conn: RawConn, rest: memoryview) -> None:
        """The part of a request the socket did not take at once, written as it becomes writable."""
        sock = conn.sock
        fd = sock.fileno()
        left = rest

        def writable() -> None:
            nonlocal left
            if conn.sock is not sock:  # retired meanwhile (its shut removed this writer)
                return
            try:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                left = left[sock.send(left) :]
            except BlockingIOError:
                return
            except OSError as exc:
                self.loop.remove_writer(fd)
                conn.writing = False
                self.failed_request(conn, exc, None)
                return
            if not left:
                self.loop.remove_writer(fd)
                conn.writing = False

        conn.writing = True
        self.loop.add_writer(fd, writable)

    def watch(self, conn: RawConn) -> None:
        fd = conn.sock.fileno()
        self._poller.register(fd, select.EPOLLIN | select.EPOLLRDHUP)
        self._by_fd[fd] = conn

    def unwatch(self, sock: Any) -> None:
        self._by_fd.pop(sock.fileno(), None)

    def readable(self) -> list[tuple[RawConn, int]]:
        """Deferred reads: the connections with something to read, and their epoll events (one
        ``epoll_wait`` with no timeout)."""
        by_fd = self._by_fd
        return [(by_fd[fd], ev) for fd, ev in self._poller.poll(0) if fd in by_fd]

    def await_answers(self, on: bool) -> None:
        """Deferred reads: wake on the first answer (every connection busy) or not (the pacer's timer)."""
        if on != self.awaiting:
            self.awaiting = on
            fd = self._poller.fileno()
            self.loop.add_reader(fd, self.pace) if on else self.loop.remove_reader(fd)

    def reap(self) -> None:
        """Deferred reads: take in every answer that has arrived, each timed by the kernel's receive
        timestamp of its last bytes (CLOCK_REALTIME, mapped onto perf_counter_ns once per call). An idle
        connection with something to read was closed by the server (keep-alive timeout) or sent bytes nobody
        asked for, or answered and then closed: it is replaced."""
        if self._poller is None:
            return
        offset_ns: int | None = None
        for conn, events in self.readable():
            sock = conn.sock
            if sock is None:
                continue
            if conn.item is None:  # idle
                self._retire_idle(conn)
                continue
            end_ns: int | None = None
            while True:
                try:
                    data, anc, _flags, _addr = sock.recvmsg(READ_BYTES, _ANC_BYTES)
                except BlockingIOError:
                    break
                except OSError as exc:
                    self.failed_request(conn, exc, None)
                    break
                if not data:
                    self.failed_request(conn, ConnectionResetError("connection closed by the server"), None)
                    break
                if anc:
                    if offset_ns is None:
                        offset_ns = time.clock_gettime_ns(time.CLOCK_REALTIME) - time.perf_counter_ns()
                    sec, nsec = _TIMESPEC.unpack_from(anc[-1][2])
                    end_ns = sec * NS_PER_S + nsec - offset_ns
                conn.took(data)
                try:
                    conn.parser.feed_data(data)
                except httptools.HttpParserError as exc:
                    self.failed_request(conn, exc, None)
                    break
                if conn.complete:
                    conn.complete = False
                    if not conn.keep_alive:  # the server closes after this answer and may wait for our
                        conn.shut()  # close (gunicorn's lingering close): close at once, then book it
                    self.response(conn, conn.parser.get_status_code(), conn.keep_alive, end_ns)
                    if events & _CLOSED and conn.sock is sock:  # answered, then closed by the server
                        self._retire_idle(conn)
                    break
                if len(data) < READ_BYTES:
                    break

    def _retire_idle(self, conn: Any) -> None:
        """A connection the server closed with no request on it: replaced (in the idle list if there)."""
        if conn in self.idle:
            self.idle.remove(conn)
            self.idle.append(self._replace(conn))
        else:
            self._replace(conn)

    def _connect(self, conn: Conn) -> None:
        self.connecting += 1
        self.loop.create_task(self._open(conn))

    async def _open(self, conn: Conn) -> None:
        # no wait_for (a task more per connection): a connect that hangs is failed by the watchdog, since
        # the request's clock started before the connect
        try:
            await self.loop.create_connection(lambda: conn, self.host, self.port, ssl=self.ssl)
        except (OSError, ssl.SSLError) as exc:
            self.connecting -= 1
            if conn in self.conns:
                self.failed_request(conn, exc, None)
            return
        self.connecting -= 1
        if conn not in self.conns:  # failed by the watchdog meanwhile, or the run ended
            if conn.transport is not None:
                conn.transport.abort()
            return
        if conn.item is not None and conn.transport is not None:
            conn.transport.write(conn.raw)

    def _next(self, conn: Conn) -> None:
        """A connection is free: closed loop, send the next request; open loop, the next due slot or idle."""
        if not self.sending:
            self.idle.append(conn)
            return
        if self.schedule is None:
            self._send(conn, 0, -1)
            return
        if isinstance(conn, RawConn):  # (deferred reads: the pacer's next wake-up)
            self.idle.append(conn)
            if self.starved:  # freed outside the pacer (a flush, a failure) while it waits for a connection
                self.starved = False
                self.loop.call_soon(self.pace)
            return
        self.idle.append(conn)
        self.pace()

    def pace(self) -> None:
        """Open loop: give every due slot a free connection; arm the timer for the next slot. With deferred
        reads, first take in the answers that have arrived; when a slot is due and every connection is
        busy, wake on the first answer."""
        schedule, m = self.schedule, self.measurement
        if schedule is None or m is None or not self.sending:
            if self.prompt:  # answers are read on arrival until the run ends (the drain too)
                self.reap()
            elif self.awaiting:
                self.await_answers(False)
            return
        if self.deferred:
            self.starved = False
            self.reap()
        now = time.perf_counter_ns()
        idle = self.idle
        while idle or self.deferred:
            due = schedule.next_due_ns()
            if due is None:
                self._schedule_done()
                if self.awaiting and not self.prompt:
                    self.await_answers(False)
                return
            assert self.timer is not None
            if due > now:
                self.timer.at(due, self.period_ns)
                if self.awaiting and not self.prompt:  # the timer's wake-up reads the answers
                    self.await_answers(False)
                return
            if not idle:  # deferred reads, every connection busy: wake on the first answer (stays on while
                self.await_answers(True)  # saturated: no epoll_ctl per answer)
                self.timer.stop()  # (a repeating timer would wake for every slot meanwhile)
                self.starved = True
                return
            slot = schedule.take(now)
            dropped = schedule.pop_dropped()
            if dropped:
                label = self.plan.labels[self.plan.picks[schedule.next_index % len(self.plan.picks)][0]]
                for t in dropped:
                    m.add_unsent(label, start_ns=t, kind=DROPPED)
            if slot is None:
                if schedule.exhausted:
                    self._schedule_done()
                continue
            self._send(idle.pop(), slot.intended_ns, slot.index)
            now = time.perf_counter_ns()

    def _schedule_done(self) -> None:
        """max_requests slots used up: stop sending (the window still closes on time)."""
        self.sending = False
        if self.timer is not None:
            self.timer.stop()

    # -- answers ---------------------------------------------------------------------------------------------
    def response(self, conn: Any, status: int, keep_alive: bool, end_ns: int | None = None) -> None:
        """An answer: ``end_ns`` its kernel receive time (deferred reads), else now."""
        now_ns = time.perf_counter_ns()
        item = conn.item
        if end_ns is None or item is None or not item[2] <= end_ns <= now_ns:
            end_ns = now_ns
        if not keep_alive and not self.prompt and (isinstance(conn, RawConn) or self.raw_on_close):
            if self._poller is None:  # closed loop: the next connections are the engine's own sockets
                self._poller = select.epoll()
            self.prompt = True  # from now on every answer wakes the generator (a late read, and so a late
            self.await_answers(True)  # close, would hold up a server that waits for it)
        conn.item = None
        head, conn.head = conn.head, None
        if item is not None:
            self.consecutive_conn_errors = 0
            if status < 400:
                b = self.batch
                timing = server_timing(head) if head else None
                if timing:
                    b.timing(len(b.end), timing)
                b.label.append(item[0])
                b.start.append(item[1])
                b.send.append(item[2])
                b.end.append(end_ns)
            else:
                self._error(item, end_ns, f"http-{status}")
        if not keep_alive:  # the server closes after this answer: the next request goes on a new connection
            conn = self._replace(conn)
        self._next(conn)

    def _replace(self, conn: Any, abort: bool = False) -> Any:
        """Retire ``conn`` (close it; a late ``connection_lost`` finds no request) and return a fresh,
        unconnected one in its place."""
        conn.item = None
        conn.shut(abort)
        self.conns.discard(conn)
        fresh = self._new_conn()
        self.conns.add(fresh)
        return fresh

    def failed_request(self, conn: Any, exc: BaseException, status: int | None) -> None:
        end_ns = time.perf_counter_ns()
        item = conn.item
        conn = self._replace(conn, abort=True)
        if item is not None:
            kind = error_kind(exc, status) or "error-unknown"
            self._error(item, end_ns, kind)
            if kind in ("connection-refused", "connection-reset", "timeout"):
                self.consecutive_conn_errors += 1
                limit = self.spec.abort_after_errors
                if limit and self.consecutive_conn_errors >= limit and self.failed is None:
                    self.failed = f"target unreachable: {limit} consecutive connection errors (last: {kind})"
                    self.loop.call_soon(self.finish)
                    return
        self.loop.call_soon(self._next, conn)

    def lost(self, conn: Conn, exc: Exception | None) -> None:
        if conn.item is not None and conn in self.conns:  # closed while a request was in flight
            self.failed_request(conn, exc or ConnectionResetError("connection closed by the server"), None)
        elif conn in self.conns and conn in self.idle:  # an idle keep-alive connection the server closed
            self._retire_idle(conn)

    def _error(self, item: tuple[int, int, int, int], end_ns: int, kind: str) -> None:
        m = self.measurement
        if m is None:
            return
        label, start_ns, send_ns, _ = item
        m.add(self.plan.labels[label], start_ns=start_ns, latency_us=(end_ns - send_ns + 500) // 1000,
              send_delay_us=(send_ns - start_ns) // 1000, error=kind)  # fmt: skip

    # -- batches into the histograms -------------------------------------------------------------------------
    def flush(self) -> None:
        if self._poller is not None:
            self.reap()
        m, b = self.measurement, self.batch
        if m is None or not b.end:
            return
        self.batch = Batch()
        labels = np.array(b.label, dtype=np.int64)
        start = np.array(b.start, dtype=np.int64)
        send = np.array(b.send, dtype=np.int64)
        latency = (np.array(b.end, dtype=np.int64) - send + 500) // 1000
        delay = (send - start) // 1000 if m.open_loop else None
        comps = b.columns(len(b.end))
        for i, name in enumerate(self.plan.labels):
            sel = labels == i if len(self.plan.labels) > 1 else slice(None)
            m.add_successes(
                name, start_ns=start[sel], latency_us=latency[sel],
                send_delay_us=delay[sel] if delay is not None else None,
                server_timing_us={k: v[sel] for k, v in comps.items()},
            )  # fmt: skip

    def in_flight(self) -> list[Conn]:
        return [c for c in self.conns if c.item is not None]

    def watchdog(self) -> None:
        limit_ns = round(self.spec.request_timeout_s * NS_PER_S)
        now = time.perf_counter_ns()
        for c in self.in_flight():
            if c.item is not None and now - c.item[2] > limit_ns:
                self.failed_request(c, TimeoutError("no answer within the request timeout"), None)

    # -- the run ---------------------------------------------------------------------------------------------
    def snapshot(self, final: bool = False) -> dict[str, Any]:
        m = self.measurement
        assert m is not None
        if self.schedule is not None:
            m.pacing = self.schedule.counters()
        info = {
            "engine": ENGINE,
            "role": "local" if self.spec.worker_count == 1 else "worker",
            "worker_index": self.spec.worker_index,
            "worker_count": self.spec.worker_count,
            "pid": os.getpid(),
            "connections": self.spec.connections,
            "reads": "on-arrival" if not self.deferred else "deferred" if not self.prompt else PROMPT_READS,
            "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            **cpu_usage(self.cpu0_s, self.wall0_ns, m.answered()),
        }
        if self.schedule is not None:
            info["rate_rps"] = self.schedule.rate_rps
        state = m.to_wire(time.perf_counter_ns(), info)
        state["final"] = final
        state["failed"] = self.failed
        state["interrupted"] = self.interrupted
        return state

    def save(self, final: bool = False) -> None:
        """Write the state file. A periodic save does not flush first: the 4 Hz flush keeps what it writes
        within 250 ms of now, and the save's own pause (encoding the histograms, ~1-1.5 ms on this project's
        VM) is not added to a flush's."""
        if self.spec.state_path and self.measurement is not None:
            if final:
                self.flush()
            write_atomic(self.spec.state_path, json.dumps(self.snapshot(final)))

    def start(self, now_ns: int, timer: Any = None) -> None:
        """Open the window (warm-up first), the schedule (open loop) and the connections, and send: closed
        loop, a request on every connection; open loop, the slots due. ``timer``: the pacer's wake-ups
        (default a ``PreciseTimer``; tests pass a fake)."""
        spec = self.spec
        self.cpu0_s, self.wall0_ns = process_cpu_s(), now_ns
        window_start = now_ns + round(spec.warmup_s * NS_PER_S)
        self.window_end_ns = window_start + round(spec.duration_s * NS_PER_S)
        self.measurement = Measurement(open_loop=spec.open_loop, window_start_ns=window_start)
        if spec.open_loop:
            self.schedule = ArrivalSchedule(
                spec.rate_rps, spec.load_model, seed=spec.seed, worker_index=spec.worker_index,
                worker_count=spec.worker_count, max_lag_s=spec.max_lag_s, max_requests=spec.max_requests,
                window_start_ns=window_start, window_end_ns=self.window_end_ns,
            )  # fmt: skip
            self.timer = timer if timer is not None else PreciseTimer(self.loop, self.pace)
            if spec.load_model == "constant":  # evenly spaced slots: the timer repeats on its own
                self.period_ns = math.ceil(NS_PER_S / self.schedule.rate_rps)
        self.sending = True
        for _ in range(spec.connections):
            conn = self._new_conn()
            self.conns.add(conn)
            if spec.open_loop:
                self.idle.append(conn)
            else:
                self._send(conn, 0, -1)
        if self.schedule is not None:
            self.schedule.start(now_ns)
            self.pace()

    async def run(self) -> None:
        spec = self.spec
        self.start(time.perf_counter_ns())
        # the save runs half a flush period after a flush, so that their pauses do not add up
        tasks = [self._every(FLUSH_S, self.flush), self._every(WATCHDOG_S, self.watchdog),
                 self._every(spec.save_interval_s, self.save, FLUSH_S / 2)]  # fmt: skip
        background = [self.loop.create_task(t) for t in tasks]
        end_handle = self.loop.call_later((self.window_end_ns - time.perf_counter_ns()) / 1e9, self.finish)
        await self.done.wait()
        end_handle.cancel()
        for t in background:
            t.cancel()
        if self.timer is not None:
            self.timer.close()
        if self.awaiting:
            self.await_answers(False)
        for c in self.conns:
            c.shut(abort=True)
        self.flush()
        if self._poller is not None:
            self._poller.close()
            self._poller = None

    async def _every(self, period_s: float, fn: Any, offset_s: float = 0.0) -> None:
        if offset_s:
            await asyncio.sleep(offset_s)
        while True:
            await asyncio.sleep(period_s)
            fn()

    def finish(self) -> None:
        """Close the window (now, or at its planned end if that came first), let requests in flight answer
        (bounded), seal the counts and end the run. Idempotent."""
        if self.finishing:
            return
        early_ns = self.window_end_ns - time.perf_counter_ns()
        if early_ns > 0 and not (self.interrupted or self.failed):  # the ms timer fired early: not yet
            self.loop.call_later(early_ns / 1e9 + 0.0005, self.finish)
            return
        self.pace()  # slots due by now get their sends first
        self.finishing = True
        self.sending = False
        if self.timer is not None:
            self.timer.stop()
        m = self.measurement
        if m is None:
            self.done.set()
            return
        self.flush()
        m.close(min(time.perf_counter_ns(), self.window_end_ns))
        if self.schedule is not None and not self.schedule.closed:
            assert m.window_end_ns is not None
            pending = self.schedule.close(m.window_end_ns)
            for t in pending:
                m.add_unsent(self.plan.labels[0], start_ns=t, kind=NOT_SENT)
        self.loop.create_task(self._drain())

    async def _drain(self) -> None:
        deadline = time.monotonic() + (self.spec.drain_s if self.failed is None else 0.0)
        while True:
            if self._poller is not None:
                self.reap()
            if not (self.in_flight() and time.monotonic() < deadline):
                break
            await asyncio.sleep(0.01)
        self.flush()
        m = self.measurement
        assert m is not None
        if m.open_loop:
            for c in self.in_flight():
                item = c.item
                assert item is not None
                c.item = None
                if item[1] < (m.window_end_ns or 0):
                    m.add_unsent(self.plan.labels[item[0]], start_ns=item[1], kind=UNFINISHED)
            m.sealed = True
        self.done.set()


class Batch:
    """The successes answered since the last flush, as flat lists (a response appends four integers and,
    when it has one, its Server-Timing components: no Python object per request to build later, so a flush
    is a few numpy calls). Server-Timing headers are parsed as they are booked (one regex call per header),
    not at the flush: parsed there, they made a 4 Hz flush of a few hundred answers hold the loop for
    1.1-1.3 ms, long enough to send the next paced slots late (docs/measurements/load-engines.md, "The
    flush's pause")."""

    __slots__ = ("end", "label", "send", "start", "timing_cols")

    def __init__(self) -> None:
        self.label: list[int] = []
        self.start: list[int] = []
        self.send: list[int] = []
        self.end: list[int] = []
        self.timing_cols: dict[bytes, tuple[list[int], list[float]]] = {}  # component -> (result index, ms)

    def timing(self, i: int, header: bytes) -> None:
        """Book result ``i``'s Server-Timing header (every component with a duration)."""
        st = self.timing_cols
        for name, dur in _ST_ENTRY.findall(header):
            col = st.get(name)
            if col is None:
                col = st[name] = ([], [])
            col[0].append(i)
            col[1].append(float(dur))

    def columns(self, n: int) -> dict[str, np.ndarray]:
        """One column of µs per Server-Timing component over the batch's ``n`` results (-1: absent)."""
        out: dict[str, np.ndarray] = {}
        for name, (index, ms) in self.timing_cols.items():
            col = np.full(n, -1, dtype=np.int64)
            col[np.array(index, dtype=np.int64)] = np.rint(np.array(ms) * 1000.0).astype(np.int64)
            out[name.decode("latin-1")] = col
        return out


def _server_timing_columns(timings: list[bytes | None]) -> dict[str, np.ndarray]:
    """Server-Timing headers -> one column of µs per component (-1 where a header lacks it)."""
    b = Batch()
    for i, header in enumerate(timings):
        if header:
            b.timing(i, header)
    return b.columns(len(timings))


def warm_up_flush() -> None:
    """Take a flush's code paths once on throwaway data, before the run: the first ``add_successes`` in a
    process took ~14 ms on this project's VM (numpy sets up ``unique`` and ``ctypeslib`` on first use), and in
    the run's first flush (or the first to span two blocks) that pause sent the paced slots behind it late."""
    b = Batch()
    for i in range(2):
        b.timing(i, b"warm-up;dur=0.1")
    m = Measurement(open_loop=True, window_start_ns=0)
    start = np.array([1, 2 * NS_PER_S], dtype=np.int64)  # (in two blocks)
    m.add_successes("warm-up", start_ns=start, latency_us=np.array([1, 2]), send_delay_us=np.array([0, 0]),
                    server_timing_us=b.columns(2))  # fmt: skip


def run_engine(spec: EngineSpec, plan: RequestPlan | None = None) -> dict[str, Any]:
    """Run one generator process's share to the end (in this process: ``python -m
    deploybench.loadtests.lean`` runs it for ``run_lean``, the overhead benchmark calls it directly with its
    own ``plan``); returns the final snapshot (also saved to ``spec.state_path`` when set)."""
    try:
        import uvloop  # import cost: only the generator process needs it

        uvloop.install()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        pass
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if plan is None:
        headers = {**merge_headers(os.environ.get(HEADERS_ENV, ""), None), **spec.headers}
        plan = build_plan(spec.scenario, spec.url, options=spec.scenario_options, headers=headers,
                          seed=spec.seed, generator_index=spec.worker_index)  # fmt: skip
    engine = Engine(spec, plan)
    warm_up_flush()
    # The run allocates little that is cyclic: the set-up's objects are frozen out of the collector and
    # its young generation is collected 50x less often, so no collection pauses the loop mid-request.
    gc.collect()
    gc.freeze()
    gc.set_threshold(35_000, 50, 100)

    def stop(*_: Any) -> None:
        engine.interrupted = True
        loop.call_soon_threadsafe(engine.finish)

    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
    try:
        loop.run_until_complete(engine.run())
    finally:
        engine.save(final=True)
        if main_thread:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        loop.close()
        asyncio.set_event_loop(None)
    return engine.snapshot(final=True)


def raw_request_plan(label: str, raw: bytes) -> RequestPlan:
    """A plan of one request given as bytes (head + body), e.g. the overhead benchmark's."""
    return RequestPlan([label], [(0, raw)])


def main(argv: list[str] | None = None) -> int:
    """``python -m deploybench.loadtests.lean SPEC.json``: run one generator process (started by
    ``run_lean``)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m deploybench.loadtests.lean SPEC.json", file=sys.stderr)
        return 2
    spec = EngineSpec(**json.loads(Path(args[0]).read_text()))
    run_engine(spec)
    return 0


def spec_json(spec: EngineSpec) -> str:
    return json.dumps(asdict(spec))


# -- the parent: start the generator processes, merge their states into the record ---------------------------
def process_shares(total: int, processes: int) -> list[int]:
    """``total`` (connections, or max requests) over ``processes`` generators, as even as can be."""
    base, extra = divmod(total, processes)
    return [base + (i < extra) for i in range(processes)]


def generator_cpu_sets(cpus: list[int] | None, processes: int) -> list[list[int] | None]:
    """Each generator process's CPUs: one core each, round robin over ``cpus`` (None: unpinned)."""
    if not cpus:
        return [None] * processes
    if processes == 1:
        return [list(cpus)]
    return [[cpus[i % len(cpus)]] for i in range(processes)]


def _read_state(path: Path) -> dict[str, Any] | None:
    return _read_state_timed(path)[0]


def _read_state_timed(path: Path) -> tuple[dict[str, Any] | None, float | None]:
    """A state file and its modification time (wall clock, s), both from the same open file."""
    try:
        with open(path, "rb") as f:
            mtime = os.fstat(f.fileno()).st_mtime_ns / 1e9
            state = json.loads(f.read())
    except (OSError, ValueError):
        return None, None
    return (state, mtime) if isinstance(state, dict) else (None, None)


# -- the parent's view while a run goes: CPU per time block and progress figures -----------------------------
CPU_SAMPLE_S = 0.5  # the parent reads the process trees' CPU times this often
TREE_RESCAN_S = 2.0  # and looks for new processes in the trees this often
PROGRESS_EVERY_S = 1.0  # at most one progress update a second (a record's figures are read, never decoded)


class TreeCpu:
    """Cumulative user + system CPU seconds of process trees (roots and their descendants), read with
    psutil; a process that exits keeps its last reading, so the total never goes back."""

    def __init__(self, pids: list[int]) -> None:
        import psutil  # import cost: the parent's alone; the engine processes never load it

        self._psutil = psutil
        self.root_pids = set(pids)
        self.roots: list[Any] = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                self.roots.append(psutil.Process(pid))
        self.members: dict[int, Any] = {}
        self.last: dict[int, float] = {}
        self._rescan_at = 0.0

    def total_s(self, now: float) -> float | None:
        ps = self._psutil
        if now >= self._rescan_at:
            self._rescan_at = now + TREE_RESCAN_S
            for root in self.roots:
                with contextlib.suppress(ps.Error):
                    for p in [root, *root.children(recursive=True)]:
                        self.members.setdefault(p.pid, p)
        for pid, p in list(self.members.items()):
            try:
                t = p.cpu_times()
            except ps.Error:
                del self.members[pid]
                if pid not in self.root_pids:  # reaped by its parent: now in that one's children_* times
                    self.last.pop(pid, None)
                continue
            self.last[pid] = t.user + t.system + t.children_user + t.children_system
        return sum(self.last.values()) if self.last else None


class RunMonitor:
    """What the parent process watches while a load runs (never the engine's hot path): the CPU of the
    generator's and the server's process trees every ``CPU_SAMPLE_S`` (-> the record's ``cpu_blocks``), and
    progress figures from the record it merges anyway (-> ``progress.update``, at most once a second).

    The window clock: a generator's snapshot says how long its window (or, lean, its run) has gone on; the
    file's modification time says when (the wall clock), so the window's start is placed on the wall clock to
    within the time a snapshot takes to write (milliseconds)."""

    def __init__(
        self,
        *,
        warmup_s: float,
        duration_s: float,
        progress: Any = None,
        server_pid: int | None = None,
        clock: Any = time.time,
    ) -> None:
        self.warmup_s = float(warmup_s)
        self.duration_s = float(duration_s)
        self.progress = progress
        self.clock = clock
        self.started = clock()
        self.generator: TreeCpu | None = None
        self.server = TreeCpu([server_pid]) if server_pid else None
        self.samples: list[tuple[float, float | None, float | None]] = []
        self.window_start: float | None = None  # the measured window's start on the wall clock
        self._next_sample = 0.0
        self._next_progress = 0.0

    def set_generator_pids(self, pids: list[int]) -> None:
        self.generator = TreeCpu(pids)
        self.sample(force=True)

    def sample(self, force: bool = False) -> None:
        now = self.clock()
        if not force and now < self._next_sample:
            return
        self._next_sample = now + CPU_SAMPLE_S
        gen = self.generator.total_s(now) if self.generator is not None else None
        srv = self.server.total_s(now) if self.server is not None else None
        self.samples.append((self.clock(), gen, srv))

    def anchor(self, mtime: float | None, window_elapsed_s: float | None) -> None:
        """The window started ``window_elapsed_s`` before ``mtime`` (first estimate kept)."""
        if self.window_start is None and mtime is not None and window_elapsed_s is not None:
            self.window_start = mtime - window_elapsed_s

    def report(self, series: list[Any], finishing: bool = False, force: bool = False) -> None:
        """Progress figures from a (running) record's series, at most once a second."""
        if self.progress is None:
            return
        now = self.clock()
        if not force and now < self._next_progress:
            return
        self._next_progress = now + PROGRESS_EVERY_S
        from deploybench.progress import figures_from_series  # import cost: the parent's alone, as psutil

        elapsed = now - self.started
        if self.window_start is not None:  # the generator's own clock, once known
            elapsed = now - self.window_start + self.warmup_s
        self.progress.update(
            figures_from_series(series, max(0.0, elapsed), self.warmup_s + self.duration_s, self.warmup_s,
                                finishing=finishing)
        )  # fmt: skip

    def cpu_blocks(self, series: list[Any], window_s: float | None = None) -> list[dict[str, Any]] | None:
        """CPU per block on the series blocks' edges (the first series', else 1 s edges over the window),
        warm-up blocks first (negative ``start_s``); only intervals the samples cover."""
        if self.window_start is None or len(self.samples) < 2:
            return None
        edges: list[tuple[float, float]] = []
        blocks = next((s.blocks for s in series if s.blocks), None)
        if blocks:
            edges = [(float(b["start_s"]), float(b["duration_s"])) for b in blocks]
        else:
            w = float(window_s if window_s is not None else max((s.duration_s or 0.0 for s in series),
                                                                default=0.0))  # fmt: skip
            k = 0
            while k < w - 1e-9:
                edges.append((float(k), min(1.0, w - k)))
                k += 1
        first_t = self.samples[0][0] - self.window_start
        warm = []
        k = -1
        while k >= first_t - 1e-9:
            warm.append((float(k), 1.0))
            k -= 1
        spans = [(start, dur) for start, dur in [*reversed(warm), *edges] if dur > 0]
        t0 = np.array([self.window_start + start for start, _ in spans], dtype=np.float64)
        t1 = t0 + np.array([dur for _, dur in spans], dtype=np.float64)
        gen, srv = self._percents(1, t0, t1), self._percents(2, t0, t1)
        out = []
        for (start, dur), g, v in zip(spans, gen, srv, strict=True):
            if g is None and v is None:
                continue
            out.append({"start_s": round(start, 6), "duration_s": round(dur, 6),
                        "generator_cpu_percent": g, "server_cpu_percent": v})  # fmt: skip
        return out or None

    def _percents(self, col: int, t0: np.ndarray, t1: np.ndarray) -> list[float | None]:
        """CPU % of column ``col`` over each [t0, t1]: the cumulative CPU seconds interpolated linearly at
        the edges; None where the samples do not cover the interval."""
        pts = [(s[0], s[col]) for s in self.samples if s[col] is not None]
        if len(pts) < 2:
            return [None] * len(t0)
        t = np.array([p[0] for p in pts], dtype=np.float64)
        v = np.maximum.accumulate(np.array([p[1] for p in pts], dtype=np.float64))
        pct = (np.interp(t1, t, v) - np.interp(t0, t, v)) / (t1 - t0) * 100.0
        covered = (t0 >= t[0] - 1e-6) & (t1 <= t[-1] + 1e-6)
        return [round(max(0.0, float(p)), 1) if ok else None for p, ok in zip(pct, covered, strict=True)]


def exited(proc: subprocess.Popen[bytes], monitor: RunMonitor | None = None) -> bool:
    """Has ``proc`` ended? When it has, the monitor takes a last sample before it is reaped (a zombie's CPU
    times can still be read, a reaped process's cannot), then it is reaped (``poll``)."""
    if proc.returncode is not None:
        return True
    if monitor is not None:
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except (OSError, AttributeError):
            info = None
        if info is not None:
            monitor.sample(force=True)
    return proc.poll() is not None


def run_lean(
    url: str,
    scenario: str,
    *,
    options: LoadOptions,
    connections: int,
    processes: int,
    record_path: Path,
    scenario_opts: dict[str, Any] | None = None,
    generator_cpus: list[int] | None = None,
    server: Any = None,
    run_time_s: float = 600.0,
    env: dict[str, str] | None = None,
    log_path: Path | None = None,
    progress: Any = None,
    server_pid: int | None = None,
) -> tuple[int, str | None]:
    """Run the lean engine: ``processes`` generator processes (at least 1), their states merged into the run
    record at ``record_path`` every ``options.save_interval_s`` ("running") and at the end. Stops early when
    ``server`` (an object with ``is_alive()``) dies. Returns (exit code: 0, or the first non-zero of the
    generator processes; why the target died, or None).

    ``progress``: a ``deploybench.progress.Progress`` sink, given the figures of the record as merged: when
    a generator wrote a new state (at most once a second), and at least every ``save_interval_s``. The
    record's ``cpu_blocks`` (at the end): the generator processes' CPU and, with ``server_pid``, the server's
    process tree's, sampled here (``RunMonitor``)."""
    n = max(1, int(processes))
    deferred = deferred_reads_wanted(env)
    conns = process_shares(max(connections, n), n)
    requests = process_shares(options.max_requests, n) if options.max_requests else [0] * n
    if scenario == "oip":  # the model's name and OIP metadata, read once here: a UsageError before any start
        resolved = oip_options(url, options.model, options.headers, scenario_opts)
        scenario_opts = {**(scenario_opts or {}), **resolved}
    work = record_path.with_name(record_path.stem + ".lean")
    work.mkdir(parents=True, exist_ok=True)
    scenario_opts = dict(scenario_opts or {})
    config = base_config(options, scenario, url, scenario_opts, engine=ENGINE)
    config["users"] = connections
    config["generator"].update(
        tool="deploybench-lean", mode="processes" if n > 1 else "local", processes=n, connections=connections,
        affinity=generator_cpus,
    )  # fmt: skip
    record = new_record(config, capture_env(generator_cpus), options)
    log_path = log_path or record_path.with_suffix(".lean.log")
    states = [work / f"state-{i}.json" for i in range(n)]
    procs: list[subprocess.Popen[bytes]] = []
    died: str | None = None

    monitor = RunMonitor(warmup_s=options.warmup_s, duration_s=options.duration_s, progress=progress,
                         server_pid=server_pid)  # fmt: skip

    def save(status: str, error: str | None = None) -> None:
        read = []
        for i, p in enumerate(states):
            st, mtime = _read_state_timed(p)
            if st is None:
                continue
            read.append(st)
            wall_s = (st.get("generator") or {}).get("wall_s")
            if i == 0 and wall_s:  # its run started wall_s before the write; its window warmup_s after that
                monitor.anchor(mtime, float(wall_s) - options.warmup_s)
        fill_record(record, Measurement.merge_wire(read), options, status, error)
        if status != "running":  # computed once, at the end (or when the run is stopped)
            record.cpu_blocks = monitor.cpu_blocks(record.series)
        record.save(record_path)

    with open(log_path, "ab") as log:
        try:
            for i, cpus in enumerate(generator_cpu_sets(generator_cpus, n)):
                spec = EngineSpec(
                    url=url, scenario=scenario, load_model=options.load_model, connections=conns[i],
                    rate_rps=options.rate_rps / n if options.open_loop else 0.0, warmup_s=options.warmup_s,
                    duration_s=options.duration_s, max_lag_s=options.max_lag_s, max_requests=requests[i],
                    seed=options.seed, worker_index=i, worker_count=n, scenario_options=scenario_opts,
                    state_path=str(states[i]), save_interval_s=options.save_interval_s,
                    abort_after_errors=options.abort_after_errors, deferred_reads=deferred,
                )  # fmt: skip
                spec_path = work / f"spec-{i}.json"
                write_atomic(spec_path, spec_json(spec))
                argv = [sys.executable, "-P", "-m", "deploybench.loadtests.lean", str(spec_path)]
                cmd = pinned_argv(argv, cpus, sys.executable)
                procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                              process_group=0))  # fmt: skip
            monitor.set_generator_pids([p.pid for p in procs])
            save("running")
            deadline = time.monotonic() + run_time_s + 60.0
            next_save = time.monotonic() + options.save_interval_s
            seen = _mtimes(states)
            while not all([exited(p, monitor) for p in procs]):
                monitor.sample()
                if server is not None and died is None and not server.is_alive():
                    died = "target process is gone"
                    _signal_all(procs, signal.SIGTERM)
                    deadline = min(deadline, time.monotonic() + 15.0)
                if time.monotonic() > deadline:
                    _stop_all(procs)
                    break
                # merged when a generator wrote a new state (each every save_interval_s), at most once a
                # second; at least every save_interval_s
                now = time.monotonic()
                fresh = now >= next_save - options.save_interval_s + 1.0 and _mtimes(states) != seen
                if now >= next_save or fresh:
                    seen = _mtimes(states)
                    save("running")
                    next_save = time.monotonic() + options.save_interval_s
                # the figures of the last save (no extra merge), the clock every second
                monitor.report(record.series)
                time.sleep(STATE_POLL_S)
            monitor.sample(force=True)
        except BaseException:
            _stop_all(procs)
            save("interrupted", "the load generator was stopped before the run ended")
            raise
    codes = [p.returncode for p in procs]
    finals = [_read_state(p) for p in states]
    failed = next((st["failed"] for st in finals if st and st.get("failed")), None)
    missing = [i for i, st in enumerate(finals) if not st or not st.get("final")]
    if failed:
        status, error = "failed", str(failed)
    elif missing:
        status = "failed"
        error = f"generator process(es) {missing} ended without a final state (exit codes {codes})"
    elif any(st and st.get("interrupted") for st in finals):
        status, error = "interrupted", "the load generator was stopped before the run ended"
    else:
        status, error = "complete", None
    save(status, error)
    monitor.report(record.series, finishing=True, force=True)
    shutil.rmtree(work, ignore_errors=True)  # specs and states: merged into the record now
    return next((c for c in codes if c), 0), died


def _mtimes(paths: list[Path]) -> list[int]:
    out = []
    for p in paths:
        try:
            out.append(p.stat().st_mtime_ns)
        except OSError:
            out.append(0)
    return out


def _signal_all(procs: list[subprocess.Popen[bytes]], sig: int) -> None:
    for p in procs:
        if p.poll() is None:
            signal_group(p.pid, sig)


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    _signal_all(procs, signal.SIGTERM)  # all at once, then each waited for (and killed past its grace)
    for p in procs:
        stop_process_group(p, STOP_GRACE_S)


if __name__ == "__main__":
    sys.exit(main())
