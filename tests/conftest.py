"""Shared fixtures. Servers started by tests bind to 127.0.0.1 on free ports and are always torn down."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


@pytest.fixture
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
