"""How `deploybench compare` drives targets and load: the ``Driver`` interface (so the orchestration in
``deploybench.decisions.compare.run`` is testable with fakes) and ``RealDriver``, which starts real targets
(``deploybench.targets.serve``) and runs real load (``deploybench.loadtests.runner``).

Choices of the user's own model files are served from their files (``deploybench.targets.modelfile``);
external choices (``[[urls]]``) are services already running: ``start`` only checks that their /health
answers, and nothing stops them. A model whose requests the built-in scenarios cannot make (a user's tabular
model: F features, not iris's 4) is loaded with the ``api`` scenario and generated request bodies of its input
spec (the /health ``input`` of an external choice); a user's image model gets images of its input size."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import psutil

from deploybench import procs
from deploybench.compare_doc import Choice
from deploybench.decisions.compare.config import CompareConfig, master_address
from deploybench.errors import TargetError, UsageError
from deploybench.io import write_atomic
from deploybench.loadtests.runner import run_load
from deploybench.record import RunRecord
from deploybench.targets.catalog import MODELS
from deploybench.targets.external import SCENARIO as MODEL_SERVER_SCENARIO
from deploybench.targets.external import ExternalServerProcess, env_versions
from deploybench.targets.modelfile import UserModelInfo, load_sample_input
from deploybench.targets.serve import ServerProcess, TargetConfig

HEALTH_TIMEOUT_S = 5.0
PAYLOAD_ROWS = 64  # distinct request bodies generated for a user's tabular model


def core_split(usable: Iterable[int], server_workers: int = 1) -> tuple[list[int], list[int]]:
    """(server CPUs, generator CPUs) of a pinned run on the ``usable`` CPUs: the server gets one core per
    worker process (at most all but one core) from the top, the generator as many cores as the server (one
    lean process each, at least one) from the bottom. 2 CPUs: server CPU 1, generator CPU 0.

    The generator's CPU per request measured 0.2-0.6 of the server's (README, Load engines), so as many cores
    as the server's leave it headroom; every run still measures that headroom (``generator-bound``)."""
    cpus = sorted(set(usable))
    if len(cpus) < 2:
        raise UsageError(f"pinning needs at least 2 usable CPUs; this process may use {cpus}")
    k = max(1, min(int(server_workers), len(cpus) - 1))
    g = max(1, min(len(cpus) - k, k))
    return cpus[-k:], cpus[:g]


class Target(Protocol):
    url: str
    pid: int | None

    def is_alive(self) -> bool: ...


def fetch_health(url: str, timeout_s: float = HEALTH_TIMEOUT_S) -> dict[str, Any] | None:
    """GET {url}/health -> its JSON object when it answers 200, else None."""
    return procs.fetch_health(url, timeout_s)


class ExternalTarget:
    """An already-running service (an external choice): alive while its /health answers; never stopped."""

    pid: int | None = None  # not ours: no CPU or affinity figures

    def __init__(self, url: str, health: dict[str, Any]) -> None:
        self.url = url.rstrip("/")
        self.health = health

    def is_alive(self) -> bool:
        return fetch_health(self.url) is not None


def tabular_payload_file(path: Path, n_features: int, rows: np.ndarray | None = None, seed: int = 0) -> Path:
    """JSON lines of ``{"features": [F numbers]}`` (the api scenario's bodies): the sample rows when given,
    else ``PAYLOAD_ROWS`` seeded rows uniform in [0, 1)."""
    if rows is None:
        rows = np.random.default_rng(seed).random((PAYLOAD_ROWS, n_features))
    lines = [json.dumps({"features": [round(float(v), 6) for v in row]}) for row in rows]
    write_atomic(path, "\n".join(lines) + "\n")
    return path


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
    return procs.process_tree_cpu_s(pid)


class RealDriver:
    """Targets from ``deploybench.targets.serve`` and load from ``deploybench.loadtests.runner.run_load``.
    ``model_infos``: the
    user's models of the matrix, inspected (``deploybench.decisions.compare.config.inspect_models``).
    ``progress``: a ``deploybench.progress.Progress`` sink told which choice (i of n, of ``choices``) and
    which probe runs, and given each load's live figures; the driver itself prints nothing."""

    def __init__(
        self,
        cfg: CompareConfig,
        scenario: str,
        zoo_dir: Path,
        results_dir: Path,
        model_infos: Mapping[str, UserModelInfo] | None = None,
        progress: Any = None,
        choices: Sequence[Choice] = (),
    ) -> None:
        self.cfg = cfg
        self.progress = progress
        self.choices = list(choices)
        self._step = ""  # "choice 2/6 <id>" (pass k): the choice running now
        self._probes = 0
        self._passes: dict[str, int] = {}
        self.scenario = scenario
        self.zoo_dir = zoo_dir
        self.results_dir = results_dir
        self.pin = resolve_pin(cfg.measure.pin)
        self.usable_cpus = sorted(os.sched_getaffinity(0)) if self.pin else []
        self.generator_cpus: list[int] | None = None  # the started target's split (``core_split``)
        self.model: str | None = None
        self.model_infos = dict(model_infos or {})
        self._load_scenario = scenario
        self._scenario_options: dict[str, Any] = {}

    @contextlib.contextmanager
    def start(self, choice: Choice, log_path: Path) -> Iterator[Target]:
        self._announce(choice)
        self.model = choice.model
        self._load_scenario, self._scenario_options = self.scenario, {}
        server_cpus: list[int] | None = None
        self.generator_cpus = None
        if self.pin:
            workers = 1 if choice.external else choice.workers
            server_cpus, self.generator_cpus = core_split(self.usable_cpus, workers)
        if choice.external:
            health = fetch_health(choice.url)
            if health is None:
                raise TargetError(
                    f"the external service {choice.name} at {choice.url} does not answer GET /health with a "
                    "JSON object (compare never starts external choices: is it running?)"
                )
            self.model = str(health.get("model") or choice.name)
            self._plan_load(self.model, health.get("input"), None)
            yield ExternalTarget(choice.url, health)
            return
        if choice.model_server:
            yield from self._start_model_server(choice, server_cpus, log_path)
            return
        um = self.cfg.user_model(choice.model)
        if um is not None:
            model: dict[str, Any] = um.target_options(choice.format)
            info = self.model_infos.get(choice.model)
            if info is not None:
                self._plan_load(choice.model, info.input_spec(), um.sample_input)
        else:
            model = {"model": choice.model, "format": choice.format, "zoo_dir": str(self.zoo_dir)}
        config = TargetConfig(
            framework=choice.framework,
            server=choice.server,
            workers=choice.workers,
            threads=choice.threads,
            intra_op_threads=choice.intra_op_threads,
            inter_op_threads=choice.inter_op_threads,
            ort_opt_level=choice.ort_opt_level,
            max_batch_size=choice.max_batch_size,
            max_queue_delay_us=choice.max_queue_delay_us,
            handler=choice.handler,
            cpus=server_cpus,
            **model,
        )
        server = ServerProcess(config, log_path=log_path)
        try:
            server.start()
            yield server
        finally:
            server.stop()
            server.cleanup()

    def _start_model_server(
        self, choice: Choice, server_cpus: list[int] | None, log_path: Path
    ) -> Iterator[Target]:
        """A third-party model server from its own virtualenv (created on first use: minutes, once). MLServer
        speaks the Open Inference Protocol (the ``oip`` scenario); LitServe serves our /predict API."""
        server = ExternalServerProcess(
            choice.framework,
            choice.model,
            choice.format,
            workers=choice.workers,
            cpus=server_cpus,
            log_path=log_path,
            zoo_dir=self.zoo_dir,
            max_batch_size=choice.max_batch_size,
            max_queue_delay_us=choice.max_queue_delay_us,
        )
        self._load_scenario = MODEL_SERVER_SCENARIO[choice.framework]
        try:
            server.start()
            # the versions that served it, for the report (the load record's environment is the generator's)
            versions = env_versions(choice.framework)
            server.health = {"framework": choice.framework, "model": choice.model, "format": choice.format,
                             "versions": versions}  # fmt: skip
            server.target_env = {"server": choice.framework, "virtualenv": True, **versions}
            yield server
        finally:
            server.stop()
            server.cleanup()

    def _announce(self, choice: Choice) -> None:
        k = self._passes[choice.id] = self._passes.get(choice.id, 0) + 1
        ids = [c.id for c in self.choices]
        i = f" {ids.index(choice.id) + 1}/{len(ids)}" if choice.id in ids else ""
        self._step = f"choice{i} {choice.id}" + (f" (pass {k})" if k > 1 else "")
        self._probes = 0
        if self.progress is not None:
            self.progress.phase(f"{self._step}: starting the target")

    def _plan_load(self, model: str, spec: Any, sample_input: str | None) -> None:
        """The scenario + options that make requests this model takes (zoo models: the plain scenario)."""
        if not isinstance(spec, dict) or (model in MODELS and MODELS[model].task == spec.get("kind")):
            return
        if self.scenario == "tabular" and spec.get("kind") == "tabular" and spec.get("n_features"):
            n = int(spec["n_features"])
            rows = None
            if sample_input is not None:
                sample = load_sample_input(sample_input)
                rows = sample if sample.ndim == 2 and sample.shape[1] == n else None
            path = tabular_payload_file(
                self.results_dir / "payloads" / f"{model}-{n}-features.jsonl", n, rows
            )
            self._load_scenario = "api"
            self._scenario_options = {"path": "/predict", "method": "POST", "payload": str(path)}
        elif self.scenario == "image" and spec.get("kind") == "image" and len(spec.get("shape") or []) == 3:
            _, h, w = (int(d) for d in spec["shape"])
            self._scenario_options = {"image_size": f"{w}x{h}"}

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
        options: dict[str, Any] = {}
        if self._scenario_options:
            options["scenario_options"] = dict(self._scenario_options)
        self._probes += 1
        if self.progress is not None:
            what = f"{rate_rps:,.0f} rps {load_model}" if rate_rps else f"{users or 'default'} users, closed"
            self.progress.phase(f"{self._step}: probe {self._probes} ({what})")
        record = run_load(
            target.url,
            self._load_scenario,
            **options,
            duration_s=duration_s,
            warmup_s=warmup_s,
            users=users,
            rate_rps=rate_rps,
            load_model=load_model,
            results_dir=self.results_dir,
            record_path=record_path,
            model=self.model,
            engine=self.cfg.measure.engine,
            progress=self.progress,
            server_pid=getattr(target, "pid", None),
            **self._generator_options(),
        )
        return stamp_target_env(record, getattr(target, "target_env", None), record_path)

    def _generator_options(self) -> dict[str, Any]:
        """Where the load comes from: remote Locust workers (``[measure] expect_workers``: this process is
        their master, on a fixed port they reconnect to for every run), or local processes on the pinned
        generator CPUs (one each)."""
        ms = self.cfg.measure
        if ms.expect_workers:
            address = master_address(ms.master_bind)
            assert address is not None  # validated with the config
            return {"expect_workers": ms.expect_workers, "master_bind": address, "generator_cpus": None}
        cpus = self.generator_cpus
        return {"generator_cpus": cpus, "processes": len(cpus) if cpus and len(cpus) > 1 else 0}


def stamp_target_env(record: RunRecord, target_env: dict[str, Any] | None, path: Path) -> RunRecord:
    """A model server runs from its own virtualenv: its versions join the record's environment block as
    ``target_env`` (the rest of the block is the generator's, whose versions our own targets share), and the
    record is saved again."""
    if target_env:
        record.env["target_env"] = dict(target_env)
        record.save(path)
    return record


def pin_possible() -> bool:
    """Whether this process may use at least 2 CPUs: one for the server, one for the generator."""
    try:
        return len(os.sched_getaffinity(0)) >= 2
    except AttributeError:  # pragma: no cover - not Linux
        return False


def resolve_pin(pin: bool | str) -> bool:
    """``measure.pin``: True (checked: UsageError when the CPUs are not usable), False, or "auto": pinned
    when at least 2 CPUs are usable (``core_split``), so the server and the load generator never share a
    core (on a quiet 2-core machine an unpinned FastAPI pickle target measured half its pinned max rate,
    issue 12). On a machine busy with other work, pinning ties both to cores that work also uses: compare
    there with ``pin = false`` (``--no-pin``)."""
    if pin == "auto":
        return pin_possible()
    if pin:
        check_pin_possible()
        return True
    return False


def check_pin_possible() -> None:
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # pragma: no cover - not Linux
        raise UsageError("--pin needs Linux CPU affinity (os.sched_getaffinity)") from None
    if len(cpus) < 2:
        raise UsageError(f"--pin needs at least 2 usable CPUs; this process may use {sorted(cpus)}")
