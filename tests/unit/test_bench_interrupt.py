"""A Ctrl-C during `deploybench bench` / `nox -s bench` ends the benchmark session after the running case
(bench/conftest.py), so a KeyboardInterrupt never lands inside a C extension's work (an interrupted torch
import aborted the process and lost every finished case's samples); a second Ctrl-C interrupts at once."""

from __future__ import annotations

import signal
from types import SimpleNamespace

import pytest

from deploybench.bench.conftest import _CtrlC


def test_the_first_ctrl_c_asks_the_session_to_stop_after_the_running_case() -> None:
    ctrl_c = _CtrlC()
    session = SimpleNamespace(shouldstop=False)
    ctrl_c.session = session  # type: ignore[assignment]
    ctrl_c.handle(signal.SIGINT, None)  # no KeyboardInterrupt here
    assert ctrl_c.asked and "stopped after the case that was running" in str(session.shouldstop)


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    ctrl_c = _CtrlC()
    ctrl_c.handle(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        ctrl_c.handle(signal.SIGINT, None)


def test_the_benchmark_process_is_a_pytest_session_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Started from a pytest-xdist worker (this suite runs under one), ``deploybench bench``'s pytest must
    not inherit ``PYTEST_XDIST_*``: pytest-benchmark would take itself for a worker and disable every
    benchmark."""
    from deploybench.bench.run import child_env

    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("DEPLOYBENCH_SOMETHING", "kept")
    env = child_env()
    assert not [k for k in env if k.startswith("PYTEST_XDIST_")]
    assert env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] == "1" and env["DEPLOYBENCH_SOMETHING"] == "kept"
