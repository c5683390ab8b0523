"""Shared fixtures. Servers started by tests bind to 127.0.0.1 on ports they bound themselves, and are
always torn down.

Every test that starts a process (a server, Locust, git, a CLI in a subprocess) is marked ``e2e``; the fast
unit loop is ``pytest -m "not e2e"``. The marking is enforced: while a test without the mark is set up, run
and torn down (its fixtures of every scope included), starting a process fails with a message naming the
command, so the unit loop can never quietly grow slow or start servers.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest


@contextlib.contextmanager
def _no_process_unless_e2e(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("e2e") is not None:
        yield
        return
    original = subprocess.Popen.__init__

    def refuse(self: subprocess.Popen[Any], args: Any, *a: Any, **kw: Any) -> None:
        raise AssertionError(
            f"{item.nodeid} starts a process ({args!r}) but is not marked e2e: "
            "add @pytest.mark.e2e (or pytestmark = pytest.mark.e2e for the module)"
        )

    subprocess.Popen.__init__ = refuse  # type: ignore[method-assign]
    try:
        yield
    finally:
        subprocess.Popen.__init__ = original  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with _no_process_unless_e2e(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with _no_process_unless_e2e(item):
        return (yield)


@pytest.fixture(scope="session")
def zoo_dir() -> Path:
    """The default model zoo (deploybench.paths.zoo_dir(), absolute), every model x format built on first use.

    CI runs `deploybench build --quiet` first, so this only checks hashes; up-to-date artifacts are reused.
    """
    from deploybench import paths
    from deploybench.targets.zoo import build_zoo

    root = paths.zoo_dir().resolve()
    build_zoo(root)
    return root
