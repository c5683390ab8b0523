"""Developer and user entry points. Every session installs torch==2.13.0 (the CPU build) *first*.

`nox -s compare` is the main job on built-in defaults; `nox -s tests` runs the test suite.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"  # pip-based: uv would not see the provided CPU torch
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

TORCH = "torch==2.13.0"


def _install(session: nox.Session, extras: str = "test") -> None:
    session.install(TORCH)  # before anything else, so no resolver ever picks a CUDA torch
    session.install("-e", f".[{extras}]")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Unit, integration and end-to-end tests (real servers on loopback)."""
    _install(session)
    session.run("deploybench", "build", "--quiet")
    session.run("pytest", *(session.posargs or ["-q", "--durations=15"]))


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff lint + format check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def build(session: nox.Session) -> None:
    """Build the model zoo (every model x format) into artifacts/zoo with a manifest."""
    _install(session)
    session.run("deploybench", "build", *session.posargs)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Micro-benchmarks (pytest-benchmark, in-process) -> records -> report. `-- --full`: long profile."""
    _install(session)
    session.run("deploybench", "build")
    session.run("deploybench", "bench", *session.posargs)


@nox.session(python="3.11")
def compare(session: nox.Session) -> None:
    """Deployment matrix -> max throughput under a P99 SLO -> ranked report (the main job)."""
    _install(session)
    session.run("deploybench", "build")
    session.run("deploybench", "compare", *session.posargs)


@nox.session(python="3.11")
def gate(session: nox.Session) -> None:
    """Compare the latest results with the saved baseline; exit 1 on a regression."""
    _install(session)
    default = ["--baseline", "baselines", "--current", "results/bench", "--markdown", "results/gate.md"]
    session.run("deploybench", "gate", *(session.posargs or default))


@nox.session(python="3.11")
def fuzz(session: nox.Session) -> None:
    """Long schemathesis run against both targets."""
    _install(session)
    session.run("deploybench", "build")
    session.run(
        "pytest",
        "-q",
        "-m",
        "slow",
        "tests/e2e/test_fuzz.py",
        *session.posargs,
        env={"DEPLOYBENCH_FUZZ_EXAMPLES": "500", "DEPLOYBENCH_FUZZ_OUT": "results/fuzz"},
    )
