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


# The slowest files (`--durations=15` of `.ci/run`, 2026-12-05), longest first. `nox -s tests` runs two files
# at a time with `--no-loadscope-reorder`, so the files go out in this order: these first, then the other
# end-to-end files, then the unit files, short ones that fill the end. (xdist's own order, files with the
# most tests first, sent the slowest files, which have few tests, last, and one worker idled at the end.)
SLOW_FILES_FIRST = (
    "tests/e2e/test_install_e2e.py",  # a fresh venv from PyPI: 69-104 s
    "tests/e2e/test_external_e2e.py",  # MLServer's and LitServe's venvs: 53-84 s
    "tests/e2e/test_compare_e2e.py",
    "tests/e2e/test_engines_e2e.py",
    "tests/e2e/test_model_files_e2e.py",
    "tests/e2e/test_compare_urls_e2e.py",
    "tests/e2e/test_saturation_e2e.py",
    "tests/e2e/test_overhead_e2e.py",
    "tests/e2e/test_gate_e2e.py",
    "tests/e2e/test_faults.py",
)


def _file_rank(item: pytest.Item) -> tuple[int, int]:
    path = item.nodeid.split("::", 1)[0]
    if path in SLOW_FILES_FIRST:
        return (0, SLOW_FILES_FIRST.index(path))
    return (1 if path.startswith("tests/e2e/") else 2, 0)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=_file_rank)  # stable: the order within a file, and among the rest, stays


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
