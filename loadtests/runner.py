"""Headless runner behind ``deploybench load`` (``commands.load``): start a target, wait for health, run a
Locust scenario as a bounded subprocess, stop the target, return the run record.

    deploybench load --framework fastapi --server uvicorn --model iris-rf --format onnx --scenario tabular \\
        --duration 10 --users 8 | --rate 200 --load-model poisson --out results/
    deploybench load --url http://127.0.0.1:8000 --scenario health --duration 5

The record is written by the Locust process itself as the run goes (status "running"), finalised at the end;
the runner adds the target config, Locust's exit code and log path, and marks the run "failed" if the target
died.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from deploybench.errors import TargetError, UsageError
from deploybench.io import utc_now
from deploybench.paths import results_dir as default_results_dir
from deploybench.record import RunRecord, load_record, make_run_id
from deploybench.vocabulary import LOAD_MODELS, OPEN_LOOP_MODELS, SCENARIOS
from targets.serve import ServerProcess

SCENARIO_DIR = Path(__file__).resolve().parent
STOP_GRACE_S = 15.0
TARGET_EXIT_WAIT_S = 5.0  # after Locust reports the target unreachable: how long to look for its exit
TARGET_LOG_TAIL_CHARS = 1500


def scenario_file(scenario: str) -> Path:
    if scenario not in SCENARIOS:
        raise UsageError(f"unknown scenario {scenario!r} (choose from {', '.join(SCENARIOS)})")
    return SCENARIO_DIR / f"{scenario}.py"


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
        keys = ("framework", "server", "model", "format", "workers", "threads", "intra_op_threads", "cpus")
        return {"target": d, **{k: d[k] for k in keys if k in d}}, d.get("model")
    return {"target": {"kind": type(target).__name__}}, None


def run_load(target: Any, scenario: str, **options: Any) -> RunRecord:
    """Run one load test and return its record (also saved at ``record_path`` or in ``results_dir``).

    ``target``: a ``targets.serve.TargetConfig`` (started with ServerProcess and stopped afterwards), the URL
    of an already running server, or an object with ``start()/stop()/is_alive()/url`` (e.g. the tests'
    known-latency server), which is started and stopped here.
    ``options`` are those of ``run_load_to_file``: duration_s (required), warmup_s, users, rate_rps,
    load_model, results_dir, record_path, generator_cpus, processes (> 0 runs Locust as a master with that
    many worker processes, histograms merged), model, seed, max_lag_s, ready_timeout_s and scenario_options
    (batch_size for tabular; payload_mix, image_size, image_format, image_count for image).
    """
    record, _ = run_load_to_file(target, scenario, **options)
    return record


def _validate(
    scenario: str, duration_s: float, warmup_s: float, users: int | None, rate_rps: float | None,
    load_model: str, processes: int, generator_cpus: list[int] | None,
) -> None:  # fmt: skip
    scenario_file(scenario)
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
) -> tuple[RunRecord, Path]:
    """``run_load`` that also returns the record's path."""
    _validate(scenario, duration_s, warmup_s, users, rate_rps, load_model, processes, generator_cpus)
    if isinstance(target, str) and not target.startswith(("http://", "https://")):
        raise UsageError(f"target URL must start with http:// or https:// (got {target!r})")
    extra, target_model = _target_info(target)
    model = model or target_model
    n_users = users or default_users(load_model, rate_rps)
    # The scenario ends the window itself after warm-up + duration (--duration); --run-time is a safety bound
    # because Locust counts its own start-up in it.
    run_time_s = math.ceil(warmup_s + duration_s) + 30
    provisional = {**extra, "scenario": scenario, "model": model}
    out_dir = Path(results_dir) if results_dir is not None else default_results_dir()
    path = (
        Path(record_path) if record_path else out_dir / f"{make_run_id('load', provisional, utc_now())}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    locust_log = path.with_suffix(".locust.log")
    extra.update(
        duration_s=duration_s, generator_cpus=generator_cpus, locust_processes=processes,
        locust_log=str(locust_log), record_path=str(path),
    )  # fmt: skip

    server: Any = None
    url: str
    died_message = ""
    if isinstance(target, str):
        url = target.rstrip("/")
    elif callable(getattr(target, "to_dict", None)):
        server = ServerProcess(
            target, log_path=path.with_suffix(".server.log"), ready_timeout_s=ready_timeout_s
        )
    else:
        server = target
    try:
        if server is not None:
            server.start()
            url = server.url
        cmd = [sys.executable, "-m", "locust", "-f", str(scenario_file(scenario)), "--headless",
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
        for k, v in (scenario_options or {}).items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        rc, target_died = _run_locust(cmd, locust_log, generator_cpus, run_time_s, server)
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
        if server is not None:
            server.stop()
            if callable(getattr(server, "cleanup", None)):
                server.cleanup()  # ServerProcess: its temporary ready-file folder

    if not path.exists():
        tail = _tail(locust_log)
        if target_died:
            raise TargetError(f"the target exited before the load run could start\n{tail}")
        if rc == 2:
            raise UsageError(f"locust rejected the options:\n{tail}")
        raise TargetError(f"locust exited with code {rc} without writing a record: {' '.join(cmd)}\n{tail}")
    record = load_record(path)
    record.config["locust_exit_code"] = rc
    if died_message:
        seen = f"; the load generator reported: {record.error}" if record.error else ""
        record.finish("failed", f"{died_message}{seen}")
    elif record.status == "running":
        record.finish("failed", f"locust exited with code {rc} before finalising the record")
    record.save(path)
    return record, path


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
    cmd: list[str], log_path: Path, cpus: list[int] | None, run_time_s: int, server: Any
) -> tuple[int, str | None]:
    """Run Locust bounded in time; stop it early (SIGTERM → it finalises the record) if the target dies."""
    target_died: str | None = None
    with open(log_path, "wb") as log:
        if cpus:  # pinned from its first instruction: a shim sets the affinity, then execs Locust
            shim = "import os, sys; os.sched_setaffinity(0, %r); os.execv(sys.executable, sys.argv[1:])"
            cmd = [sys.executable, "-c", shim % (sorted(cpus),), *cmd]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, process_group=0,
                                cwd=SCENARIO_DIR.parent)  # fmt: skip
        try:
            deadline = time.monotonic() + run_time_s + 60.0
            while proc.poll() is None:
                if server is not None and target_died is None and not server.is_alive():
                    target_died = "target process is gone"
                    _signal_group(proc, signal.SIGTERM)
                    deadline = min(deadline, time.monotonic() + STOP_GRACE_S)
                if time.monotonic() > deadline:
                    _signal_group(proc, signal.SIGTERM)
                    try:
                        proc.wait(STOP_GRACE_S)
                    except subprocess.TimeoutExpired:
                        _signal_group(proc, signal.SIGKILL)
                    break
                time.sleep(0.2)
            rc = proc.wait(STOP_GRACE_S)
        except BaseException:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(5)
            raise
    return rc, target_died


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


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
