"""The overhead benchmark: each of our targets beside a minimal app on the same framework, server, model
artifact and worker count, loaded by the same generator in one run, rounds interleaved (minimal, target,
minimal, target, ...) so drift on the machine hits both alike.

``run_overhead(...)`` returns one row per framework x server x model x handler with both sides' throughput
and P50/P99 (medians over the rounds) and the ratios target / minimal. ``run_handler_styles(...)`` compares
the FastAPI handler styles (inline vs threadpool) of our target on each model: the highest closed-loop
throughput whose P99 meets the model's SLO, and the P99 at one common open-loop rate. Nothing is printed:
``deploybench.bench.overhead.report`` renders, ``python -m deploybench.bench.overhead`` writes the files.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from PIL import Image

from deploybench import paths
from deploybench.bench.overhead.loadgen import LoadResult, Request, default_generator, run_load, run_python
from deploybench.bench.overhead.minimal_model import HANDLER_ENV, MODEL_NAME_ENV, MODEL_PATH_ENV
from deploybench.env import pinned_argv
from deploybench.errors import TargetError
from deploybench.procs import fetch_health, process_tree_cpu_s, tail_text
from deploybench.targets.catalog import MODELS
from deploybench.targets.serve import (
    STOP_GRACE_S,
    ServerProcess,
    TargetConfig,
    bind_listener,
    stop_process_group,
)

FORMAT = "onnx"  # the artifact both sides serve
DEFAULT_MODELS: tuple[str, ...] = ("iris-rf", "resnet18")
# (framework, server, handler): every server mode; FastAPI in both handler styles
DEFAULT_MODES: tuple[tuple[str, str, str], ...] = (
    ("fastapi", "uvicorn", "inline"),
    ("fastapi", "uvicorn", "threadpool"),
    ("fastapi", "gunicorn-uvicorn", "inline"),
    ("fastapi", "gunicorn-uvicorn", "threadpool"),
    ("flask", "gunicorn-sync", ""),
    ("flask", "gunicorn-gthread", ""),
)
# P99 SLO per model task for the handler-style table (ms): a fast model answers in well under 10 ms
SLO_MS: dict[str, float] = {"tabular": 10.0, "image": 250.0}
SWEEP_CONNECTIONS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
BOUNDARY = "deploybench-overhead-boundary"
READY_TIMEOUT_S = 120.0
FASTAPI_APP = "deploybench.bench.overhead.minimal_fastapi:create_app"


@dataclass
class Options:
    models: tuple[str, ...] = DEFAULT_MODELS
    modes: tuple[tuple[str, str, str], ...] = DEFAULT_MODES
    duration_s: float = 8.0  # per round and side
    rounds: int = 2
    connections: int = 8
    threads: int = 4  # gunicorn-gthread threads per worker (both sides)
    generator: str = field(default_factory=default_generator)
    zoo_dir: Path | None = None
    cpus: list[int] | None = None  # CPU affinity of both servers (None: no pinning)
    sweep_connections: tuple[int, ...] = SWEEP_CONNECTIONS  # the handler-style table's closed-loop sweep


# -- requests --------------------------------------------------------------------------------------------
def test_image_jpeg(size_px: int = 224) -> bytes:
    """A deterministic RGB gradient, JPEG-encoded (what the image requests upload)."""
    img = Image.new("RGB", (size_px, size_px))
    img.putdata([(x % 256, y % 256, (x + y) % 256) for y in range(size_px) for x in range(size_px)])
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def model_request(model: str) -> Request:
    """The request both sides get: one iris row, or one 224x224 JPEG as a multipart upload (field file)."""
    if MODELS[model].task == "tabular":
        return Request("/predict", b'{"features": [5.1, 3.5, 1.4, 0.2]}', "application/json")
    body = (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + test_image_jpeg()
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    return Request("/predict/image", body, f"multipart/form-data; boundary={BOUNDARY}")


# -- the minimal apps as server processes ------------------------------------------------------------------
class MinimalServer:
    """A minimal app (``deploybench.bench.overhead.minimal_fastapi`` / ``minimal_flask``) served by the same
    server as the target it is the yardstick of, on an inherited listening socket (a free loopback port)."""

    def __init__(self, config: TargetConfig, handler: str, threads: int) -> None:
        self.config = config
        self.handler = handler or "inline"
        self.threads = threads
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="deploybench-minimal-"))
        self._log_path = self._tmp / "server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def command(self, fd: int) -> list[str]:
        keep_alive = f"{self.config.limits.keep_alive_s:g}"
        if self.config.server == "uvicorn":
            return [
                sys.executable, "-m", "uvicorn", "--factory", FASTAPI_APP,
                "--fd", str(fd), "--workers", "1", "--timeout-keep-alive", keep_alive,
                "--no-access-log", "--log-level", "warning",
            ]  # fmt: skip
        worker_class, app = {
            "gunicorn-sync": ("sync", "deploybench.bench.overhead.minimal_flask:create_app()"),
            "gunicorn-gthread": ("gthread", "deploybench.bench.overhead.minimal_flask:create_app()"),
            "gunicorn-uvicorn": ("uvicorn_worker.UvicornWorker", f"{FASTAPI_APP}()"),
        }[self.config.server]
        cmd = [
            sys.executable, "-m", "gunicorn", "--bind", f"fd://{fd}", "--workers", "1",
            "--worker-class", worker_class, "--keep-alive", keep_alive, "--log-level", "warning",
        ]  # fmt: skip
        if self.config.server == "gunicorn-gthread":
            cmd += ["--threads", str(self.threads)]
        return [*cmd, app]

    def start(self) -> MinimalServer:
        listener = bind_listener("127.0.0.1", 0)
        try:
            self.port = int(listener.getsockname()[1])
            env = dict(os.environ)
            env.update({
                MODEL_PATH_ENV: str(self.config.resolved_zoo_dir() / self.config.model / f"model.{FORMAT}"),
                MODEL_NAME_ENV: self.config.model,
                HANDLER_ENV: self.handler,
                "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1",
                "OPENBLAS_NUM_THREADS": "1",
                "PYTHONUNBUFFERED": "1",
            })  # fmt: skip
            cpus = self.config.cpus
            with self._log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    pinned_argv(self.command(listener.fileno()), cpus, sys.executable),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    pass_fds=(listener.fileno(),),
                    start_new_session=True,
                )
        finally:
            listener.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._health_ok():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise TargetError(f"the minimal app did not start; log:\n{tail}")
            time.sleep(0.05)  # polling interval
        return self

    def log_tail(self, n_chars: int = 3000) -> str:
        return tail_text(self._log_path, n_chars, "(no log)")

    def _health_ok(self) -> bool:
        return fetch_health(f"http://127.0.0.1:{self.port}") is not None

    def stop(self) -> None:
        if self._proc is not None:
            stop_process_group(self._proc, STOP_GRACE_S)
        shutil.rmtree(self._tmp, ignore_errors=True)


@dataclass(frozen=True)
class Served:
    url: str
    pid: int  # the server's main process (its workers are its children)


@contextlib.contextmanager
def serving(config: TargetConfig, threads: int, *, minimal: bool) -> Iterator[Served]:
    """Serve ``config`` (our target) or its minimal app; yield its URL and pid; always stopped."""
    if minimal:
        server = MinimalServer(config, config.handler if config.handler != "auto" else "", threads)
        server.start()
        try:
            assert server.pid is not None
            yield Served(server.url, server.pid)
        finally:
            server.stop()
    else:
        with ServerProcess(config, ready_timeout_s=READY_TIMEOUT_S) as target:
            assert target.pid is not None
            yield Served(target.url, target.pid)


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by the process ``pid`` and its live descendants."""
    return process_tree_cpu_s(pid) or 0.0


def measured(
    served: Served, generator: str, request: Request, *, connections: int, duration_s: float
) -> LoadResult:
    """One closed-loop run, with the server's CPU time per request."""
    cpu0 = server_cpu_s(served.pid)
    result = run_load(generator, served.url, request, connections=connections, duration_s=duration_s)
    cpu_s = server_cpu_s(served.pid) - cpu0
    if result.requests:
        result.server_cpu_us_per_request = cpu_s / result.requests * 1e6
    return result


def target_config(framework: str, server: str, model: str, handler: str, opts: Options) -> TargetConfig:
    return TargetConfig(
        framework=framework,
        server=server,
        model=model,
        format=FORMAT,
        handler=handler or "auto",
        threads=opts.threads if server == "gunicorn-gthread" else 1,
        zoo_dir=str(opts.zoo_dir) if opts.zoo_dir else None,
        cpus=opts.cpus,
    )


# -- the overhead table ------------------------------------------------------------------------------------
def _cpus_per_request(results: list[LoadResult]) -> list[float]:
    return [r.server_cpu_us_per_request for r in results if r.server_cpu_us_per_request is not None]


def _side(results: list[LoadResult]) -> dict[str, Any]:
    return {
        "throughput_rps": median(r.throughput_rps for r in results),
        "p50_us": median(r.p50_us for r in results),
        "p99_us": median(r.p99_us for r in results),
        "errors": sum(r.errors for r in results),
        "server_cpu_us_per_request": median(cpu) if (cpu := _cpus_per_request(results)) else None,
        "runs": [r.to_dict() for r in results],
    }


def overhead_row(framework: str, server: str, model: str, handler: str, opts: Options) -> dict[str, Any]:
    """Both sides of one row, served at once and loaded in interleaved rounds."""
    config = target_config(framework, server, model, handler, opts)
    config.validate()
    request = model_request(model)
    minimal_runs: list[LoadResult] = []
    target_runs: list[LoadResult] = []
    with (
        serving(config, opts.threads, minimal=True) as minimal_server,
        serving(config, opts.threads, minimal=False) as target_server,
    ):
        # a short warm-up of each side first (connections, caches, lazily built paths)
        for served in (minimal_server, target_server):
            run_load(opts.generator, served.url, request, connections=opts.connections, duration_s=1.0)
        for _ in range(opts.rounds):
            for served, runs in ((minimal_server, minimal_runs), (target_server, target_runs)):
                runs.append(
                    measured(
                        served,
                        opts.generator,
                        request,
                        connections=opts.connections,
                        duration_s=opts.duration_s,
                    )
                )
    minimal, target = _side(minimal_runs), _side(target_runs)
    return {
        "framework": framework,
        "server": server,
        "model": model,
        "format": FORMAT,
        "task": MODELS[model].task,
        "handler": config.resolved_handler(),
        "workers": config.workers,
        "threads": config.threads,
        "minimal": minimal,
        "target": target,
        "ratio_throughput": target["throughput_rps"] / minimal["throughput_rps"]
        if minimal["throughput_rps"]
        else None,
        "ratio_p99": target["p99_us"] / minimal["p99_us"] if minimal["p99_us"] else None,
        "ratio_cpu_per_request": target["server_cpu_us_per_request"] / minimal["server_cpu_us_per_request"]
        if minimal["server_cpu_us_per_request"] and target["server_cpu_us_per_request"]
        else None,
    }


def run_overhead(opts: Options, on_row: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every model x mode of ``opts``: one row each (``on_row`` sees each as it is done)."""
    rows = []
    for model in opts.models:
        for framework, server, handler in opts.modes:
            row = overhead_row(framework, server, model, handler, opts)
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return {
        "kind": "overhead",
        "generator": opts.generator,
        "command": generator_command(opts),
        "duration_s": opts.duration_s,
        "rounds": opts.rounds,
        "connections": opts.connections,
        "gthread_threads": opts.threads,
        "cpus": opts.cpus,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }


def generator_command(opts: Options) -> str:
    if opts.generator == "wrk":
        return f"wrk -t1 -c{opts.connections} -d{max(1, round(opts.duration_s))}s (closed loop)"
    return (
        f"lean load engine, {opts.connections} connections, {opts.duration_s:g} s (closed loop; wrk not on "
        "PATH — the lean engine costs a few times wrk's CPU per request)"
    )


# -- the handler-style table -------------------------------------------------------------------------------
def handler_style_row(model: str, handler: str, opts: Options) -> dict[str, Any]:
    """One handler style of our FastAPI target (uvicorn) on ``model``: a closed-loop sweep over connections;
    the best throughput whose P99 meets the model's SLO."""
    config = target_config("fastapi", "uvicorn", model, handler, opts)
    slo_us = SLO_MS[MODELS[model].task] * 1000
    request = model_request(model)
    sweep: list[dict[str, Any]] = []
    with serving(config, opts.threads, minimal=False) as served:
        run_load(opts.generator, served.url, request, connections=opts.connections, duration_s=1.0)
        for c in opts.sweep_connections:
            r = measured(served, opts.generator, request, connections=c, duration_s=opts.duration_s)
            sweep.append(r.to_dict())
    ok = [s for s in sweep if s["p99_us"] <= slo_us and s["errors"] == 0]
    best = max(ok, key=lambda s: s["throughput_rps"]) if ok else None
    return {
        "model": model,
        "task": MODELS[model].task,
        "server": "uvicorn",
        "handler": handler,
        "slo_p99_ms": slo_us / 1000,
        "throughput_under_slo_rps": best["throughput_rps"] if best else 0.0,
        "connections_at_best": best["connections"] if best else None,
        "max_throughput_rps": max(s["throughput_rps"] for s in sweep),
        "sweep": sweep,
    }


def run_handler_styles(
    opts: Options, on_row: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """inline vs threadpool on each model: the sweep first, then both at one common open-loop rate (half
    the lower of their throughputs under the SLO, so both can carry it)."""
    rows = []
    for model in opts.models:
        first = {h: handler_style_row(model, h, opts) for h in ("inline", "threadpool")}
        carried = [r["throughput_under_slo_rps"] for r in first.values() if r["throughput_under_slo_rps"]]
        rate = round(0.5 * min(carried), 1) if carried else None
        for handler in ("inline", "threadpool"):
            row = first[handler]
            if rate:
                config = target_config("fastapi", "uvicorn", model, handler, opts)
                with serving(config, opts.threads, minimal=False) as served:
                    request = model_request(model)
                    run_load(
                        opts.generator, served.url, request, connections=opts.connections, duration_s=1.0
                    )
                    row["at_common_rate"] = run_python(
                        served.url, request, connections=64, duration_s=opts.duration_s, rate_rps=rate
                    ).to_dict()
            row.setdefault("at_common_rate", None)
            row["common_rate_rps"] = rate
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return {
        "kind": "handler-styles",
        "generator": opts.generator,
        "duration_s": opts.duration_s,
        "sweep_connections": list(opts.sweep_connections),
        "open_loop_generator": "lean engine (open loop, latency from the intended send time)",
        "cpus": opts.cpus,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
    }


def default_out_dir() -> Path:
    return paths.results_dir() / "overhead"
