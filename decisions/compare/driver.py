"""How `deploybench compare` drives targets and load: the ``Driver`` interface (so the orchestration in
``decisions.compare.run`` is testable with fakes) and ``RealDriver``, which starts real targets
(``targets.serve``) and runs real load (``loadtests.runner``)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import psutil

from decisions.compare.config import CompareConfig
from deploybench.compare_doc import Choice
from deploybench.errors import UsageError
from deploybench.record import RunRecord
from loadtests.runner import run_load
from targets.serve import ServerProcess, TargetConfig

SERVER_PIN_CPUS = [1]
GENERATOR_PIN_CPUS = [0]


class Target(Protocol):
    url: str
    pid: int

    def is_alive(self) -> bool: ...


class Driver(Protocol):
    def start(self, choice: Choice, log_path: Path) -> contextlib.AbstractContextManager[Target]:
        """Start the target (raise TargetError when it does not come up); stop it on exit."""
        ...

    def load(
        self,
        target: Target,
        *,
        load_model: str,
        duration_s: float,
        warmup_s: float,
        record_path: Path,
        users: int | None = None,
        rate_rps: float | None = None,
    ) -> RunRecord:
        """One bounded load run against the running target; the record is saved at record_path."""
        ...


def process_tree_affinity(pid: int) -> list[int] | None:
    """The CPUs a process and its children may run on (union; None when it cannot be read)."""
    try:
        proc = psutil.Process(pid)
        cpus: set[int] = set()
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                cpus.update(p.cpu_affinity())
        return sorted(cpus) or None
    except psutil.Error:
        return None


def process_tree_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process and its children (None when it cannot be read)."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
        total = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total
    except Exception:
        return None


class RealDriver:
    """Targets from ``targets.serve`` and load from ``loadtests.runner.run_load``."""

    def __init__(self, cfg: CompareConfig, scenario: str, zoo_dir: Path, results_dir: Path) -> None:
        self.cfg = cfg
        self.scenario = scenario
        self.zoo_dir = zoo_dir
        self.results_dir = results_dir
        self.pin = cfg.measure.pin
        self.model: str | None = None

    @contextlib.contextmanager
    def start(self, choice: Choice, log_path: Path) -> Iterator[Target]:
        self.model = choice.model
        config = TargetConfig(
            framework=choice.framework,
            server=choice.server,
            model=choice.model,
            format=choice.format,
            workers=choice.workers,
            threads=choice.threads,
            intra_op_threads=self.cfg.matrix.intra_op_threads,
            cpus=list(SERVER_PIN_CPUS) if self.pin else None,
            zoo_dir=str(self.zoo_dir),
        )
        server = ServerProcess(config, log_path=log_path)
        try:
            server.start()
            yield server
        finally:
            server.stop()
            server.cleanup()

    def load(
        self,
        target: Target,
        *,
        load_model: str,
        duration_s: float,
        warmup_s: float,
        record_path: Path,
        users: int | None = None,
        rate_rps: float | None = None,
    ) -> RunRecord:
        return run_load(
            target.url,
            self.scenario,
            duration_s=duration_s,
            warmup_s=warmup_s,
            users=users,
            rate_rps=rate_rps,
            load_model=load_model,
            results_dir=self.results_dir,
            record_path=record_path,
            generator_cpus=list(GENERATOR_PIN_CPUS) if self.pin else None,
            model=self.model,
        )


def check_pin_possible() -> None:
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        raise UsageError("--pin needs Linux CPU affinity (os.sched_getaffinity)") from None
    need = set(SERVER_PIN_CPUS + GENERATOR_PIN_CPUS)
    if not need <= cpus:
        raise UsageError(f"--pin needs CPUs {sorted(need)}; this process may use {sorted(cpus)}")
