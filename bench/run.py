"""Run the pytest-benchmark suite in bench/ and convert its results to RunRecords (``run_bench``); behind
``deploybench bench`` (``deploybench.commands.bench``, which also writes the report):

    deploybench bench                      # quick profile (74 s of benchmarks on 2 cores)
    deploybench bench --full               # every model x format x batch x threads, more rounds
    deploybench bench --profile tiny --models iris-rf   # seconds (tests)
    deploybench bench --model-file m.onnx --model-file m.joblib --trust-pickle SHA256   # your model's formats

pytest runs in a child process (-v: one progress line per case). Its JSON (raw per-round timings) is kept
under OUT/raw/; records go to OUT/<run_id>.json.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from deploybench.bench.convert import records_from_benchmark_json
from deploybench.bench.profiles import Profile
from deploybench.bench.suite import UserBenchModel, all_cases, save_user_models, zoo_models
from deploybench.env import capture_env
from deploybench.io import utc_now, utc_stamp
from deploybench.record import RunRecord

BENCH_DIR = Path(__file__).resolve().parent


def pytest_command(
    profile_name: str,
    models: list[str],
    formats: list[str],
    zoo: Path,
    json_path: Path,
    user_models_path: Path | None = None,
) -> list[str]:
    cmd = [
        sys.executable, "-m", "pytest", str(BENCH_DIR),
        # Only the plugins we need (child_env): locust's pytest plugin, say, would gevent-patch the process.
        "-p", "pytest_benchmark.plugin", "-p", "pytest_timeout", "-p", "no:cacheprovider",
        "-v", "--no-header", "-o", "console_output_style=count",
        f"--rootdir={BENCH_DIR.parent}",
        "--benchmark-json", str(json_path),
        "--benchmark-quiet",  # our report replaces pytest-benchmark's table
        "--benchmark-timer", "time.perf_counter",
        "--bench-profile", profile_name,
        "--bench-zoo", str(zoo),
    ]  # fmt: skip
    if models:
        cmd += ["--bench-models", ",".join(models)]
    if formats:
        cmd += ["--bench-formats", ",".join(formats)]
    if user_models_path is not None:
        cmd += ["--bench-user-models", str(user_models_path)]
    return cmd


def child_env() -> dict[str, str]:
    """The benchmark process loads only the plugins named with -p (no entry-point autoloading), and is a
    pytest session of its own: no ``PYTEST_XDIST_*`` from a parent run under pytest-xdist (pytest-benchmark
    would take itself for an xdist worker and disable every benchmark)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST_")}
    return {**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


INTERRUPTED = -2
STOP_GRACE_S = 30.0


def run_pytest(cmd: list[str]) -> int:
    """Run the benchmark process in its own session; Ctrl-C here sends it exactly one SIGINT, so pytest
    ends the session after the case that is running (bench/conftest.py) and still writes the JSON of the
    cases it finished. Returns its exit code, or INTERRUPTED."""
    proc = subprocess.Popen(cmd, env=child_env(), start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return INTERRUPTED


def record_status(record: RunRecord, status: str, error: str | None) -> tuple[str, str | None]:
    """A failed pytest run fails only the records missing a case; the others measured all theirs."""
    if status == "failed" and not any(w.code == "case-missing" for w in record.warnings):
        return "complete", None
    return status, error


@dataclass
class BenchRun:
    """What one run of the suite produced: the saved records, its status and the raw pytest-benchmark JSON."""

    records: list[RunRecord]
    status: str  # complete | failed | interrupted
    json_path: Path
    wall_s: float


def run_bench(
    profile: Profile,
    models: list[str],
    formats: list[str],
    zoo: Path,
    out: Path,
    say: Callable[[str], None] = lambda msg: None,
    user_models: Mapping[str, UserBenchModel] | None = None,
) -> BenchRun:
    """Run the benchmark cases of ``profile`` (``models`` / ``formats`` narrow it; empty: all) against the
    zoo in a pytest child process, convert its results to one record per model and save them into ``out``.
    ``user_models``: the user's model files (``--model-file``, inspected), benchmarked like zoo models when
    ``profile.models`` names them. Progress lines go to ``say``. A Ctrl-C stops pytest; the cases it
    finished are kept (status "interrupted")."""
    user = dict(user_models or {})
    expected = all_cases(profile, tuple(formats) or None, user)

    started = utc_now()
    json_path = out / "raw" / f"{utc_stamp(started)}-pytest-benchmark.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    user_path = (
        save_user_models(out / "raw" / f"{utc_stamp(started)}-user-models.json", user) if user else None
    )
    cmd = pytest_command(profile.name, models, formats, zoo, json_path, user_path)
    say(f"deploybench bench: profile {profile.name} ({profile.description})")
    say(f"deploybench bench: {len(expected)} cases, zoo {zoo}, results {out}")
    say("deploybench bench: " + " ".join(cmd))

    t0 = time.perf_counter_ns()
    status, error = "complete", None
    rc = run_pytest(cmd)
    if rc == INTERRUPTED:
        status, error = "interrupted", "interrupted by the user; cases finished before that are kept"
    wall_s = (time.perf_counter_ns() - t0) / 1e9
    if rc != 0 and status == "complete":
        status, error = "failed", f"pytest exited with code {rc}: some cases failed (see its output)"

    data: dict[str, Any] = {}
    if json_path.exists():
        data = json.loads(json_path.read_text())
    settings = {
        "warmup": "at least warmup_rounds calls and warmup_time_s per case, timed and excluded",
        "calibration": (
            "rounds = clamp(ceil(max_time_s / median of the last 5 warm-up calls), min_rounds, max_rounds)"
        ),
        "timer": "time.perf_counter",
        "iterations_per_round": 1,
        "max_time_s": profile.max_time_s,
        "min_rounds": profile.min_rounds,
        "max_rounds": profile.max_rounds,
        "warmup_rounds": profile.warmup_rounds,
        "warmup_time_s": profile.warmup_time_s,
        "load_rounds": profile.load_rounds,
        "zoo_dir": str(zoo),
        "pytest_benchmark": metadata.version("pytest-benchmark"),
        "wall_s": round(wall_s, 1),
    }
    tasks = {name: spec.task for name, spec in zoo_models(user).items()}
    records = records_from_benchmark_json(
        data,
        profile=profile,
        expected=expected,
        env=capture_env(),
        started_utc=started,
        settings=settings,
        tasks=tasks,
        model_files={name: m.files for name, m in user.items()},
    )
    saved: list[RunRecord] = []
    for record in records.values():
        record.finish(*record_status(record, status, error))
        record.save(out / f"{record.run_id}.json")
        saved.append(record)
    return BenchRun(saved, status, json_path, wall_s)
