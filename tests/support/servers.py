"""Helpers for tests that start several reference targets."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deploybench.targets.serve import ServerProcess


@contextlib.contextmanager
def started_together(servers: dict[Any, ServerProcess]) -> Iterator[dict[Any, str]]:
    """Start several targets at once (model loading overlaps) and yield their URLs by key; every one of
    them is stopped and cleaned up on exit, also when one fails to start."""
    try:
        with ThreadPoolExecutor(max(1, len(servers))) as pool:
            for future in [pool.submit(p.start) for p in servers.values()]:
                future.result()
        yield {key: p.url for key, p in servers.items()}
    finally:
        for p in servers.values():
            p.stop()
            p.cleanup()
