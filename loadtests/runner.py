"""Headless runner behind ``deploybench load`` (``deploybench.commands.load``): start a target, wait for
health, run a Locust scenario as a bounded subprocess, stop the target, return the run record.

    deploybench load --framework fastapi --server uvicorn --model iris-rf --format onnx --scenario tabular \\
        --duration 10 --users 8 | --rate 200 --load-model poisson --out results/
    deploybench load --url http://127.0.0.1:8000 --scenario health --duration 5
    deploybench load --url https://my.api --path /v1/predict --payload rows.jsonl --header 'X-Key: ...'
    deploybench load --url https://my.api --locustfile my_api.py

The record is written by the Locust process itself as the run goes (status "running"), finalised at the end;
the runner adds the target config, Locust's exit code and log path, and marks the run "failed" if the target
died.

Paths: every path given here (results folder, record, payload, locustfile) is relative to the caller's working
directory; the runner makes them absolute, and Locust runs in the caller's working directory too (a user's
locustfile may open files relative to it). Locust imports this very copy of ``loadtests`` (``python -P`` and
``PYTHONPATH``), whether deploybench is installed, installed editable, or run from a checkout.
"""

from __future__ import annotations

import json
import math
import os
import signal
import site
import socket
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from deploybench.env import own_cpus, pinned_argv
from deploybench.errors import TargetError, UsageError
from deploybench.io import utc_now
from deploybench.loadtests.core import LoadOptions
from deploybench.loadtests.lean import RunMonitor, exited, run_lean
from deploybench.loadtests.payloads import HEADERS_ENV, parse_headers, request_spec
from deploybench.paths import results_dir as default_results_dir
from deploybench.procs import signal_group, tail_text
from deploybench.progress import LoadFigures
from deploybench.record import SWEEP_FILE, RunRecord, load_record, make_run_id
from deploybench.sweep import Sweep, check_points, point_file_name, point_from_record, point_label, save_sweep
from deploybench.targets.serve import ServerProcess
from deploybench.vocabulary import ENGINES, LOAD_MODELS, OPEN_LOOP_MODELS, SCENARIOS

SCENARIO_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = SCENARIO_DIR.parent  # holds this copy of the packages: a checkout or site-packages
# The built-in scenarios and "api" (one request of your own: --path/--method/--payload).
RUNNER_SCENARIOS: tuple[str, ...] = (*SCENARIOS, "api")
API_OPTIONS = ("path", "method", "payload", "multipart_field")
REACH_TIMEOUT_S = 5.0
STOP_GRACE_S = 15.0
MASTER_WAIT_S = 300  # a master for remote workers waits this long for them to connect
ENGINE_ENV = "DEPLOYBENCH_ENGINE"  # the default engine of runs that do not name one (`ab --engine` sets it)
TARGET_EXIT_WAIT_S = 5.0  # after Locust reports the target unreachable: how long to look for its exit
TARGET_LOG_TAIL_CHARS = 1500


def scenario_file(scenario: str) -> Path:
    """The absolute path of a built-in scenario's locustfile (``deploybench locustfile NAME`` prints it)."""
    if scenario not in RUNNER_SCENARIOS:
        raise UsageError(f"unknown scenario {scenario!r} (choose from {', '.join(RUNNER_SCENARIOS)})")
    return SCENARIO_DIR / f"{scenario}.py"


def user_locustfile(path: str | os.PathLike[str]) -> Path:
    """Check a locustfile of your own (absolute path back): it must exist and subclass DeployBenchUser (else
    Locust would run without deploybench's measurement and write no record)."""
    p = Path(os.path.abspath(Path(path).expanduser()))
    if not p.is_file():
        raise UsageError(f"--locustfile {path}: no such file")
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"--locustfile {path}: cannot read it ({exc.strerror or exc})") from None
    if "DeployBenchUser" not in text:
        raise UsageError(
            f"--locustfile {path}: no DeployBenchUser in it; subclass it "
            "(from deploybench.loadtests.user import DeployBenchUser) so the run is measured and recorded"
        )
    return p


def check_reachable(url: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """UsageError unless a TCP connection to the URL's host and port opens within ``timeout_s``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--url must look like http://HOST[:PORT][/PATH] (got {url!r})")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UsageError(f"--url {url}: the port is not a number from 0 to 65535") from None
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except socket.gaierror:
        raise UsageError(f"--url {url} is unreachable: unknown host {parts.hostname!r}") from None
    except TimeoutError:
        raise UsageError(
            f"--url {url} is unreachable: no answer from {parts.hostname}:{port} within {timeout_s:g} s"
        ) from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UsageError(f"--url {url} is unreachable: {why} ({parts.hostname}:{port})") from None


def api_request(options: dict[str, Any]) -> dict[str, Any]:
    """Validate the api scenario's options up front (before a target starts or Locust runs), make the payload
    path absolute in ``options``, and return what the record keeps about the request."""
    if options.get("payload"):
        options["payload"] = os.path.abspath(Path(str(options["payload"])).expanduser())
    spec = request_spec(
        str(options.get("method") or ""), str(options.get("path") or "/"), str(options.get("payload") or ""),
        str(options.get("multipart_field") or "file"),
    )  # fmt: skip
    return spec.describe()


def locust_env(headers: dict[str, str] | None) -> dict[str, str]:
    """The Locust process's environment: this copy of the packages first on its path (unless it is already a
    site-packages folder), and the extra headers as JSON (kept off its command line and log)."""
    env = dict(os.environ)
    sites = {Path(p).resolve() for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if PROJECT_ROOT not in sites:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    if headers is not None:
        env[HEADERS_ENV] = json.dumps(headers)
    return env


def default_users(load_model: str, rate_rps: float | None) -> int:
    """Closed loop: 8 users. Open loop: enough senders for ~40 ms of latency at the rate (at least 8)."""
    if load_model in OPEN_LOOP_MODELS and rate_rps:
        return int(min(500, max(8, math.ceil(rate_rps * 0.04))))
    return 8


def _target_info(target: Any) -> tuple[dict[str, Any], str | None]:
    """(config to merge into the record, model name) for a TargetConfig-like object or a URL."""
    if isinstance(target, str):
        return {"target": {"url": target}}, None
    to_dict = getattr(target, "to_dict", None)
    if callable(to_dict):
        d = to_dict()
        keys = ("framework", "server", "model", "format", "workers", "threads", "intra_op_threads", "cpus",
                "max_batch_size", "max_queue_delay_us", "inter_op_threads", "ort_opt_level")  # fmt: skip
        return {"target": d, **{k: d[k] for k in keys if k in d}}, d.get("model")
    return {"target": {"kind": type(target).__name__}}, None


def run_load(target: Any, scenario: str, **options: Any) -> RunRecord:
    """Run one load test and return its record (also saved at ``record_path`` or in ``results_dir``).

    ``target``: a ``deploybench.targets.serve.TargetConfig`` (started with ServerProcess and stopped
    afterwards), the URL of an already running server, or an object with ``start()/stop()/is_alive()/url``
    (e.g. the tests' known-latency server), which is started and stopped here. ``options`` are those of
    ``run_load_to_file``: duration_s (required), warmup_s, users, rate_rps, load_model, results_dir,
    record_path, generator_cpus, processes (> 0 runs Locust as a master with that many worker processes,
    histograms merged), model, seed, max_lag_s, ready_timeout_s, scenario_options (batch_size for tabular;
    payload_mix, image_size, image_format, image_count for image; path, method, payload, multipart_field for
    api), locustfile (your own scenario), headers and check_url.
    """
    record, _ = run_load_to_file(target, scenario, **options)
    return record


def _validate(
    duration_s: float, warmup_s: float, users: int | None, rate_rps: float | None,
    load_model: str, processes: int, generator_cpus: list[int] | None,
) -> None:  # fmt: skip
    if load_model not in LOAD_MODELS:
        raise UsageError(f"--load-model must be one of {', '.join(LOAD_MODELS)} (got {load_model!r})")
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise UsageError("--duration must be > 0 seconds")
    if not (math.isfinite(warmup_s) and warmup_s >= 0):
        raise UsageError("--warmup must be >= 0 seconds")
    if users is not None and users < 1:
        raise UsageError("--users must be >= 1")
    if load_model in OPEN_LOOP_MODELS:
        if rate_rps is None or not (math.isfinite(rate_rps) and rate_rps > 0):
            raise UsageError(f"--load-model {load_model} needs --rate > 0 (requests/s)")
    elif rate_rps:
        raise UsageError("--rate is for open-loop runs: add --load-model constant or poisson")
    if processes < 0:
        raise UsageError("--processes must be >= 0")
    if generator_cpus is not None:
        allowed = os.sched_getaffinity(0)
        bad = [c for c in generator_cpus if c not in allowed]
        if not generator_cpus or bad:
            raise UsageError(
                f"--generator-cpus {generator_cpus}: CPUs {bad} not available ({sorted(allowed)})"
            )


def run_load_to_file(
    target: Any,
    scenario: str,
    *,
    duration_s: float,
    warmup_s: float = 0.0,
    users: int | None = None,
    rate_rps: float | None = None,
    load_model: str = "closed",
    results_dir: str | os.PathLike[str] | None = None,
    record_path: str | os.PathLike[str] | None = None,
    generator_cpus: list[int] | None = None,
    processes: int = 0,
    model: str | None = None,
    seed: int = 0,
    max_lag_s: float = 5.0,
    scenario_options: dict[str, Any] | None = None,
    ready_timeout_s: float = 60.0,
    locustfile: str | os.PathLike[str] | None = None,
    headers: dict[str, str] | None = None,
    check_url: bool = False,
    engine: str | None = None,
    generator_bound_percent: float | None = None,
    expect_workers: int = 0,
    master_bind: tuple[str, int] = ("127.0.0.1", 0),
    master_port_file: str | os.PathLike[str] | None = None,
    progress: Any = None,
    server_pid: int | None = None,
    started: Any = None,
) -> tuple[RunRecord, Path]:
    """``run_load`` that also returns the record's path.

    ``locustfile``: your own Locust file (a ``DeployBenchUser`` subclass) instead of ``scenario`` (then only a
    label). ``headers``: added to every request (names recorded, values not). Scenario "api" takes
    ``scenario_options`` path, method, payload (a JSON lines file or image folder) and multipart_field.
    ``check_url``: for a URL target, UsageError unless it accepts connections (checked after every other
    input, before anything is written or started).
    ``engine``: "lean" (the default for the built-in scenarios and api) or "locust" (the default, and the
    only engine, for a locustfile of your own); ``processes`` is then the number of lean generator
    processes (0 = one), or of Locust workers.
    ``progress``: a ``deploybench.progress.Progress`` sink for live figures (this code prints nothing).
    ``server_pid``: the server's process when ``target`` is its URL (e.g. compare's started targets), so
    the record's ``cpu_blocks`` carry its CPU; a target started here is known without it.
    ``started``: the target, already started by the caller (a sweep's: one start for all its points): its
    url, pid and liveness are used, and it is neither started nor stopped here; ``target`` still describes it
    in the record.
    """
    if expect_workers:
        if engine == "lean":
            raise UsageError("--expect-workers runs Locust's master/worker distribution: use --engine locust")
        if expect_workers < 0 or processes:
            raise UsageError("--expect-workers N (remote workers) goes without --processes (local ones)")
        engine = "locust"
    engine = resolve_engine(engine, locustfile)
    options = dict(scenario_options or {})
    file = scenario_file(scenario) if locustfile is None else user_locustfile(locustfile)
    if locustfile is not None:
        scenario = file.stem  # a label for the file names; the record takes the users' `scenario`
    _validate(duration_s, warmup_s, users, rate_rps, load_model, processes, generator_cpus)
    stray = sorted(k for k in API_OPTIONS if options.get(k) and scenario != "api" and locustfile is None)
    if stray:
        names = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise UsageError(f"{names}: only for the api scenario (your own endpoint), not {scenario!r}")
    request = api_request(options) if scenario == "api" and locustfile is None else None
    if headers:
        headers = parse_headers([f"{k}: {v}" for k, v in headers.items()])
    if isinstance(target, str) and not target.startswith(("http://", "https://")):
        raise UsageError(f"target URL must start with http:// or https:// (got {target!r})")
    if check_url and isinstance(target, str):
        check_reachable(target)  # a clear exit 2 now, not a run of connection errors
    extra, target_model = _target_info(target)
    model = model or target_model
    n_users = users or default_users(load_model, rate_rps)
    # The scenario ends the window itself after warm-up + duration (--duration); --run-time is a safety bound
    # because Locust counts its own start-up in it.
    run_time_s = math.ceil(warmup_s + duration_s) + 30
    provisional = {**extra, "scenario": scenario, "model": model}
    # Relative paths are the caller's: made absolute here, before any process with another cwd sees them.
    out_dir = Path(os.path.abspath(results_dir if results_dir is not None else default_results_dir()))
    path = (
        Path(os.path.abspath(record_path))
        if record_path
        else out_dir / f"{make_run_id('load', provisional, utc_now())}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    locust_log = path.with_suffix(".locust.log" if engine == "locust" else ".lean.log")
    extra.update(
        duration_s=duration_s, generator_cpus=generator_cpus, record_path=str(path),
        generator_log=str(locust_log),
    )  # fmt: skip
    if engine == "locust":
        extra.update(locust_processes=processes, locust_log=str(locust_log))
    if request is not None:
        extra["request"] = request
    if locustfile is not None:
        extra["locustfile"] = str(file)

    if progress is not None:  # every input checked: the run starts
        progress.update(LoadFigures(elapsed_s=0.0, planned_s=warmup_s + duration_s, stage="starting"))
    server: Any = None
    url: str
    died_message = ""
    if started is not None:
        server = started
    elif isinstance(target, str):
        url = target.rstrip("/")
    elif callable(getattr(target, "to_dict", None)):
        server = ServerProcess(
            target, log_path=path.with_suffix(".server.log"), ready_timeout_s=ready_timeout_s
        )
    else:
        server = target
    try:
        if server is not None:
            if started is None:
                server.start()
            url = server.url
            server_pid = getattr(server, "pid", None) or server_pid
        if engine == "lean":
            lean_options = LoadOptions(
                load_model=load_model, rate_rps=float(rate_rps or 0.0), warmup_s=warmup_s,
                duration_s=duration_s, max_lag_s=max_lag_s, seed=seed, model=model or "",
                results_dir=str(out_dir), record=str(path), headers=dict(headers or {}), extra_config=extra,
            )  # fmt: skip
            if generator_bound_percent is not None:
                lean_options.generator_bound_percent = float(generator_bound_percent)
            with own_cpus(generator_cpus):  # this process's merges and saves stay off the target's CPUs
                rc, target_died = run_lean(
                    url, scenario, options=lean_options, connections=n_users, processes=processes,
                    record_path=path, scenario_opts=options, generator_cpus=generator_cpus, server=server,
                    run_time_s=run_time_s, env=locust_env(headers), log_path=locust_log, progress=progress,
                    server_pid=server_pid,
                )  # fmt: skip
            cmd = ["deploybench-lean"]
        else:
            locust_options = dict(options)
            if generator_bound_percent is not None:
                locust_options["generator_bound_percent"] = generator_bound_percent
            if expect_workers:
                # a master for remote workers (`deploybench worker --master HOST:PORT`): it waits for them,
                # bounded; the port it bound is logged and written to --master-port-file
                locust_options.update(
                    master=True, expect_workers=expect_workers, expect_workers_max_wait=MASTER_WAIT_S,
                    master_bind_host=master_bind[0], master_bind_port=master_bind[1],
                )  # fmt: skip
                if master_port_file:
                    locust_options["master_port_file"] = os.path.abspath(master_port_file)
                run_time_s += MASTER_WAIT_S
            monitor = RunMonitor(
                warmup_s=warmup_s, duration_s=duration_s, progress=progress, server_pid=server_pid
            )
            with own_cpus(generator_cpus):
                rc, target_died, cmd = _locust(
                    file, url, n_users, run_time_s, load_model, warmup_s, duration_s, seed, max_lag_s, path,
                    out_dir, extra, rate_rps, model, processes, locust_options, locust_log, generator_cpus,
                    server, headers, monitor,
                )  # fmt: skip
        if server is not None and not target_died:
            # Locust may have ended the run itself (N consecutive connection errors) before the poll in
            # _run_locust saw the target die. A killed target closes its socket only as its process exits,
            # so it is seen dead by now; the bounded wait covers a target still being torn down.
            wait_s = TARGET_EXIT_WAIT_S if _reports_unreachable(path) else 0.0
            if _wait_exited(server, wait_s):
                target_died = "target process is gone"
        if target_died:
            died_message = target_exit_message(server)
    finally:
        if server is not None and started is None:
            server.stop()
            if callable(getattr(server, "cleanup", None)):
                server.cleanup()  # ServerProcess: its temporary ready-file folder

    if not path.exists():
        tail = tail_text(locust_log)
        if target_died:
            raise TargetError(f"the target exited before the load run could start\n{tail}")
        if rc == 2:
            raise UsageError(f"locust rejected the options:\n{tail}")
        if locustfile is not None:
            raise UsageError(
                f"{file} ran (exit code {rc}) but wrote no record: are its users DeployBenchUser subclasses?"
                f"\n{tail}"
            )
        raise TargetError(f"locust exited with code {rc} without writing a record: {' '.join(cmd)}\n{tail}")
    record = load_record(path)
    record.config["generator_exit_code"] = rc
    if engine == "locust":
        record.config["locust_exit_code"] = rc
        record.cpu_blocks = monitor.cpu_blocks(record.series)
    if died_message:
        seen = f"; the load generator reported: {record.error}" if record.error else ""
        record.finish("failed", f"{died_message}{seen}")
    elif record.status == "running":
        record.finish("failed", f"the {engine} generator exited with code {rc} before finalising the record")
    record.save(path)
    return record, path


SWEEP_REFUSED = {
    "record_path": "--record names one record; a sweep writes one per point into its folder (use --out)",
    "expect_workers": "--expect-workers: a sweep runs on local generators only",
    "started": "started: a sweep starts its target itself",
}


def run_sweep(
    target: Any,
    scenario: str,
    *,
    axis: str,
    values: list[float],
    duration_s: float,
    results_dir: str | os.PathLike[str] | None = None,
    sweep_dir: str | os.PathLike[str] | None = None,
    ready_timeout_s: float = 60.0,
    progress: Any = None,
    **options: Any,
) -> tuple[Sweep, Path]:
    """A concurrency (``axis="users"``, closed loop) or rate (``axis="rate"``, open loop) sweep: one target
    start (or the URL's service), then one measured run per value of ``values``, in order, each with its own
    warm-up and ``duration_s``, the same pinning and engine (``deploybench.sweep`` has the point lists and the
    knee). Every input is checked before anything starts (UsageError). Returns the sweep and its summary's
    path (``sweep.json`` in the sweep folder, beside one run record per point).

    ``options``: those of ``run_load_to_file`` except ``users``/``rate_rps`` for the swept axis (a rate
    sweep's ``users`` are its senders, as in one run), ``record_path``, ``expect_workers`` and ``started``.
    ``sweep_dir``: the folder (default ``results_dir``/``<stamp>-sweep-<target>``). A point that did not
    complete (e.g. its target died) ends the sweep: status "failed", its error in the summary, the points so
    far kept; any other exception from a point is raised after that summary is saved.
    """
    for key, why in SWEEP_REFUSED.items():
        if options.get(key):
            raise UsageError(f"a sweep cannot take {why}")
    options = {k: v for k, v in options.items() if k not in SWEEP_REFUSED}
    if axis not in ("users", "rate"):
        raise UsageError(f"sweep axis must be users or rate (got {axis!r})")
    check_points(list(values), axis, f"--{axis}")
    load_model = str(options.get("load_model") or "closed")
    options["load_model"] = load_model
    if axis == "users" and load_model in OPEN_LOOP_MODELS:
        raise UsageError(
            f"a --users sweep is a closed-loop sweep; with --load-model {load_model} sweep --rate instead"
        )
    if axis == "rate" and load_model not in OPEN_LOOP_MODELS:
        raise UsageError("a --rate sweep is an open-loop sweep: add --load-model constant or poisson")
    key = "users" if axis == "users" else "rate_rps"
    options.pop(key, None)
    _check_sweep_inputs(target, scenario, axis, values, duration_s, options)

    extra, target_model = _target_info(target)
    model = options.get("model") or target_model
    locustfile = options.get("locustfile")
    label = Path(str(locustfile)).stem if locustfile else scenario
    out_dir = Path(os.path.abspath(results_dir if results_dir is not None else default_results_dir()))
    if sweep_dir is None:
        base = out_dir / make_run_id("sweep", {**extra, "scenario": label, "model": model}, utc_now())
        folder, n = base, 1
        while folder.exists():
            n += 1
            folder = base.with_name(f"{base.name}-{n}")
    else:
        folder = Path(os.path.abspath(sweep_dir))
        if (folder / SWEEP_FILE).exists():
            raise UsageError(f"{folder} already holds a sweep ({SWEEP_FILE}): give another folder")
    folder.mkdir(parents=True, exist_ok=True)
    summary_path = folder / SWEEP_FILE
    fixed = {
        k: options.get(k) for k in ("users", "rate_rps", "engine", "processes", "generator_cpus", "seed")
    }
    config = {
        **extra, "scenario": label, "model": model, "duration_s": duration_s,
        "warmup_s": float(options.get("warmup_s") or 0.0), "values": list(values),
        **{k: v for k, v in fixed.items() if v is not None},
    }  # fmt: skip
    sweep = Sweep(axis=axis, load_model=load_model, config=json.loads(_json(config)))
    engine = resolve_engine(options.get("engine"), locustfile)
    sweep.config["engine"] = engine
    options["engine"] = engine
    save_sweep(sweep, summary_path)

    server: Any = None
    if not isinstance(target, str):
        if callable(getattr(target, "to_dict", None)):
            server = ServerProcess(target, log_path=folder / "server.log", ready_timeout_s=ready_timeout_s)
        else:
            server = target
    try:
        if server is not None:
            if progress is not None:
                progress.phase(f"sweep: starting the target ({len(values)} points)")
            server.start()
        for i, value in enumerate(values):
            if progress is not None:
                progress.phase(f"point {i + 1}/{len(values)}: {point_label(axis, value)}")
            point_options = dict(options)
            point_options[key] = int(value) if axis == "users" else float(value)
            point_options["check_url"] = False  # checked once, before the first point
            name, where = point_file_name(i, axis, value), f"point {i + 1} ({point_label(axis, value)})"
            try:
                record, _ = run_load_to_file(
                    target, scenario, duration_s=duration_s, results_dir=folder, record_path=folder / name,
                    progress=progress, started=server, **point_options,
                )  # fmt: skip
            except TargetError as exc:  # no record: the target is gone
                sweep.finish("failed", f"{where}: {exc}")
                break
            sweep.add(point_from_record(value, record, name))
            save_sweep(sweep, summary_path)
            if server is not None and not server.is_alive():
                sweep.finish("failed", f"the target exited during {where}")
                break
            if record.status != "complete":  # the later points would fail the same way
                sweep.finish("failed", f"{where} {record.status}: {record.error or 'no reason recorded'}")
                break
        else:
            sweep.finish("complete")
    except KeyboardInterrupt:
        sweep.finish("interrupted", "interrupted")
        raise
    except BaseException as exc:
        sweep.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if server is not None:
            server.stop()
            if callable(getattr(server, "cleanup", None)):
                server.cleanup()
        if sweep.status == "running":
            sweep.finish("failed", "the sweep ended early")
        save_sweep(sweep, summary_path)
    return sweep, summary_path


def _check_sweep_inputs(
    target: Any, scenario: str, axis: str, values: list[float], duration_s: float, options: dict[str, Any]
) -> None:
    """Every input a point's ``run_load_to_file`` would check, checked once before the target starts."""
    resolve_engine(options.get("engine"), options.get("locustfile"))
    locustfile = options.get("locustfile")
    if locustfile is None:
        scenario_file(scenario)
    else:
        user_locustfile(locustfile)
    for value in values:
        users = int(value) if axis == "users" else options.get("users")
        rate = float(value) if axis == "rate" else options.get("rate_rps")
        _validate(duration_s, float(options.get("warmup_s") or 0.0), users, rate, options["load_model"],
                  int(options.get("processes") or 0), options.get("generator_cpus"))  # fmt: skip
    scenario_options = dict(options.get("scenario_options") or {})
    stray = sorted(
        k for k in API_OPTIONS if scenario_options.get(k) and scenario != "api" and locustfile is None
    )
    if stray:
        names = ", ".join("--" + k.replace("_", "-") for k in stray)
        raise UsageError(f"{names}: only for the api scenario (your own endpoint), not {scenario!r}")
    if scenario == "api" and locustfile is None:
        api_request(scenario_options)
    if options.get("headers"):
        parse_headers([f"{k}: {v}" for k, v in options["headers"].items()])
    if isinstance(target, str):
        if not target.startswith(("http://", "https://")):
            raise UsageError(f"target URL must start with http:// or https:// (got {target!r})")
        if options.get("check_url"):
            check_reachable(target)


def resolve_engine(engine: str | None, locustfile: Any) -> str:
    """The engine a run uses: the lean one for built-in scenarios unless Locust is asked for; Locust for a
    locustfile of your own (the lean engine cannot run one: UsageError, never a silent fallback)."""
    if engine is None:
        engine = os.environ.get(ENGINE_ENV) or None  # `deploybench ab --engine` sets it for its runs
        if engine is None or (engine == "lean" and locustfile is not None):
            return "locust" if locustfile is not None else "lean"
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)} (got {engine!r})")
    if engine == "lean" and locustfile is not None:
        raise UsageError("--engine lean cannot run a locustfile: use --engine locust (or leave --engine out)")
    return engine


def _locust(
    file: Path, url: str, n_users: int, run_time_s: int, load_model: str, warmup_s: float, duration_s: float,
    seed: int, max_lag_s: float, path: Path, out_dir: Path, extra: dict[str, Any], rate_rps: float | None,
    model: str | None, processes: int, options: dict[str, Any], log_path: Path,
    generator_cpus: list[int] | None, server: Any, headers: dict[str, str] | None,
    monitor: RunMonitor | None = None,
) -> tuple[int, str | None, list[str]]:  # fmt: skip
    """Run the Locust engine headless (it writes the record itself): (exit code, target death, command)."""
    cmd = [sys.executable, "-P", "-m", "locust", "-f", str(file), "--headless",
           "--host", url, "--users", str(n_users), "--spawn-rate", str(n_users),
           "--run-time", f"{run_time_s}s", "--stop-timeout", "0", "--only-summary",
           "--load-model", load_model, "--warmup", repr(float(warmup_s)),
           "--duration", repr(float(duration_s)), "--seed", str(seed),
           "--max-lag", repr(float(max_lag_s)), "--record", str(path), "--results-dir", str(out_dir),
           "--extra-config", _json(extra)]  # fmt: skip
    if rate_rps:
        cmd += ["--rate", repr(float(rate_rps))]
    if model:
        cmd += ["--model", model]
    if processes:
        # the master listens on loopback only (Locust's default is every interface)
        cmd += ["--processes", str(processes), "--master-bind-host", "127.0.0.1"]
    for k, v in options.items():
        flag = f"--{k.replace('_', '-')}"
        cmd += [flag] if v is True else [flag, str(v)]
    rc, target_died = _run_locust(
        cmd, log_path, generator_cpus, run_time_s, server, locust_env(headers), monitor, path
    )
    return rc, target_died, cmd


def _reports_unreachable(record_path: Path) -> bool:
    """Did the generator end the run because it could not reach the target? (reads the record loosely)"""
    try:
        doc = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and "unreachable" in str(doc.get("error") or "")


def _wait_exited(server: Any, wait_s: float) -> bool:
    """Has the target process exited? Polls up to ``wait_s`` seconds for it to be seen dead."""
    deadline = time.monotonic() + wait_s
    while server.is_alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def target_exit_message(server: Any) -> str:
    """'the target process exited during the run (killed by SIGKILL); server log tail: ...'"""
    code = getattr(server, "returncode", None)
    if code is None:
        how = "exit status unknown"
    elif code < 0:
        try:
            how = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exit code {code}"
    log_tail = getattr(server, "log_tail", None)
    tail = log_tail(TARGET_LOG_TAIL_CHARS).strip() if callable(log_tail) else ""
    return f"the target process exited during the run ({how})" + (
        f"; server log tail:\n{tail}" if tail else "; its log is empty"
    )


def _json(d: dict[str, Any]) -> str:
    return json.dumps(d, default=str)


def _run_locust(
    cmd: list[str], log_path: Path, cpus: list[int] | None, run_time_s: int, server: Any,
    env: dict[str, str] | None = None, monitor: RunMonitor | None = None, record_path: Path | None = None,
) -> tuple[int, str | None]:  # fmt: skip
    """Run Locust bounded in time; stop it early (SIGTERM → it finalises the record) if the target dies.
    ``monitor``: samples the CPU of Locust's and the server's process trees, and reads the record Locust
    rewrites every ~2 s (its figures, no histogram decoded) for progress."""
    target_died: str | None = None
    with open(log_path, "wb") as log:
        cmd = pinned_argv(cmd, cpus, sys.executable)  # pinned from its first instruction
        # cwd: the caller's (inherited), so a user's locustfile sees the paths the user sees
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, process_group=0, env=env)
        if monitor is not None:
            monitor.set_generator_pids([proc.pid])
        watch = _RecordWatch(record_path, monitor)
        try:
            deadline = time.monotonic() + run_time_s + 60.0
            while not exited(proc, monitor):
                watch.poll()
                if server is not None and target_died is None and not server.is_alive():
                    target_died = "target process is gone"
                    signal_group(proc.pid, signal.SIGTERM)
                    deadline = min(deadline, time.monotonic() + STOP_GRACE_S)
                if time.monotonic() > deadline:
                    signal_group(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        signal_group(proc.pid, signal.SIGKILL)
                    break
                time.sleep(0.2)
            rc = proc.wait(STOP_GRACE_S)
            watch.poll(final=True)
        except BaseException:
            signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                signal_group(proc.pid, signal.SIGKILL)
                proc.wait(5)
            raise
    return rc, target_died


class _RecordWatch:
    """Locust's record as it is rewritten (every ~2 s): read once a second when it changed, for the
    monitor's window clock and progress figures."""

    def __init__(self, path: Path | None, monitor: RunMonitor | None) -> None:
        self.path = path
        self.monitor = monitor
        self.mtime_ns = 0
        self.series: list[Any] = []
        self.next_at = 0.0

    def poll(self, final: bool = False) -> None:
        m = self.monitor
        if m is None:
            return
        m.sample(force=final)
        now = time.monotonic()
        if self.path is None or (now < self.next_at and not final):
            return
        if m.progress is None and m.window_start is not None:  # nothing more to learn from it
            return
        self.next_at = now + 1.0
        try:
            mtime_ns = self.path.stat().st_mtime_ns
            if mtime_ns != self.mtime_ns:
                rec = load_record(self.path)
                self.mtime_ns, self.series = mtime_ns, rec.series
                window = max((float(s.duration_s or 0.0) for s in rec.series), default=0.0)
                if rec.status == "running" and 0.0 < window < m.duration_s:  # an open window: its age
                    m.anchor(mtime_ns / 1e9, window)
        except (OSError, UsageError):
            pass
        m.report(self.series, finishing=final, force=final)


def format_summary(record: RunRecord) -> str:
    c = record.config
    lines = [f"{record.run_id}  status={record.status}  {c.get('loop')} ({c.get('load_model')})"]
    if record.error:
        lines.append(f"  error: {record.error}")
    for s in record.series:
        lat = s.latency_us
        ms = lambda v: "-" if v is None else f"{v / 1000:.2f}"  # noqa: E731
        line = (
            f"  {s.name}: n={s.count} tput={s.throughput_rps} rps p50={ms(lat.get('p50'))} ms "
            f"p99={ms(lat.get('p99'))} ms max={ms(lat.get('max'))} ms"
        )
        if s.uncorrected_latency_us:
            line += f" (uncorrected p99={ms(s.uncorrected_latency_us.get('p99'))} ms)"
        if s.errors:
            line += f" errors={s.errors}"
        lines.append(line)
    for w in record.warnings:
        lines.append(f"  warning [{w.code}]{' ' + w.series if w.series else ''}: {w.message}")
    return "\n".join(lines)
