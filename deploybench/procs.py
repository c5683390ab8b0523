"""Helpers for the processes the project starts (targets, load generators, measurement commands) and the
services it reads: one copy each.

- ``fetch_health``: GET {url}/health -> its JSON object when it answers 200, else None (bounded).
- ``answer_time_s``: how long one GET on a new connection waits for its answer (any status).
- ``settle``: wait until a target has worked off what an earlier load left queued.
- ``tail_text``: the last characters of a log file.
- ``signal_group`` / ``stop_process_group``: stop a child started as its own process group (SIGTERM, then
  SIGKILL after a grace period, then whatever its leader left behind).
- ``process_tree_cpu_s``: user + system CPU seconds of a process and its live descendants.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil

STOP_GRACE_S = 10.0


def fetch_health(
    url: str | None, timeout_s: float = 2.0, headers: dict[str, str] | None = None, path: str = "/health"
) -> dict[str, Any] | None:
    """GET {url}{path} (with ``headers``, e.g. a run's auth token) -> its JSON object when it answers 200,
    else None (refused, timed out after ``timeout_s``, another status, not a JSON object)."""
    if not url:
        return None
    request = urllib.request.Request(url.rstrip("/") + path, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            if resp.status != 200:
                return None
            data = json.loads(resp.read(1 << 20))
    except (OSError, ValueError, http.client.HTTPException, urllib.error.URLError):
        return None
    return data if isinstance(data, dict) else None


def answer_time_s(url: str, timeout_s: float = 2.0, path: str = "/health") -> float | None:
    """Seconds from sending GET {url}{path} on a new connection to its whole answer, whatever its status
    (a 404 is an answer too: the request went through the server's queue); None when there is no answer
    (refused, reset, timed out after ``timeout_s``)."""
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    start_ns = time.perf_counter_ns()
    try:
        conn.request("GET", parts.path.rstrip("/") + path)
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
    return (time.perf_counter_ns() - start_ns) / 1e9


def settle(url: str, within_s: float, max_s: float) -> tuple[float, bool]:
    """Wait until the target at ``url`` has worked off what an earlier load left queued (requests, or
    connections in its accept queue): GET /health on a new connection, one after another, until one is
    answered within ``within_s``, for at most ``max_s``. Returns (seconds waited, settled). A target that
    does not answer at all is not waited for (False at once): whether it is alive is checked elsewhere."""
    start_ns = time.perf_counter_ns()
    while True:
        elapsed_s = (time.perf_counter_ns() - start_ns) / 1e9
        took = answer_time_s(url, timeout_s=max(0.1, max_s - elapsed_s))
        elapsed_s = (time.perf_counter_ns() - start_ns) / 1e9
        if took is None:
            return elapsed_s, False
        if took <= within_s:
            return elapsed_s, True
        if elapsed_s >= max_s:
            return elapsed_s, False


def tail_text(path: str | os.PathLike[str], n_chars: int = 3000, missing: str = "") -> str:
    """The last ``n_chars`` characters of a (log) file, read from its end; ``missing`` when unreadable."""
    try:
        with Path(path).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4 * n_chars))
            return fh.read().decode("utf-8", "replace")[-n_chars:]
    except OSError:
        return missing


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to a process group; a group already gone (or not ours) is ignored."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Is a live (not zombie) process left in the group? A zombie whose parent never reaps it (an orphan
    re-parented to a PID 1 that does not reap) would otherwise count as alive forever."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for p in psutil.process_iter(["status"]):
        with contextlib.suppress(OSError, psutil.Error):
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                return True
    return False


def _wait_group_gone(pgid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while _group_alive(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)  # polling interval
    return True


def stop_process_group(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> int | None:
    """Stop a child started as its own process group (``start_new_session=True`` or ``process_group=0``:
    its group id is its pid): SIGTERM the group, SIGKILL whatever is left after ``grace_s``, then the same
    for members its leader left behind (workers orphaned by a dead master still hold the group; zombies no
    longer count). Returns the exit code."""
    pgid = proc.pid
    if proc.poll() is None:
        signal_group(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            signal_group(pgid, signal.SIGKILL)
            proc.wait(timeout=grace_s)
    if _group_alive(pgid):
        signal_group(pgid, signal.SIGTERM)
        if not _wait_group_gone(pgid, grace_s):
            signal_group(pgid, signal.SIGKILL)
            _wait_group_gone(pgid, grace_s)
    return proc.returncode


def process_tree_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process and its live descendants (None when it cannot be read)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total
