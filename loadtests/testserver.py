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

CLI: ``python -m loadtests.testserver --port 8000 --service-ms 5 [--max-concurrency 1]
[--stall-at 2 --stall 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from deploybench.errors import TargetError

MAX_BODY_BYTES = 32 * 1024 * 1024


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
          stall_s: float = 0.0) -> None:  # fmt: skip
    """Serve on 127.0.0.1:port until SIGTERM/SIGINT."""
    server = _QuietServer(("127.0.0.1", port), make_handler(_State(service_ms, max_concurrency,
                                                                          stall_at_s, stall_s)))  # fmt: skip
    server.daemon_threads = True
    server.request_queue_size = 128
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KnownLatencyServer:
    """Runs ``python -m loadtests.testserver`` as a subprocess on a free loopback port (own process group);
    ``start()`` polls /health until ready; ``stop()`` sends SIGTERM then SIGKILL to that process group."""

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
        self.port = port or free_port()
        self.ready_timeout_s = ready_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "loadtests.testserver", "--port", str(self.port)]
        cmd += ["--service-ms", str(self.service_ms), "--max-concurrency", str(self.max_concurrency)]
        if self.stall_at_s is not None:
            cmd += ["--stall-at", str(self.stall_at_s), "--stall", str(self.stall_s)]
        return cmd

    def start(self) -> KnownLatencyServer:
        self._log = open(self.log_path, "wb") if self.log_path else tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     process_group=0, cwd=Path(__file__).resolve().parent.parent)  # fmt: skip
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1.0) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.05)
        tail = self._log_tail()
        self.stop()
        raise TargetError(f"test server did not become ready: {' '.join(self.command())}\n{tail}")

    def _log_tail(self) -> str:
        try:
            self._log.flush()
            self._log.seek(0)
            return self._log.read()[-2000:].decode(errors="replace")
        except (OSError, ValueError, AttributeError):
            return ""

    def is_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server now (simulates a crashed target)."""
        if self.is_alive():
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self, grace_s: float = 5.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> KnownLatencyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.testserver", description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--service-ms", type=float, default=5.0)
    p.add_argument("--max-concurrency", type=int, default=0, help="0 = unlimited")
    p.add_argument("--stall-at", type=float, default=None, help="seconds after the first POST")
    p.add_argument("--stall", type=float, default=0.0, help="stall length in seconds")
    a = p.parse_args(argv)
    serve(a.port, a.service_ms, a.max_concurrency, a.stall_at, a.stall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
