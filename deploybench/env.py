"""The environment a measurement ran in: stored in every record, compared by the gate."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any

LIBRARIES = (
    "torch", "onnxruntime", "scikit-learn", "numpy", "flask", "fastapi", "uvicorn", "gunicorn", "locust",
)  # fmt: skip

# Fields that must match for two records to be comparable (pyperf's _CHECKED_METADATA idea).
KEY_FIELDS = ("cpu_model", "cpu_count", "python", "platform", "torch", "onnxruntime", "scikit-learn")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_info(cwd: str | None = None) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def capture_env(affinity: list[int] | None = None) -> dict[str, Any]:
    """CPU, cores, affinity, Python and library versions, git commit + dirty flag."""
    try:
        own_affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        own_affinity = None
    versions = library_versions()
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "affinity": affinity if affinity is not None else own_affinity,
        "python": platform.python_version(),
        "platform": f"{platform.system()}-{platform.machine()}",
        "hostname": platform.node(),
        **versions,
        "git": git_info(),
        "ci": bool(os.environ.get("CI")),
    }


def env_key(env: dict[str, Any]) -> dict[str, Any]:
    return {k: env.get(k) for k in KEY_FIELDS}


def env_mismatch(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Key fields that differ between two environments (empty dict when comparable)."""
    ka, kb = env_key(a), env_key(b)
    return {k: (ka[k], kb[k]) for k in KEY_FIELDS if ka[k] != kb[k]}


# A shim that pins itself, then execs the real command: the child is pinned from its first instruction
# without a ``preexec_fn``. (With a ``preexec_fn``, subprocess runs Python's at-fork handlers in the parent,
# and a Ctrl-C arriving inside one is printed as "Exception ignored" and lost: the caller never stops.)
_PIN_SHIM = "import os, sys; os.sched_setaffinity(0, %r); os.execvp(sys.argv[1], sys.argv[1:])"


def pinned_argv(argv: list[str], cpus: list[int] | None, python: str) -> list[str]:
    """``argv`` run on ``cpus`` only (unchanged when ``cpus`` is empty), via ``python -c`` shim."""
    if not cpus:
        return list(argv)
    return [python, "-c", _PIN_SHIM % (sorted(cpus),), *argv]


@contextmanager
def own_cpus(cpus: list[int] | None) -> Iterator[None]:
    """Run the calling thread on ``cpus`` for the block (unchanged when empty or not Linux), then restore.

    A load run pins its generator processes; the process that starts them, merges their states and saves
    the record must stay off the target's CPUs too, or its bursts of work preempt the server it measures.
    """
    if not cpus or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
