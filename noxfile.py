"""Developer and user entry points. Every session installs torch (the CPU build) *first*, then the project,
both with the exact versions of constraints.txt.

`nox -s compare` is the main job on built-in defaults; `nox -s tests` runs the test suite.

Where no CPU torch wheel is at hand (a GitHub-hosted runner: a plain `pip install torch` there is the
multi-GB CUDA build), set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu: torch then comes from that
index alone, its dependencies and everything else from the normal index.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "venv"  # pip-based: uv would not see the provided CPU torch
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

CONSTRAINTS = ("-c", "constraints.txt")  # the exact versions (torch==2.13.0 among them)
TORCH_INDEX_URL = os.environ.get("TORCH_INDEX_URL", "")


def _install(session: nox.Session, extras: str = "test") -> None:
    # torch before anything else, so no resolver ever picks a CUDA torch; from TORCH_INDEX_URL alone when set
    # (no deps from there: they come with the project, from the normal index, under the same constraints).
    index = ["--index-url", TORCH_INDEX_URL, "--no-deps"] if TORCH_INDEX_URL else []
    session.install(*index, *CONSTRAINTS, "torch")
    session.install(*CONSTRAINTS, "-e", f".[{extras}]")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """Unit, integration and end-to-end tests (real servers on loopback), the docs' strict build too."""
    _install(session, "test,docs")
    session.run("deploybench", "build", "--quiet")
    # two test files at a time (pytest-xdist, each file's tests on one worker: module fixtures stay shared)
    # in the order tests/conftest.py gives (the slowest files first), not xdist's (most tests first)
    args = ["-q", "-n", "2", "--dist", "loadfile", "--no-loadscope-reorder", "--durations=15"]
    session.run("pytest", *(session.posargs or args))


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff lint + format check."""
    session.install(*CONSTRAINTS, "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def docs(session: nox.Session) -> None:
    """The documentation site -> results/site (mkdocs-material, --strict: a broken link or page fails). The
    CLI reference is checked against the parsers first. `-- serve`: preview at http://127.0.0.1:8000."""
    _install(session, "docs")
    session.run("python", "-m", "deploybench.commands.reference", "--check")
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", "--strict", "-a", "127.0.0.1:8000")
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs)


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
def overhead(session: nox.Session) -> None:
    """Our targets vs minimal apps (same framework, server, model, one generator, rounds interleaved) ->
    results/overhead/<stamp>/overhead.{json,md}. wrk when on PATH, else the lean load engine (said in
    the output). `-- --handler-styles`: + inline vs threadpool; `-- --min-ratio 0.9`: exit 1 below it."""
    _install(session)
    session.run("deploybench", "build", "--models", "iris-rf,iris-mlp,resnet18", "--formats", "onnx")
    session.run("python", "-m", "deploybench.bench.overhead", *session.posargs)


@nox.session(python="3.11")
def compare(session: nox.Session) -> None:
    """Deployment matrix -> max throughput under a P99 SLO -> ranked report (the main job)."""
    _install(session)
    session.run("deploybench", "build")
    session.run("deploybench", "compare", *session.posargs)


@nox.session(name="model-servers", python="3.11")
def model_servers(session: nox.Session) -> None:
    """Make the model servers' own virtualenvs (MLServer, LitServe; pinned) in artifacts/model-servers, or
    $DEPLOYBENCH_MODEL_SERVERS, so that no run has to. `-- litserve`: that one only."""
    _install(session)
    session.run("python", "-m", "deploybench.targets.external", *session.posargs)


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
