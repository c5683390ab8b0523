"""Waiting for a condition in tests: poll it against a deadline, never sleep a guessed time."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll ``condition()`` until it returns something truthy (returned) or ``timeout_s`` passes
    (AssertionError naming ``what``)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        time.sleep(interval_s)  # polling interval, not a guess at how long it takes


def kill_leftovers(procs: list[subprocess.Popen[Any]], grace_s: float = 15.0) -> None:
    """Stop and reap the processes of ``procs`` that are still running (a test's own): SIGTERM, so that they
    stop their own children, then SIGKILL after ``grace_s``."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(grace_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
