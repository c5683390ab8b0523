"""``deploybench bench``: run the pytest-benchmark suite in bench/, convert to RunRecords, write a report.

    deploybench bench                      # quick profile (about 5 minutes on 2 cores)
    deploybench bench --full               # every model x format x batch x threads, more rounds
    deploybench bench --profile tiny --models iris-rf   # seconds (tests)

pytest runs in a child process (-v: one progress line per case). Its JSON (raw per-round timings) is kept
under OUT/raw/; records go to OUT/<run_id>.json; the report to OUT/report.md and OUT/report.html.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.profiles import PROFILES, select_profile
from deploybench.paths import results_dir, zoo_dir
from reports.env import capture_env
from reports.record import RunRecord, utc_now

BENCH_DIR = Path(__file__).resolve().parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        choices=list(PROFILES),
        default="quick",
        help="; ".join(f"{p.name}: {p.description}" for p in PROFILES.values()),
    )
    parser.add_argument("--full", action="store_true", help="same as --profile full")
    parser.add_argument("--models", default="", help="comma-separated models (default: the profile's)")
    parser.add_argument("--formats", default="", help="comma-separated formats (default: every format)")
    parser.add_argument(
        "--zoo", type=Path, default=None, help="zoo folder (default: $DEPLOYBENCH_ZOO or artifacts/zoo)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: $DEPLOYBENCH_RESULTS/bench)"
    )
    parser.add_argument("--report-format", default="md,html", help="report formats (default: md,html)")
    parser.add_argument("--no-report", action="store_true", help="write the records only")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def pytest_command(
    profile_name: str, models: list[str], formats: list[str], zoo: Path, json_path: Path
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
    return cmd


def child_env() -> dict[str, str]:
    """The benchmark process loads only the plugins named with -p (no entry-point autoloading)."""
    return {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


INTERRUPTED = -2
STOP_GRACE_S = 30.0


def run_pytest(cmd: list[str]) -> int:
    """Run the benchmark process in its own session; Ctrl-C here sends it exactly one SIGINT, so pytest
    ends the session cleanly and still writes the JSON of the cases it finished. Returns its exit code,
    or INTERRUPTED."""
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


def run(args: argparse.Namespace) -> int:
    from bench.convert import records_from_benchmark_json
    from bench.suite import all_cases, check_selection, zoo_models
    from reports.render import parse_formats, write_report
    from targets.zoo import load_manifest

    profile_name = "full" if args.full else args.profile
    models = _csv(args.models)
    formats = _csv(args.formats)
    profile = select_profile(profile_name, models)
    check_selection(profile, tuple(formats) or None)
    report_formats = [] if args.no_report else parse_formats(args.report_format)
    zoo = (args.zoo if args.zoo is not None else zoo_dir()).resolve()
    load_manifest(zoo)  # ArtifactError (a UsageError) when the zoo is missing: "run deploybench build"
    out = args.out if args.out is not None else results_dir() / "bench"
    expected = all_cases(profile, tuple(formats) or None)

    started = utc_now()
    stamp = started.replace("-", "").replace(":", "").split(".")[0] + "Z"
    json_path = out / "raw" / f"{stamp}-pytest-benchmark.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = pytest_command(profile.name, models, formats, zoo, json_path)
    print(f"deploybench bench: profile {profile.name} ({profile.description})", flush=True)
    print(f"deploybench bench: {len(expected)} cases, zoo {zoo}, results {out}", flush=True)
    print("deploybench bench: " + " ".join(cmd), flush=True)

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
    tasks = {name: spec.task for name, spec in zoo_models().items()}
    records = records_from_benchmark_json(
        data,
        profile=profile,
        expected=expected,
        env=capture_env(),
        started_utc=started,
        settings=settings,
        tasks=tasks,
    )
    saved: list[RunRecord] = []
    for record in records.values():
        record.finish(*record_status(record, status, error))
        record.save(out / f"{record.run_id}.json")
        saved.append(record)
    print(f"deploybench bench: {len(saved)} records in {out}, pytest-benchmark JSON {json_path}")
    if report_formats:
        written = write_report(
            saved, out, report_formats, title=f"deploybench micro-benchmarks ({profile.name})"
        )
        for fmt, path in written.items():
            print(f"deploybench bench: {fmt} report {path}")
    print(f"deploybench bench: wall time {wall_s:.0f} s, status {status}")
    if status == "interrupted":
        raise KeyboardInterrupt
    return 0 if status == "complete" else 1
