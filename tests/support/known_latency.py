"""A tiny HTTP server with a known service time, for tests of the load harness (and of gate / compare).

Routes: ``GET /health`` and ``POST /predict``, ``/predict/image``, ``/predict/image/base64``; every POST
sleeps the service time and answers the project's JSON shapes with a ``Server-Timing`` header
(``decode;dur=0, preprocess;dur=0, infer;dur=<actual service ms>``). Bad JSON on /predict → 400 JSON error.

Knobs: ``service_ms`` (fixed service time), ``max_concurrency`` (1 → one request at a time: a known capacity
of 1000/service_ms requests/s), ``stall_at_s`` + ``stall_s`` (every request that arrives in
[first POST + stall_at_s, + stall_s) waits until the stall ends: a coordinated-omission probe).

Python API::

    with KnownLatencyServer(service_ms=5, max_concurrency=1) as srv:
        srv.url   # "http://127.0.0.1:PORT"

``start()`` binds the listening socket itself (port 0: the OS picks) and the server process inherits it
(``--fd N``), so the port in ``url`` is the one being served, with no window for another process to take it.

CLI: ``python -m tests.support.known_latency --port 8000 --service-ms 5 [--max-concurrency 1]
[--stall-at 2 --stall 1]`` (``--port 0``: any free port; the first line printed names the URL).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from deploybench.errors import TargetError
from deploybench.targets.serve import bind_listener

MAX_BODY_BYTES = 32 * 1024 * 1024
LOG_TAIL_CHARS = 2000
REPO = (
    Path(__file__).resolve().parents[2]
)  # the server runs as ``python -m tests.support.known_latency`` here


class _State:
    def __init__(
        self, service_ms: float, max_concurrency: int, stall_at_s: float | None, stall_s: float
    ) -> None:
        self.service_s = service_ms / 1000.0
        self.sem = threading.BoundedSemaphore(max_concurrency) if max_concurrency > 0 else None
        self.stall_at_s = stall_at_s
        self.stall_s = stall_s
        self.first_post: float | None = None
        self.lock = threading.Lock()
        self.requests = 0

    def stall_wait(self, now: float) -> float:
        with self.lock:
            self.requests += 1
            if self.first_post is None:
                self.first_post = now
        if self.stall_at_s is None or self.stall_s <= 0:
            return 0.0
        start = self.first_post + self.stall_at_s
        end = start + self.stall_s
        return end - now if start <= now < end else 0.0


def make_handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms per response
        server_version = "deploybench-testserver"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: dict[str, Any], timing: str | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if timing:
                self.send_header("Server-Timing", timing)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"status": "ok", "version": "testserver", "framework": "testserver",
                                 "model": "known-latency", "format": "sleep"})  # fmt: skip
            else:
                self._send(404, {"error": "not_found", "detail": f"no route {self.path}"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0 or length > MAX_BODY_BYTES:
                self._send(413, {"error": "body_too_large", "detail": f"{length} bytes"})
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            if self.path not in ("/predict", "/predict/image", "/predict/image/base64"):
                self._send(404, {"error": "not_found", "detail": f"no route {self.path}"})
                return
            if self.path in ("/predict", "/predict/image/base64"):
                try:
                    json.loads(body)
                except ValueError:
                    self._send(400, {"error": "invalid_json", "detail": "body is not valid JSON"})
                    return
            elif b'name="file"' not in body:
                self._send(400, {"error": "missing_file", "detail": "multipart field 'file' is required"})
                return
            wait = state.stall_wait(time.monotonic())
            if wait > 0:
                time.sleep(wait)
            t0 = time.perf_counter_ns()
            if state.sem is not None:
                with state.sem:
                    time.sleep(state.service_s)
            else:
                time.sleep(state.service_s)
            infer_ms = (time.perf_counter_ns() - t0) / 1e6
            timing = f"decode;dur=0.000, preprocess;dur=0.000, infer;dur={infer_ms:.3f}"
            if self.path == "/predict":
                self._send(200, {"prediction": "setosa", "class_id": 0, "confidence": 1.0,
                                 "probabilities": {"setosa": 1.0}}, timing)  # fmt: skip
            else:
                self._send(200, {"top_class": "tench", "class_id": 0, "confidence": 1.0,
                                 "top_5": [{"class": "tench", "class_id": 0, "probability": 1.0}],
                                 "inference_time_ms": infer_ms}, timing)  # fmt: skip

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):  # the client went away (load generator stopping): expected
            return
        super().handle_error(request, client_address)


def serve(port: int, service_ms: float, max_concurrency: int = 0, stall_at_s: float | None = None,
          stall_s: float = 0.0, *, fd: int | None = None, announce: bool = False) -> None:  # fmt: skip
    """Serve on 127.0.0.1:port (0 = any free port), or on the inherited listening socket ``fd``, until
    SIGTERM/SIGINT. ``announce`` prints ``serving on http://127.0.0.1:PORT`` once listening."""
    handler = make_handler(_State(service_ms, max_concurrency, stall_at_s, stall_s))
    if fd is None:
        server = _QuietServer(("127.0.0.1", port), handler)
    else:
        server = _QuietServer(("127.0.0.1", 0), handler, bind_and_activate=False)
        server.socket.close()
        server.socket = socket.socket(fileno=fd)  # already bound and listening (family detected from it)
        server.server_address = server.socket.getsockname()
    if announce:
        print(f"serving on http://127.0.0.1:{server.server_address[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


class KnownLatencyServer:
    """Runs ``python -m tests.support.known_latency`` as a subprocess (own process group) on a loopback
    socket that ``start()`` binds (``port`` 0: the OS picks) and the child inherits; ``start()`` then polls
    /health until ready; ``stop()`` sends SIGTERM then SIGKILL to that process group."""

    def __init__(
        self,
        service_ms: float = 5.0,
        *,
        max_concurrency: int = 0,
        stall_at_s: float | None = None,
        stall_s: float = 0.0,
        port: int = 0,
        ready_timeout_s: float = 15.0,
        log_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.service_ms = service_ms
        self.max_concurrency = max_concurrency
        self.stall_at_s = stall_at_s
        self.stall_s = stall_s
        self.requested_port = port
        self.port = port  # the bound port once started
        self.ready_timeout_s = ready_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._last_tail = ""  # the log tail kept when stop() closes a temporary log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def returncode(self) -> int | None:
        """The server's exit code (-N if killed by signal N); None while running or never started."""
        return self.proc.poll() if self.proc is not None else None

    def command(self, fd: int | None = None) -> list[str]:
        """The server's command line: serving the inherited socket ``fd``, else binding ``self.port``."""
        listen = ["--fd", str(fd)] if fd is not None else ["--port", str(self.port)]
        cmd = [sys.executable, "-m", "tests.support.known_latency", *listen]
        cmd += ["--service-ms", str(self.service_ms), "--max-concurrency", str(self.max_concurrency)]
        if self.stall_at_s is not None:
            cmd += ["--stall-at", str(self.stall_at_s), "--stall", str(self.stall_s)]
        return cmd

    def start(self) -> KnownLatencyServer:
        if self.proc is not None:
            raise TargetError("this KnownLatencyServer was already started")
        listener = bind_listener("127.0.0.1", self.requested_port)  # TargetError if the port is taken
        try:
            self.port = int(listener.getsockname()[1])
            cmd = self.command(listener.fileno())
            self._log = open(self.log_path, "wb") if self.log_path else tempfile.TemporaryFile()  # noqa: SIM115
            self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                         pass_fds=(listener.fileno(),), process_group=0,
                                         cwd=REPO)  # fmt: skip
        finally:
            listener.close()  # the child holds its own copy (Popen returns after exec): the port stays bound
        deadline = time.monotonic() + self.ready_timeout_s
        while self.proc.poll() is None and time.monotonic() < deadline:
            if self._health_ok():
                return self
            time.sleep(0.05)  # polling interval
        why = (
            f"exited with code {self.proc.returncode}"
            if self.proc.poll() is not None
            else f"not ready after {self.ready_timeout_s:g} s"
        )
        self.stop()
        raise TargetError(f"test server {why}: {' '.join(cmd)}\n{self.log_tail()}")

    def _health_ok(self) -> bool:
        # The socket listens from the start: a request made before the child serves waits in the backlog.
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2.0)
        try:
            conn.request("GET", "/health")
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def log_tail(self, n_chars: int = LOG_TAIL_CHARS) -> str:
        """The end of the server's output ("" if none), also after stop()."""
        if self.log_path is not None:
            try:
                return self.log_path.read_bytes()[-n_chars:].decode(errors="replace")
            except OSError:
                return ""
        if self._log is not None:
            try:  # pread: the child shares this file's offset, so never move it
                fd = self._log.fileno()
                size = os.fstat(fd).st_size
                start = max(0, size - n_chars)
                return os.pread(fd, size - start, start).decode(errors="replace")
            except (OSError, ValueError):
                return ""
        return self._last_tail[-n_chars:]

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server now (simulates a crashed target)."""
        if self.is_alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._last_tail = self.log_tail(max(LOG_TAIL_CHARS, 16_000))
            self._log.close()
            self._log = None

    def __enter__(self) -> KnownLatencyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.known_latency", description=__doc__.split("\n")[0]
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="bind 127.0.0.1:PORT (0 = any free port)")
    where.add_argument("--fd", type=int, help="serve an inherited, already listening socket")
    p.add_argument("--service-ms", type=float, default=5.0)
    p.add_argument("--max-concurrency", type=int, default=0, help="0 = unlimited")
    p.add_argument("--stall-at", type=float, default=None, help="seconds after the first POST")
    p.add_argument("--stall", type=float, default=0.0, help="stall length in seconds")
    a = p.parse_args(argv)
    serve(a.port or 0, a.service_ms, a.max_concurrency, a.stall_at, a.stall, fd=a.fd, announce=a.fd is None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
