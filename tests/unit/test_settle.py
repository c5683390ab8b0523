"""``procs.settle``: compare waits between load runs until the target answers /health promptly again (what an
overloaded probe left queued is worked off); a target that does not answer is not waited for."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from deploybench.procs import answer_time_s, settle

SLOW_S = 0.05  # a queued answer
SLOW_ANSWERS = 3


class Handler(http.server.BaseHTTPRequestHandler):
    served = 0

    def do_GET(self) -> None:
        Handler.served += 1
        if Handler.served <= SLOW_ANSWERS:
            time.sleep(SLOW_S)  # the answer waits behind a queue (a delay the server sets, not a guess)
        body = b'{"status": "ok"}' if self.path == "/health" else b"{}"
        self.send_response(200 if self.path == "/health" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.served = 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_settle_waits_until_an_answer_comes_within_the_bound(server: str) -> None:
    waited_s, ok = settle(server, within_s=SLOW_S / 2, max_s=30.0)
    assert ok
    assert Handler.served >= SLOW_ANSWERS + 1  # every slow answer was waited for, then one prompt one
    assert waited_s >= SLOW_ANSWERS * SLOW_S


def test_settle_gives_up_after_max_s(server: str) -> None:
    waited_s, ok = settle(server, within_s=0.0, max_s=0.2)  # no answer is ever within 0 s
    assert not ok and waited_s >= 0.2


def test_a_target_that_does_not_answer_is_not_waited_for() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        waited_s, ok = settle(f"http://127.0.0.1:{port}", within_s=0.01, max_s=30.0)
        assert not ok and waited_s < 30.0
        assert answer_time_s(f"http://127.0.0.1:{port}") is None


def test_any_status_is_an_answer(server: str) -> None:
    assert answer_time_s(server, path="/nothing-here") is not None  # a 404 went through the queue too
