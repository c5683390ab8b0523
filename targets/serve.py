"""Launch a reference target as a server process: Flask under gunicorn, FastAPI under uvicorn or gunicorn.

``ServerProcess(config).start()`` binds the listening socket itself (``config.port`` or 0 = any free port),
reads the real port from it and hands it to the server as an inherited file descriptor (uvicorn ``--fd N``,
gunicorn ``--bind fd://N``): no other process can take the port between choosing and serving it. It runs the
server in its own process group, then polls ``GET /health`` against a deadline until every worker has loaded
+ warmed up its model; ``stop()`` sends SIGTERM to the group and SIGKILL after a grace period.
``deploybench serve`` (``deploybench.commands.serve``) does the same in the foreground.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from deploybench import paths
from deploybench.env import pinned_argv
from deploybench.errors import TargetError, UsageError
from deploybench.procs import STOP_GRACE_S, fetch_health, stop_process_group, tail_text
from deploybench.targets.catalog import MODELS, ArtifactError, missing_format_reason
from deploybench.targets.modelfile import (
    UserModel,
    UserModelInfo,
    default_model_name,
    inspect_user_model,
    resolve_format,
)
from deploybench.vocabulary import (
    CONFIG_ENV,
    DEFAULT_SERVER,
    FRAMEWORK_SERVERS,
    HANDLER_STYLES,
    ORT_OPT_LEVELS,
    READY_DIR_ENV,
)

LOG_TAIL_CHARS = 4000
GUNICORN_CONF_MODULE = "deploybench.targets.gunicorn_conf"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's multiprocess folder
LISTEN_BACKLOG = 2048  # what gunicorn and uvicorn use by default

# handler="auto" on FastAPI, by the served model's task (measured: bench/overhead, README "Handler style").
# A fast model (tabular, ~0.1 ms per inference) runs inline in the event loop: the hop to the threadpool
# costs more than the inference. A slow one (image, ~10-30 ms) runs in the threadpool: inline it blocks the
# loop (no other request is read, not even /health) and uses one core, where threads overlap inferences.
AUTO_HANDLER: dict[str, str] = {"tabular": "inline", "image": "threadpool"}
AUTO_HANDLER_UNKNOWN_TASK = "threadpool"  # a cost we cannot tell yet: never block the loop

ONNX_FORMATS: tuple[str, ...] = ("onnx", "onnx-int8")  # served by onnxruntime: the ORT options apply
MAX_QUEUE_DELAY_US = 60_000_000  # the longest a batch may wait for more rows (1 min)
MAX_BATCH_SIZE = 4096  # the most rows one dynamic batch may hold


@dataclass
class Limits:
    """What a target accepts. Everything over a limit gets a 4xx naming the limit."""

    max_body_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 25_000_000  # checked from the image header before any pixel is decoded
    max_batch: int = 256  # rows in {"instances": [...]}
    request_timeout_s: float = 30.0  # gunicorn --timeout (a worker silent this long is restarted)
    keep_alive_s: float = 5.0  # idle keep-alive: gunicorn --keep-alive, uvicorn --timeout-keep-alive

    def validate(self) -> None:
        for name in ("max_body_bytes", "max_pixels", "max_batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UsageError(f"limits.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("request_timeout_s", "keep_alive_s"):
            if not getattr(self, name) > 0:
                raise UsageError(f"limits.{name} must be > 0, got {getattr(self, name)!r}")


@dataclass
class TargetConfig:
    """One deployment choice: framework x server x workers/threads x model x format (+ limits).

    The model is a zoo model (``model``, ``format``) or a user's file (``model_file``; ``model`` is then its
    name, default the file's stem, and ``format`` comes from its extension unless given); the other
    ``model_file`` options are those of ``deploybench.targets.modelfile.UserModel``."""

    framework: str = "fastapi"  # "flask" | "fastapi"
    server: str = (
        ""  # flask: gunicorn-sync | gunicorn-gthread; fastapi: uvicorn | gunicorn-uvicorn ("" = default)
    )
    model: str = ""  # "" = iris-rf, or the stem of model_file
    format: str = ""  # "" = onnx, or from model_file's extension
    workers: int = 1
    threads: int = 1  # gunicorn-gthread only
    intra_op_threads: int = 1  # torch / onnxruntime / OpenMP threads per worker
    cpus: list[int] | None = None  # CPU affinity of the server and its workers
    host: str = "127.0.0.1"
    port: int = 0  # 0 = the OS picks a free port when the launcher binds
    zoo_dir: str | None = None  # None = deploybench.paths.zoo_dir()
    limits: Limits = field(default_factory=Limits)
    inject_delay_ms: float = 0.0  # deliberate extra service time, counted in the "infer" stage
    # a deliberate whole-process pause, once per worker process: the first request arriving at or after
    # inject_stall_at_s (counted from that process's first prediction request) stalls it inject_stall_s
    inject_stall_at_s: float | None = None
    inject_stall_s: float = 0.0
    metrics: bool = False  # GET /metrics (Prometheus, deploybench.targets.metrics); off: a lean app, a 404
    handler: str = "auto"  # FastAPI: "inline" | "threadpool" | "auto" (deploybench.vocabulary.HANDLER_STYLES)
    # a user's model file instead of a zoo model (deploybench.targets.modelfile)
    model_file: str | None = None
    input_shape: list[int] | None = None  # per item, when the model does not declare it
    sample_input: str | None = None  # .npy / .json batch (shape + warm-up input)
    labels_file: str | None = None  # class names, one per line
    mean: list[float] | None = None  # image normalisation (default 0)
    std: list[float] | None = None  # (default 1)
    resize_px: int | None = None  # image: shorter side to this, then centre crop (default: straight resize)
    trust_pickle: str | None = None  # sha256 the user vouches for: the opt-in to unpickle their file
    # server-side dynamic batching (deploybench.targets.batching), Triton's dynamic batcher as the model:
    # 0 = off; >= 2 = requests arriving together run as one model call of up to this many ROWS (a request of
    # k instances takes k; a single request over the size runs alone)
    max_batch_size: int = 0
    max_queue_delay_us: int = 0  # how long the first queued request waits for more rows (Triton's
    # max_queue_delay_microseconds)
    ort_opt_level: str = "all"  # onnxruntime graph optimisation (deploybench.vocabulary.ORT_OPT_LEVELS)
    inter_op_threads: int = 1  # onnxruntime inter_op_num_threads (intra_op_threads: the threads per op)

    def __post_init__(self) -> None:
        if isinstance(self.limits, dict):
            self.limits = Limits(**self.limits)
        if self.model_file is not None:
            self.model_file = str(Path(self.model_file).expanduser().absolute())
            if not self.model:
                self.model = default_model_name(self.model_file)
            if not self.format:
                try:
                    self.format = resolve_format(self.model_file)
                except ArtifactError:
                    self.format = ""  # validate() says why
        self.model = self.model or "iris-rf"
        self.format = self.format or ("onnx" if self.model_file is None else "")
        if not self.server and self.framework in DEFAULT_SERVER:
            self.server = DEFAULT_SERVER[self.framework]
        if self.zoo_dir is not None:
            self.zoo_dir = str(self.zoo_dir)
        if self.cpus is not None:
            self.cpus = sorted({int(c) for c in self.cpus})

    def validate(self) -> None:
        """Raise UsageError for a combination that cannot be served."""
        if self.framework not in FRAMEWORK_SERVERS:
            raise UsageError(f"framework must be one of {sorted(FRAMEWORK_SERVERS)}, got {self.framework!r}")
        if self.server not in FRAMEWORK_SERVERS[self.framework]:
            raise UsageError(
                f"server {self.server!r} cannot run {self.framework}; choose one of "
                f"{', '.join(FRAMEWORK_SERVERS[self.framework])}"
            )
        for name in ("workers", "threads", "intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be an integer >= 1, got {value!r}")
        if self.threads > 1 and self.server != "gunicorn-sync" and self.server != "gunicorn-gthread":
            raise UsageError(f"threads > 1 needs --server gunicorn-gthread (not {self.server})")
        if self.threads > 1 and self.server == "gunicorn-sync":
            raise UsageError("threads > 1 needs --server gunicorn-gthread (gunicorn-sync is one thread)")
        if not (isinstance(self.port, int) and 0 <= self.port <= 65535):
            raise UsageError(f"port must be 0..65535, got {self.port!r}")
        if self.handler not in HANDLER_STYLES:
            raise UsageError(f"handler must be one of {', '.join(HANDLER_STYLES)}, got {self.handler!r}")
        if self.handler != "auto" and self.framework != "fastapi":
            raise UsageError(
                f"handler {self.handler!r} is a FastAPI option; for Flask choose the server "
                "(gunicorn-sync or gunicorn-gthread)"
            )
        if not self.inject_delay_ms >= 0:
            raise UsageError(f"inject_delay_ms must be >= 0, got {self.inject_delay_ms!r}")
        self._validate_stall()
        if not isinstance(self.metrics, bool):
            raise UsageError(f"metrics must be true or false, got {self.metrics!r}")
        if self.cpus is not None:
            allowed = os.sched_getaffinity(0)
            if not self.cpus or not set(self.cpus) <= allowed:
                raise UsageError(
                    f"cpus {self.cpus} must be a non-empty subset of the usable CPUs {sorted(allowed)}"
                )
        self.limits.validate()
        self._validate_batching()
        if self.ort_opt_level not in ORT_OPT_LEVELS:
            raise UsageError(
                f"ort_opt_level must be one of {', '.join(ORT_OPT_LEVELS)}, got {self.ort_opt_level!r}"
            )
        why = ort_options_unsupported(self)
        if why is not None:
            raise UsageError(why)
        if self.model_file is not None:
            if not self.format:
                resolve_format(self.model_file)  # raises: not a model, or the extension tells nothing
            self.user_model().check()
            return
        if self.model not in MODELS:
            raise UsageError(f"unknown model {self.model!r}; choose one of {', '.join(MODELS)}")
        why = missing_format_reason(MODELS[self.model], self.format)
        if why is not None:
            raise UsageError(why)

    def _validate_batching(self) -> None:
        for name, top in (("max_batch_size", MAX_BATCH_SIZE), ("max_queue_delay_us", MAX_QUEUE_DELAY_US)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise UsageError(f"{name} must be an integer in 0..{top}, got {value!r}")
        if self.max_batch_size == 1:
            raise UsageError("max_batch_size 1 batches nothing: give 0 (off) or >= 2 rows")
        if self.max_queue_delay_us and not self.max_batch_size:
            raise UsageError("max_queue_delay_us needs max_batch_size >= 2 (dynamic batching is off)")
        why = batching_unsupported(self)
        if why is not None:
            raise UsageError(why)

    def batching(self) -> bool:
        """Does this target batch requests on the server side (max_batch_size >= 2)?"""
        return self.max_batch_size >= 2

    def _validate_stall(self) -> None:
        at_s, for_s = self.inject_stall_at_s, self.inject_stall_s

        def bad(value: object) -> bool:
            return isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf

        if at_s is not None and bad(at_s):
            raise UsageError(f"inject_stall_at_s must be a finite number of seconds >= 0, got {at_s!r}")
        if bad(for_s):
            raise UsageError(f"inject_stall_s must be a finite number of seconds >= 0, got {for_s!r}")
        if for_s > 0 and at_s is None:
            raise UsageError(
                "inject_stall_s needs inject_stall_at_s: when the stall starts, in seconds from the worker's "
                "first prediction request (0 = at that request)"
            )
        if at_s is not None and for_s == 0:
            raise UsageError("inject_stall_at_s needs inject_stall_s > 0: how long the stall lasts")

    def multiprocess_metrics(self) -> bool:
        """Does /metrics need prometheus_client's multiprocess mode? With --metrics, under gunicorn (any
        number of workers: its workers are not the process the launcher starts) or several uvicorn workers."""
        return self.metrics and (self.server.startswith("gunicorn") or self.workers > 1)

    def task(self) -> str | None:
        """The served model's task ("tabular" | "image") as far as the config tells without loading it: the
        zoo catalog, else a model file's ``input_shape`` ([F] tabular, [C, H, W] image); None if unknown."""
        if self.model_file is None:
            spec = MODELS.get(self.model)
            return spec.task if spec is not None else None
        if self.input_shape is not None:
            return "tabular" if len(self.input_shape) == 1 else "image"
        return None

    def resolved_handler(self, task: str | None = None) -> str:
        """The handler style this target really runs: FastAPI "inline" | "threadpool" ("auto" resolved by the
        model's task — ``task`` when the caller knows it, e.g. a loaded model file, else ``self.task()`` —
        through AUTO_HANDLER); Flask "" (its style is the server: gunicorn-sync or gunicorn-gthread)."""
        if self.framework != "fastapi":
            return ""
        if self.handler != "auto":
            return self.handler
        return AUTO_HANDLER.get(task or self.task() or "", AUTO_HANDLER_UNKNOWN_TASK)

    def user_model(self) -> UserModel:
        """The user model this config serves one file of (only with ``model_file``)."""
        if self.model_file is None:
            raise UsageError(f"{self.model} is a zoo model, not a model file")
        return UserModel(
            name=self.model,
            files={self.format: self.model_file},
            input_shape=self.input_shape,
            sample_input=self.sample_input,
            labels_file=self.labels_file,
            mean=self.mean,
            std=self.std,
            resize_px=self.resize_px,
            trust_pickle=self.trust_pickle,
        )

    def resolved_zoo_dir(self) -> Path:
        return Path(self.zoo_dir).resolve() if self.zoo_dir else paths.zoo_dir().resolve()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TargetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"unknown target config key(s): {', '.join(unknown)}")
        limits = d.get("limits") or {}
        unknown_limits = sorted(set(limits) - {f.name for f in fields(Limits)})
        if unknown_limits:
            raise UsageError(f"unknown limits key(s): {', '.join(unknown_limits)}")
        return cls(**{**d, "limits": Limits(**limits)})


def batching_unsupported(config: TargetConfig) -> str | None:
    """Why ``config`` cannot batch requests on the server side (None: it can, or it does not ask to).

    Batching needs requests in flight together in one worker process: FastAPI (uvicorn, gunicorn-uvicorn)
    always has them (its event loop reads on while a batch waits); Flask only under gunicorn-gthread with
    threads >= 2 (gunicorn-sync, or one thread, handles one request at a time per process)."""
    if not config.batching():
        return None
    if config.framework == "flask" and (config.server != "gunicorn-gthread" or config.threads < 2):
        one = "gunicorn-sync handles" if config.server == "gunicorn-sync" else "one thread handles"
        return (
            f"max_batch_size {config.max_batch_size} needs requests in flight together, but on flask/"
            f"{config.server} with {config.threads} thread(s) {one} one request at a time per worker: "
            "use --server gunicorn-gthread --threads N (N >= 2; N >= max_batch_size to fill a batch from one "
            "worker's threads), or --framework fastapi"
        )
    return None


def ort_options_unsupported(config: TargetConfig) -> str | None:
    """Why ``config``'s onnxruntime options cannot apply (None: they can, or they are the defaults): a
    non-default ``ort_opt_level`` / ``inter_op_threads`` with a format onnxruntime does not serve."""
    changed = [
        f"{name} {getattr(config, name)!r}"
        for name, default in (("ort_opt_level", "all"), ("inter_op_threads", 1))
        if getattr(config, name) != default
    ]
    if not changed or config.format in ONNX_FORMATS:
        return None
    return (
        f"{' and '.join(changed)} are onnxruntime options, but format {config.format or '(none)'!r} is not "
        f"served by onnxruntime: use --format {' or '.join(ONNX_FORMATS)}, or leave them at their defaults"
    )


def inspect_model_file(config: TargetConfig) -> UserModelInfo:
    """Validate a model-file target and load + inspect its file here, in the launcher, so that a file that is
    no model, a format that does not fit it, a shape that cannot be inferred or a refused pickle is a
    UsageError (exit code 2) before any server starts. The workers repeat the same (deterministic) steps."""
    config.validate()
    # library thread defaults here: nothing process-wide is set in the launcher
    info, predictors = inspect_user_model(config.user_model())
    predictors.clear()  # the launcher serves nothing: free the loaded model now
    return info


def config_from_env() -> TargetConfig:
    """The TargetConfig a launched worker serves (JSON in DEPLOYBENCH_TARGET_CONFIG)."""
    raw = os.environ.get(CONFIG_ENV)
    if not raw:
        raise TargetError(f"{CONFIG_ENV} is not set: start targets with `deploybench serve` or ServerProcess")
    return TargetConfig.from_dict(json.loads(raw))


def bind_listener(host: str, port: int, backlog: int = LISTEN_BACKLOG) -> socket.socket:
    """A TCP socket bound to ``host:port`` (0 = the OS picks) and listening: the socket a target serves from.

    SO_REUSEADDR as servers set it (a port left in TIME_WAIT can be reused, one with a listener cannot), and
    TCP_NODELAY, which Linux copies to every accepted connection (uvicorn's ``--fd`` path would otherwise
    leave Nagle on: +40 ms per response). A port that cannot be bound is a TargetError naming host:port.
    """
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise TargetError(f"cannot listen on {where}: {exc}") from None
    family, sock_type, proto, _, address = infos[0]
    sock = socket.socket(family, sock_type, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise TargetError(f"port {where} is already in use") from None
        raise TargetError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    return sock


def _whole_s(seconds: float) -> str:
    """gunicorn's --timeout and --keep-alive take whole seconds: a fraction is rounded up (at least 1)."""
    return str(max(1, math.ceil(seconds)))


def server_command(config: TargetConfig, port: int, *, fd: int | None = None) -> list[str]:
    """The command line that serves ``config`` on ``port`` (the config itself travels in the environment).

    With ``fd`` the server serves from that already bound, listening socket (inherited from the launcher;
    ``port`` is then only the port it is bound to), else it binds ``config.host:port`` itself.
    """
    lim = config.limits
    if config.server == "uvicorn":
        listen = ["--fd", str(fd)] if fd is not None else ["--host", config.host, "--port", str(port)]
        return [
            sys.executable, "-m", "uvicorn", "--factory", "deploybench.targets.fastapi_app:app_from_env",
            *listen, "--workers", str(config.workers),
            "--timeout-keep-alive", f"{lim.keep_alive_s:g}", "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
    worker_class, app = {
        "gunicorn-sync": ("sync", "deploybench.targets.flask_app:app_from_env()"),
        "gunicorn-gthread": ("gthread", "deploybench.targets.flask_app:app_from_env()"),
        "gunicorn-uvicorn": (
            "uvicorn_worker.UvicornWorker",
            "deploybench.targets.fastapi_app:app_from_env()",
        ),
    }[config.server]
    host = f"[{config.host}]" if ":" in config.host else config.host
    bind = f"fd://{fd}" if fd is not None else f"{host}:{port}"
    cmd = [
        sys.executable, "-m", "gunicorn", "--bind", bind,
        "--workers", str(config.workers), "--worker-class", worker_class,
        "--timeout", _whole_s(lim.request_timeout_s), "--graceful-timeout", f"{STOP_GRACE_S / 2:g}",
        "--keep-alive", _whole_s(lim.keep_alive_s), "--log-level", "warning", "--error-logfile", "-",
    ]  # fmt: skip
    if config.server == "gunicorn-gthread":
        cmd += ["--threads", str(config.threads)]
    if config.metrics:  # the child_exit hook that drops a dead worker's live gauges (multiprocess mode)
        cmd += ["--config", f"python:{GUNICORN_CONF_MODULE}"]
    return [*cmd, app]


def server_env(
    config: TargetConfig, ready_dir: Path | None = None, metrics_dir: Path | None = None
) -> dict[str, str]:
    """The target's environment: its config (JSON), the ready folder, model thread counts, and with
    ``metrics_dir`` prometheus_client's multiprocess folder (never one inherited from the caller)."""
    env = dict(os.environ)
    for var in (MULTIPROC_DIR_ENV, MULTIPROC_DIR_ENV.lower()):
        env.pop(var, None)
    if metrics_dir is not None:
        env[MULTIPROC_DIR_ENV] = str(metrics_dir)
    cfg = config.to_dict()
    cfg["zoo_dir"] = str(config.resolved_zoo_dir())
    env[CONFIG_ENV] = json.dumps(cfg)
    if ready_dir is not None:
        env[READY_DIR_ENV] = str(ready_dir)
    threads = str(config.intra_op_threads)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = threads
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("FLASK_DEBUG", None)  # never debug mode
    return env


class ChildServer:
    """What every server deploybench starts as a child process group shares (``ServerProcess`` and
    ``deploybench.targets.external.ExternalServerProcess``): its pid, exit code, log and liveness, stopping
    the group, and the context manager. A subclass sets ``host``-dependent ``url``, ``start()`` and
    ``cleanup()``, and fills ``_proc``, ``_log_path`` and ``_tmp``."""

    _proc: subprocess.Popen[bytes] | None = None
    _log_path: Path | None = None
    _tmp: Path | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def returncode(self) -> int | None:
        """The server process's exit code (-N if killed by signal N); None while running or never started."""
        return self._proc.poll() if self._proc is not None else None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, n_chars: int = LOG_TAIL_CHARS) -> str:
        return tail_text(self._log_path, n_chars, "(no log)") if self._log_path else ""

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the process group, SIGKILL whatever is left after ``grace_s``. Returns the exit code."""
        return stop_process_group(self._proc, grace_s) if self._proc is not None else None

    def cleanup(self) -> None:
        """Remove the temporary folder (and the default log in it). Call after stop()."""
        if self._tmp is not None and not self.is_alive():
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def start(self) -> ChildServer:  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.cleanup()


class ServerProcess(ChildServer):
    """A target server running as a child process group. Use as a context manager, or start()/stop()."""

    def __init__(
        self,
        config: TargetConfig,
        log_path: str | os.PathLike[str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> None:
        self.config = config
        self.ready_timeout_s = ready_timeout_s
        self._log_path = Path(log_path) if log_path is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._metrics_dir: Path | None = None  # PROMETHEUS_MULTIPROC_DIR: made at start, removed at stop
        self.port = config.port
        self.command: list[str] = []
        self.startup_s: float | None = None  # launch -> every worker ready

    # -- public --------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    def start(self) -> ServerProcess:
        if self._proc is not None:
            raise TargetError("this ServerProcess was already started")
        self.config.validate()
        # Bind first, then report: the port in ``url`` is the one this socket holds, and nobody can take it
        # between now and the server serving it (the server inherits the socket; no pick-then-bind race).
        listener = bind_listener(self.config.host, self.config.port)
        try:
            self.port = int(listener.getsockname()[1])
            self.command = server_command(self.config, self.port, fd=listener.fileno())
            cmd_text = shlex.join(self.command)
            self._tmp = Path(tempfile.mkdtemp(prefix="deploybench-target-"))
            ready_dir = self._tmp / "ready"
            ready_dir.mkdir()
            if self.config.multiprocess_metrics():  # fresh and private: no values of an earlier server
                self._metrics_dir = Path(tempfile.mkdtemp(prefix="deploybench-metrics-"))
            if self._log_path is None:
                self._log_path = self._tmp / "server.log"
            else:
                self._log_path.parent.mkdir(parents=True, exist_ok=True)
            cpus = self.config.cpus
            t0 = time.perf_counter_ns()
            with self._log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    pinned_argv(self.command, cpus, sys.executable),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=server_env(self.config, ready_dir, self._metrics_dir),
                    pass_fds=(listener.fileno(),),  # the same fd number in the child
                    start_new_session=True,  # own process group: stop() signals the whole group
                )
        except BaseException:
            self.cleanup()
            raise
        finally:
            listener.close()  # the child holds its own copy now (Popen returns after exec): still bound
        try:
            self._wait_ready(ready_dir, cmd_text)
        except BaseException:
            self.stop()
            self.cleanup()
            raise
        self.startup_s = (time.perf_counter_ns() - t0) / 1e9
        return self

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the process group, SIGKILL whatever is left after ``grace_s``, then remove the metrics
        folder. Returns the exit code."""
        code = super().stop(grace_s)
        self._remove_metrics_dir()
        return code

    def _remove_metrics_dir(self) -> None:
        if self._metrics_dir is not None and not self.is_alive():
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
            self._metrics_dir = None

    @property
    def metrics_dir(self) -> Path | None:
        """The server's PROMETHEUS_MULTIPROC_DIR while it runs (multiprocess /metrics), else None."""
        return self._metrics_dir

    def cleanup(self) -> None:
        """Remove the temporary folder (ready files, and the default log). Call after stop()."""
        self._remove_metrics_dir()
        super().cleanup()

    # -- internals -------------------------------------------------------------------------------------
    def _fail(self, why: str, cmd_text: str) -> TargetError:
        return TargetError(
            f"{why}\ncommand: {cmd_text}\nlog ({self._log_path}), last lines:\n{self.log_tail()}"
        )

    def _wait_ready(self, ready_dir: Path, cmd_text: str) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.ready_timeout_s
        delay_s = 0.02
        while True:
            code = self._proc.poll()
            if code is not None:
                raise self._fail(f"target exited with code {code} before it was ready", cmd_text)
            failed = sorted(ready_dir.glob("*.failed"))
            if failed:
                detail = failed[0].read_text(errors="replace")
                raise self._fail(f"a worker failed to load the model: {detail}", cmd_text)
            n_ready = len(list(ready_dir.glob("*.ready")))
            if n_ready >= self.config.workers and self._health_ok():
                return
            if time.monotonic() >= deadline:
                raise self._fail(
                    f"target not ready after {self.ready_timeout_s:g} s ({n_ready}/{self.config.workers} "
                    "workers loaded)",
                    cmd_text,
                )
            time.sleep(delay_s)  # polling interval, not a guess at the start-up time
            delay_s = min(delay_s * 1.5, 0.25)

    def _health_ok(self) -> bool:
        """Ready: /health answers 200 with this config's framework, model and format (not another
        server's)."""
        info = fetch_health(self.url, timeout_s=2.0)
        return (
            info is not None
            and info.get("status") == "ok"
            and info.get("model") == self.config.model
            and info.get("format") == self.config.format
            and info.get("framework") == self.config.framework
        )
