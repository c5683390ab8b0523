"""pytest-benchmark plumbing for bench/: options, case parametrization, explicit warm-up + calibration.

Run through ``deploybench bench`` (which converts the results to RunRecords), or directly::

    PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 pytest -p pytest_benchmark.plugin bench/ --bench-profile tiny

Every benchmark uses ``benchmark.pedantic`` with ``iterations=1``, so each stored round is exactly one call
(raw samples → exact P95/P99 later). Warm-up rounds are run and timed here, excluded from the samples, and
written to ``extra_info`` with the calibration that chose the number of rounds.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from deploybench.bench.harness import PredictorCache
from deploybench.bench.profiles import Profile, select_profile
from deploybench.bench.suite import (
    UserBenchModel,
    load_cases_for,
    noop_cases,
    predict_cases_for,
    preprocess_cases_for,
    read_user_models,
)
from deploybench.io import parse_csv
from deploybench.paths import zoo_dir as default_zoo


class _CtrlC:
    """A Ctrl-C (SIGINT) ends the run after the case that is running, not inside it: a KeyboardInterrupt
    raised in the middle of a C extension's work (e.g. torch's import, which a case may trigger) can abort
    the process, and with it the pytest-benchmark JSON of every case already finished. A second Ctrl-C
    interrupts at once."""

    def __init__(self) -> None:
        self.asked = False
        self.session: pytest.Session | None = None

    def handle(self, signum: int, frame: Any) -> None:
        if self.asked:
            signal.default_int_handler(signum, frame)
        self.asked = True
        if self.session is not None:
            self.session.shouldstop = "interrupted (Ctrl-C): stopped after the case that was running"


_CTRL_C = _CtrlC()


def pytest_sessionstart(session: pytest.Session) -> None:
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
        _CTRL_C.session = session
        signal.signal(signal.SIGINT, _CTRL_C.handle)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("deploybench")
    group.addoption("--bench-profile", default="quick", help="tiny | quick | full (default quick)")
    group.addoption("--bench-models", default="", help="comma-separated models (default: the profile's)")
    group.addoption("--bench-formats", default="", help="comma-separated formats (default: all)")
    group.addoption("--bench-zoo", default="", help="zoo folder (default: $DEPLOYBENCH_ZOO or artifacts/zoo)")
    group.addoption(
        "--bench-user-models",
        default="",
        help="JSON of the user's model files (written by deploybench bench)",
    )


_USER: dict[str, dict[str, UserBenchModel]] = {}


def _user(config: pytest.Config) -> dict[str, UserBenchModel]:
    """The user's models (read once per session)."""
    path = config.getoption("--bench-user-models")
    if path not in _USER:
        _USER[path] = read_user_models(path)
    return _USER[path]


def _profile(config: pytest.Config) -> Profile:
    return select_profile(config.getoption("--bench-profile"), parse_csv(config.getoption("--bench-models")))


def _formats(config: pytest.Config) -> tuple[str, ...] | None:
    return tuple(parse_csv(config.getoption("--bench-formats"))) or None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    profile = _profile(metafunc.config)
    formats = _formats(metafunc.config)
    user = _user(metafunc.config)
    for fixture, make in (
        ("predict_case", lambda: predict_cases_for(profile, formats, user)),
        ("load_case", lambda: load_cases_for(profile, formats, user)),
        ("preprocess_case", lambda: preprocess_cases_for(profile)),
        ("noop_case", lambda: noop_cases()),
    ):
        if fixture in metafunc.fixturenames:
            cases = make()
            metafunc.parametrize(fixture, cases, ids=[c.id for c in cases])


@pytest.fixture(scope="session")
def bench_profile(pytestconfig: pytest.Config) -> Profile:
    return _profile(pytestconfig)


@pytest.fixture(scope="session")
def zoo_dir(pytestconfig: pytest.Config) -> Path:
    given = pytestconfig.getoption("--bench-zoo")
    return Path(given) if given else default_zoo()


@pytest.fixture(scope="session")
def user_models(pytestconfig: pytest.Config) -> dict[str, UserBenchModel]:
    return _user(pytestconfig)


@pytest.fixture(scope="session")
def predictors(zoo_dir: Path, user_models: dict[str, UserBenchModel]) -> PredictorCache:
    return PredictorCache(zoo_dir, user_models)
