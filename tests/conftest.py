"""Shared fixtures. Servers started by tests bind to 127.0.0.1 on ports they bound themselves, and are
always torn down.

Every test that starts a process (a server, Locust, a CLI in a subprocess) is marked ``e2e``; the fast unit
loop is ``pytest -m "not e2e"``. The marking is enforced: a test without the mark that starts a process fails
with a message naming the command, so the unit loop can never quietly grow slow or start servers.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.node.get_closest_marker("e2e") is not None:
        return

    def refuse(self: subprocess.Popen[Any], args: Any, *a: Any, **kw: Any) -> None:
        raise AssertionError(
            f"{request.node.nodeid} starts a process ({args!r}) but is not marked e2e: "
            "add @pytest.mark.e2e (or pytestmark = pytest.mark.e2e for the module)"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session")
def zoo_dir() -> Path:
    """The default model zoo (deploybench.paths.zoo_dir(), absolute), every model x format built on first use.

    CI runs `deploybench build --quiet` first, so this only checks hashes; up-to-date artifacts are reused.
    """
    from deploybench import paths
    from targets.zoo import build_zoo

    root = paths.zoo_dir().resolve()
    build_zoo(root)
    return root
