"""Real model servers as deployment choices: Seldon MLServer and LitServe, each in a virtualenv of its own.

A model server is its own deployment, with its own dependencies (MLServer 1.7.1 needs fastapi<0.116, our
targets 0.165), so it never runs in deploybench's environment:

- ``EXTERNAL_SERVERS`` = ("mlserver", "litserve").
- ``requirements(server)``: its pinned requirement set (every package exact, shipped as package data:
  ``targets/data/external-<server>.txt``); ``requirements_sha256(server)`` its hash.
- ``ensure_env(server, root=None, *, python=None) -> Path``: the server's virtualenv under ``root``
  (default ``envs_dir()``: ``./artifacts/model-servers``, or $DEPLOYBENCH_MODEL_SERVERS), created on first
  use (``python -m venv`` + ``pip install -r`` the pinned set) and rebuilt when the pinned set changes (a
  marker file holds its hash). Concurrent callers are safe (a lock file per server). A failed install
  raises TargetError carrying the tail of pip's log. ``nox -s model-servers`` creates both.
- ``env_versions(server, root=None) -> dict``: python + the installed versions of the packages that make
  the deployment (``KEY_PACKAGES``; every pinned one with ``every_package=True``), for a run record's
  environment block; {} when the env does not exist yet. ``env_info`` adds the env's creation time.
- ``external_unsupported(server, model, fmt) -> str | None``: why a model x format cannot be served by that
  server (None: it can). Both serve the tabular zoo models: MLServer iris-rf pickle (mlserver-sklearn,
  ``predict_proba``) and every tabular ONNX file (a small onnxruntime runtime we ship); LitServe every
  tabular ONNX file and the scikit-learn pickle. Image models and torch formats are not offered.
- ``ExternalServerProcess(server, model, fmt, *, workers=1, cpus=None, port=0, log_path=None, zoo_dir=None,
  max_batch_size=0, max_queue_delay_us=0)``: the same surface as ``deploybench.targets.serve.ServerProcess``
  (start() / stop() / cleanup() / context manager, ``url``, ``pid``, ``returncode``, ``is_alive()``,
  ``log_tail()``, ``startup_s``, ``command``). start() creates the env if needed, launches the server in
  its own process group, and waits against a deadline until the model answers; stop() stops the group.

What each one speaks (the load scenario that drives it: ``SCENARIO``):

- MLServer: Open Inference Protocol v2 (scenario "oip"). Model name = our model name; request
  ``POST /v2/models/<model>/infer`` with one FP32 input [n, 4]; response output ``predict_proba`` [n, 3]
  (FP64 from scikit-learn, FP32 from onnxruntime). workers -> ``parallel_workers`` (inference processes;
  HTTP stays in the main one); max_batch_size / max_queue_delay_us -> MLServer's adaptive batching
  (``max_batch_size`` / ``max_batch_time``).
- LitServe: deploybench's own API (scenario "tabular", unchanged): ``POST /predict`` with ``{"instances":
  [[4 floats], ...]}`` -> the same JSON as our targets; ``GET /health`` JSON with framework "litserve".
  workers -> ``workers_per_device`` on the CPU; max_batch_size (> 1) / max_queue_delay_us -> LitServe's
  ``max_batch_size`` / ``batch_timeout``.

Neither server can take an inherited socket, so the launcher picks free ports (port=0) just before the start
and tries again with new ports when the server reports the port taken.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from deploybench.env import pinned_argv
from deploybench.errors import TargetError, UsageError
from deploybench.procs import fetch_health, tail_text
from deploybench.targets.catalog import MODELS, artifact_entry
from deploybench.targets.serve import ChildServer
from deploybench.vocabulary import MODEL_SERVERS

EXTERNAL_SERVERS = MODEL_SERVERS  # deploybench.vocabulary: the names compare and the CLI agree on
SCENARIO = {"mlserver": "oip", "litserve": "tabular"}  # the load scenario that speaks each one's protocol
ENVS_DIR_ENV = "DEPLOYBENCH_MODEL_SERVERS"
DEFAULT_ENVS_DIR = "artifacts/model-servers"  # git-ignored (artifacts/)
DATA_DIR = Path(__file__).parent / "data"
MARKER_NAME = "deploybench-env.json"  # in the env folder, written last: the env is complete
ENV_RECIPE_VERSION = 1  # bump when the way an env is made changes (rebuilds every env)
LOG_TAIL_CHARS = 4000
MLSERVER_ONNX_MODULE = "deploybench_onnx_runtime"  # the shipped runtime's module name in the model folder
PORT_TRIES = 3
# what a record's environment block names of each env (env_versions); every pinned package on request
KEY_PACKAGES: dict[str, tuple[str, ...]] = {
    "mlserver": (
        "mlserver", "mlserver-sklearn", "scikit-learn", "joblib", "numpy", "onnxruntime",
        "fastapi", "starlette", "uvicorn", "pydantic",
    ),
    "litserve": (
        "litserve", "scikit-learn", "joblib", "numpy", "onnxruntime",
        "fastapi", "starlette", "uvicorn", "pydantic", "pyzmq",
    ),
}  # fmt: skip  # fresh ports after a server reports its port taken

# (server, format) -> the model libraries it serves that format of; the tabular zoo models only
_SUPPORTED: dict[tuple[str, str], tuple[str, ...]] = {
    ("mlserver", "pickle"): ("scikit-learn",),  # mlserver-sklearn (joblib); a torch pickle needs torch
    ("mlserver", "onnx"): ("scikit-learn", "torch"),  # our onnxruntime runtime
    ("litserve", "pickle"): ("scikit-learn",),
    ("litserve", "onnx"): ("scikit-learn", "torch"),
}


# ------------------------------------------------------------------------------------------ what is served


def _check_server(server: str) -> None:
    if server not in EXTERNAL_SERVERS:
        raise UsageError(f"unknown model server {server!r}; choose one of {', '.join(EXTERNAL_SERVERS)}")


def external_unsupported(server: str, model: str, fmt: str) -> str | None:
    """Why ``server`` cannot serve ``model`` in ``fmt`` (a reason for the compare matrix's skip list), or
    None when it can."""
    if server not in EXTERNAL_SERVERS:
        return f"{server!r} is not a model server deploybench runs ({', '.join(EXTERNAL_SERVERS)})"
    spec = MODELS.get(model)
    if spec is None:
        return f"unknown model {model!r}"
    if fmt not in spec.formats:
        return f"model {model} has no {fmt} format"
    if spec.task != "tabular":
        return f"{server} is offered for the tabular models only ({model} is an {spec.task} model)"
    libraries = _SUPPORTED.get((server, fmt))
    if libraries is None:
        return f"{server} does not serve the {fmt} format here (onnx, or a scikit-learn pickle)"
    if spec.library not in libraries:
        return f"{server} serves a {fmt} file of {', '.join(libraries)} only ({model} is {spec.library})"
    return None


# ---------------------------------------------------------------------------------------------- the envs


def envs_dir() -> Path:
    """The folder of the model servers' virtualenvs: $DEPLOYBENCH_MODEL_SERVERS or artifacts/model-servers."""
    return Path(os.environ.get(ENVS_DIR_ENV, DEFAULT_ENVS_DIR))


def requirements_path(server: str) -> Path:
    _check_server(server)
    return DATA_DIR / f"external-{server}.txt"


def requirements(server: str) -> list[str]:
    """The server's pinned requirement lines (``name==version``), comments and blanks dropped."""
    lines = requirements_path(server).read_text(encoding="utf-8").splitlines()
    return [s for s in (line.split("#", 1)[0].strip() for line in lines) if s]


def base_python() -> str:
    """The interpreter the envs are made with by default: the one under deploybench's own venv (every nox
    session's venv has the same one, so an env made by `nox -s model-servers` serves them all)."""
    return os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)


def requirements_sha256(server: str, python: str | None = None) -> str:
    """The hash an env is built from: the pinned set, the interpreter that makes it, the recipe version."""
    text = "\n".join(
        [f"recipe={ENV_RECIPE_VERSION}", f"python={python or base_python()}", *sorted(requirements(server))]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def env_path(server: str, root: str | os.PathLike[str] | None = None) -> Path:
    _check_server(server)
    return (Path(root) if root is not None else envs_dir()).absolute() / server


def env_bin(env: Path, name: str) -> Path:
    return env / "bin" / name


def _read_marker(env: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((env / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _env_ok(env: Path, wanted_sha256: str) -> bool:
    marker = _read_marker(env)
    return (
        marker is not None
        and marker.get("requirements_sha256") == wanted_sha256
        and env_bin(env, "python").exists()
    )


def _pip_log_tail(log: Path, n_chars: int = LOG_TAIL_CHARS) -> str:
    """The end of pip's log without its noise about unreadable local index folders."""
    text = tail_text(log, 4 * n_chars, "(no log)")
    lines = [line for line in text.splitlines() if not line.startswith("WARNING: Location ")]
    return "\n".join(lines)[-n_chars:]


def _spawn(cmd: list[str], log: IO[bytes], timeout_s: float) -> int:
    """Run one env-making step with its output in ``log``; its exit code (tests replace this)."""
    return subprocess.run(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s,
        env=_clean_env(), check=False,
    ).returncode  # fmt: skip


def _run_logged(cmd: list[str], log: Path, what: str, timeout_s: float) -> None:
    with log.open("ab") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n".encode())
        fh.flush()
        try:
            code = _spawn(cmd, fh, timeout_s)
        except subprocess.TimeoutExpired:
            raise TargetError(
                f"{what} did not finish in {timeout_s:g} s\nlog ({log}), last lines:\n{_pip_log_tail(log)}"
            ) from None
        except OSError as exc:
            raise TargetError(f"{what}: cannot run {cmd[0]}: {exc}") from None
    if code != 0:
        raise TargetError(f"{what} failed (exit code {code})\nlog ({log}), last lines:\n{_pip_log_tail(log)}")


def _installed_versions(python: Path) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, platform; "
        "d = {x.metadata['Name'].lower(): x.version for x in m.distributions()}; "
        "d['python'] = platform.python_version(); print(json.dumps(d))"
    )
    try:
        out = subprocess.run(
            [str(python), "-c", code],
            capture_output=True,
            text=True,
            timeout=60,
            env=_clean_env(),
            check=True,
        ).stdout
        versions = json.loads(out.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as exc:
        raise TargetError(f"cannot read the installed versions with {python}: {exc}") from None
    return {str(k): str(v) for k, v in versions.items()} if isinstance(versions, dict) else {}


def ensure_env(
    server: str,
    root: str | os.PathLike[str] | None = None,
    *,
    python: str | None = None,
    install_timeout_s: float = 1800.0,
) -> Path:
    """The server's virtualenv folder, created (or rebuilt, when its pinned set changed) if needed.

    ``python``: the interpreter that makes the venv (default ``base_python()``). Safe to call
    from several processes at once (the second waits for the first, then finds the env made). A failed
    step raises TargetError with the tail of its log (``<root>/<server>-install.log``)."""
    env = env_path(server, root)
    wanted = requirements_sha256(server, python)
    if _env_ok(env, wanted):
        return env
    env.parent.mkdir(parents=True, exist_ok=True)
    with (env.parent / f"{server}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if _env_ok(env, wanted):  # another caller made it while we waited
            return env
        log = env.parent / f"{server}-install.log"
        log.write_text("")
        shutil.rmtree(env, ignore_errors=True)  # a stale or half-made env: start clean
        t0 = time.perf_counter_ns()
        venv = [python or base_python(), "-m", "venv", str(env)]
        _run_logged(venv, log, f"creating the {server} venv", 300)
        env_python = env_bin(env, "python")
        pip = [str(env_python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
        _run_logged(
            [*pip, "-r", str(requirements_path(server))], log, f"installing {server}", install_timeout_s
        )
        installed = _installed_versions(env_python)
        if "torch" in installed:
            raise TargetError(f"the {server} env pulled in torch {installed['torch']}: not allowed there")
        marker = {
            "server": server,
            "requirements_sha256": wanted,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "create_s": round((time.perf_counter_ns() - t0) / 1e9, 3),
            "versions": installed,
        }
        tmp = env / f".{MARKER_NAME}.tmp"
        tmp.write_text(json.dumps(marker, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(env / MARKER_NAME)
    return env


def env_info(server: str, root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The env's marker (hash, created_utc, create_s, versions); {} when the env is not made."""
    return _read_marker(env_path(server, root)) or {}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def env_versions(
    server: str, root: str | os.PathLike[str] | None = None, *, every_package: bool = False
) -> dict[str, str]:
    """The installed versions of the server's env, for a run record's environment block: python + the
    packages that make the deployment (``KEY_PACKAGES``: the server, the model libraries, its web stack), or
    with ``every_package`` each pinned package. {} when the env is not made yet."""
    installed = {_canonical(k): v for k, v in (env_info(server, root).get("versions") or {}).items()}
    pinned = [_canonical(line.split("==", 1)[0]) for line in requirements(server)]
    names = ["python", *(pinned if every_package else KEY_PACKAGES[server])]
    return {n: installed[n] for n in names if n in installed}


# ------------------------------------------------------------------------------------------- the process


def _clean_env() -> dict[str, str]:
    """The environment for the servers' own interpreters: nothing of deploybench's venv leaks in."""
    env = dict(os.environ)
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(var, None)
    return env


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status == 200
    except (OSError, http.client.HTTPException, urllib.error.URLError):
        return False


class ExternalServerProcess(ChildServer):
    """A model server (MLServer or LitServe) serving one zoo model, as a child process group. Use as a
    context manager, or start()/stop()/cleanup(); the same surface as ServerProcess."""

    def __init__(
        self,
        server: str,
        model: str,
        fmt: str,
        *,
        workers: int = 1,
        cpus: list[int] | None = None,
        port: int = 0,
        log_path: str | os.PathLike[str] | None = None,
        zoo_dir: str | os.PathLike[str] | None = None,
        max_batch_size: int = 0,
        max_queue_delay_us: int = 0,
        host: str = "127.0.0.1",
        ready_timeout_s: float = 120.0,
        env_root: str | os.PathLike[str] | None = None,
    ) -> None:
        self.server, self.model, self.format = server, model, fmt
        self.workers = workers
        self.cpus = sorted({int(c) for c in cpus}) if cpus is not None else None
        self.host = host
        self.port = port
        self.zoo_dir = zoo_dir
        self.max_batch_size = max_batch_size
        self.max_queue_delay_us = max_queue_delay_us
        self.ready_timeout_s = ready_timeout_s
        self.env_root = env_root
        self.scenario = SCENARIO.get(server, "")
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self.command: list[str] = []
        self.startup_s: float | None = None  # launch -> the model answers (env creation not counted)
        self.env_s: float | None = None  # ensure_env's time in start() (long only on first use)

    # -- public ------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def framework(self) -> str:
        return self.server

    def versions(self) -> dict[str, str]:
        """The server env's versions (for the run record's environment block)."""
        return env_versions(self.server, self.env_root)

    def validate(self) -> None:
        """UsageError for options or a model x format this server cannot take."""
        _check_server(self.server)
        reason = external_unsupported(self.server, self.model, self.format)
        if reason is not None:
            raise UsageError(reason)
        for name, low in (("workers", 1), ("max_batch_size", 0), ("max_queue_delay_us", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise UsageError(f"port must be 0..65535, got {self.port!r}")
        if self.cpus is not None and (not self.cpus or not set(self.cpus) <= os.sched_getaffinity(0)):
            usable = sorted(os.sched_getaffinity(0))
            raise UsageError(f"cpus {self.cpus} must be a non-empty subset of the usable CPUs {usable}")

    def start(self) -> ExternalServerProcess:
        if self._proc is not None:
            raise TargetError(f"this {self.server} process was already started")
        self.validate()
        _, artifact = artifact_entry(self.model, self.format, self.zoo_dir)
        t_env = time.perf_counter_ns()
        env = ensure_env(self.server, self.env_root)
        self.env_s = (time.perf_counter_ns() - t_env) / 1e9
        self._tmp = Path(tempfile.mkdtemp(prefix=f"deploybench-{self.server}-"))
        if self._log_path is None:
            self._log_path = self._tmp / "server.log"
        else:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port
        try:
            for attempt in range(1, PORT_TRIES + 1):
                self.port = fixed_port or _free_port(self.host)
                self.command = self._command(env, artifact.resolve(), self.port)
                log_start = self._log_path.stat().st_size if self._log_path.exists() else 0
                t0 = time.perf_counter_ns()
                with self._log_path.open("ab") as log:
                    self._proc = subprocess.Popen(
                        pinned_argv(self.command, self.cpus, sys.executable),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=self._env(),
                        cwd=self._tmp,
                        start_new_session=True,  # own process group: stop() signals the whole group
                    )
                try:
                    self._wait_ready()
                except TargetError:
                    self.stop()
                    if fixed_port or attempt == PORT_TRIES or not self._port_taken(log_start):
                        raise
                    self._proc = None  # a port taken between picking and binding: try fresh ones
                    continue
                self.startup_s = (time.perf_counter_ns() - t0) / 1e9
                return self
        except BaseException:
            self.stop()
            self.cleanup()
            raise
        raise AssertionError("unreachable")  # the loop returns or raises

    # -- internals ---------------------------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = _clean_env()
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = "1"  # as our targets' default intra_op_threads
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _command(self, env: Path, artifact: Path, port: int) -> list[str]:
        assert self._tmp is not None
        if self.server == "mlserver":
            return [str(env_bin(env, "mlserver")), "start", str(self._mlserver_folder(artifact, port))]
        cmd = [
            str(env_bin(env, "python")), str(DATA_DIR / "external_litserve_server.py"),
            "--artifact", str(artifact), "--format", self.format, "--model", self.model,
            "--classes", ",".join(MODELS[self.model].class_names),
            "--host", self.host, "--port", str(port), "--workers", str(self.workers),
        ]  # fmt: skip
        if self.max_batch_size > 1:
            cmd += ["--max-batch-size", str(self.max_batch_size)]
            cmd += ["--batch-timeout-s", f"{self.max_queue_delay_us / 1e6:g}"]
        return cmd

    def _mlserver_folder(self, artifact: Path, port: int) -> Path:
        """settings.json + <model>/model-settings.json (+ our ONNX runtime) in a fresh folder."""
        assert self._tmp is not None
        root = self._tmp / f"mlserver-{port}"
        model_dir = root / self.model
        model_dir.mkdir(parents=True)
        settings = {
            "host": self.host,
            "http_port": port,
            "grpc_port": _free_port(self.host),
            "metrics_port": _free_port(self.host),
            "metrics_endpoint": None,  # no Prometheus server: our targets run without /metrics by default
            "parallel_workers": self.workers,
            "debug": False,
            "load_models_at_startup": True,
        }
        parameters: dict[str, Any] = {"uri": str(artifact)}
        if self.format == "pickle":
            implementation = "mlserver_sklearn.SKLearnModel"
            parameters["extra"] = {"predict_fn": "predict_proba"}
        else:
            implementation = f"{MLSERVER_ONNX_MODULE}.OnnxClassifier"
            parameters["extra"] = {"intra_op_threads": 1}
            shutil.copyfile(DATA_DIR / "external_mlserver_onnx.py", model_dir / f"{MLSERVER_ONNX_MODULE}.py")
        spec = MODELS[self.model]
        n_features, n_classes = spec.input_shape[0], spec.n_classes
        model_settings: dict[str, Any] = {
            "name": self.model,
            "implementation": implementation,
            "parameters": parameters,
            # the metadata an OIP client reads (GET /v2/models/<model>): the input the scenario builds from
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [-1, n_features]}],
            "outputs": [
                {
                    "name": "predict_proba",
                    "datatype": "FP64" if self.format == "pickle" else "FP32",
                    "shape": [-1, n_classes],
                }
            ],
        }
        if self.max_batch_size > 1:
            model_settings["max_batch_size"] = self.max_batch_size
            model_settings["max_batch_time"] = self.max_queue_delay_us / 1e6
        (root / "settings.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
        (model_dir / "model-settings.json").write_text(json.dumps(model_settings, indent=2), encoding="utf-8")
        return root

    def _ready(self) -> bool:
        if self.server == "mlserver":
            return _http_ok(f"{self.url}/v2/models/{self.model}/ready")
        info = fetch_health(self.url, timeout_s=2.0)
        return (
            info is not None
            and info.get("status") == "ok"
            and info.get("framework") == "litserve"
            and info.get("model") == self.model
            and info.get("format") == self.format
        )

    def _fail(self, why: str) -> TargetError:
        return TargetError(
            f"{self.server}: {why}\ncommand: {shlex.join(self.command)}\n"
            f"log ({self._log_path}), last lines:\n{self.log_tail()}"
        )

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        delay_s = 0.05
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._fail(f"exited with code {code} before it was ready")
            if self._ready():
                return
            if time.monotonic() >= deadline:
                raise self._fail(f"not ready after {self.ready_timeout_s:g} s")
            time.sleep(delay_s)  # polling interval, not a guess at the start-up time
            delay_s = min(delay_s * 1.5, 0.5)

    def _port_taken(self, log_start: int) -> bool:
        if self._log_path is None:
            return False
        with contextlib.suppress(OSError), self._log_path.open("rb") as fh:
            fh.seek(log_start)
            text = fh.read().decode("utf-8", "replace").lower()
            return "address already in use" in text or "errno 98" in text
        return False


def main(argv: list[str] | None = None) -> int:
    """``python -m deploybench.targets.external [SERVER ...]``: make (or check) the model servers' envs
    (default: every one) and say where they are, what they hold and how long each took to make."""
    servers = (sys.argv[1:] if argv is None else argv) or list(EXTERNAL_SERVERS)
    try:
        for server in servers:
            t0 = time.perf_counter_ns()
            env = ensure_env(server)
            took_s = (time.perf_counter_ns() - t0) / 1e9
            info = env_info(server)
            versions = ", ".join(f"{k} {v}" for k, v in env_versions(server).items())
            made = f"made {info.get('created_utc')} in {info.get('create_s')} s"
            print(f"{server}: {env} ({made}; this check {took_s:.1f} s)")
            print(f"  {versions}")
    except (UsageError, TargetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, UsageError) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
