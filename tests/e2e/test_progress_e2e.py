"""Progress of a real `deploybench load` off a terminal (plain lines on stderr, none with --progress off), and
the record's ``cpu_blocks`` (the generator's and the server's CPU per block) of real short runs."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploybench.loadtests.runner import run_load_to_file
from tests.support.known_latency import KnownLatencyServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
RATE_LINE = re.compile(r"^progress: \[load health .*\] (measuring|finishing) .*\b[\d,]+ rps\b", re.M)


@pytest.fixture
def server() -> Iterator[KnownLatencyServer]:
    with KnownLatencyServer(service_ms=2.0) as srv:
        yield srv


def _load(url: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "deploybench", "load", "--url", url, "--scenario", "health",
           "--duration", "3", "--warmup", "1", "--users", "2", "--out", str(out), *extra]  # fmt: skip
    # stderr is a pipe here, not a terminal: --progress auto is plain
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_load_prints_plain_progress_lines_off_a_terminal_and_none_when_off(
    server: KnownLatencyServer, tmp_path: Path
) -> None:
    proc = _load(server.url, tmp_path / "auto")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith(f"progress: load health (closed) -> {server.url}\n"), proc.stderr
    assert RATE_LINE.search(proc.stderr), proc.stderr  # a periodic line with a rate
    assert "\x1b[" not in proc.stderr  # no terminal control codes in a log
    assert "record: " in proc.stdout and "progress:" not in proc.stdout  # stdout stays the result only

    off = _load(server.url, tmp_path / "off", "--progress", "off")
    assert off.returncode == 0, off.stderr
    assert "progress:" not in off.stderr and "record: " in off.stdout
    # a --url run: the generator's CPU per block, the server's unknown (not started by deploybench)
    path = Path(off.stdout.strip().splitlines()[-1].removeprefix("record: "))
    blocks = json.loads(path.read_text())["cpu_blocks"]
    assert blocks and all(b["server_cpu_percent"] is None for b in blocks)
    assert any(b["generator_cpu_percent"] and b["generator_cpu_percent"] > 0 for b in blocks)


@pytest.mark.parametrize("engine", ["lean", "locust"])
def test_record_has_cpu_blocks_of_generator_and_server_over_the_window(tmp_path: Path, engine: str) -> None:
    """A target started by the runner: both figures per block, over the whole window (on the series blocks'
    edges) and the warm-up before it; each between 0 and all the cores (plus slack for sampling)."""
    srv = KnownLatencyServer(service_ms=2.0)  # started and stopped by the runner
    rec, _ = run_load_to_file(srv, "health", duration_s=3.0, warmup_s=1.0, users=2, results_dir=tmp_path,
                              engine=engine)  # fmt: skip
    assert rec.status == "complete"
    blocks = rec.cpu_blocks
    assert blocks, rec.to_dict()
    edges = [(b["start_s"], b["duration_s"]) for b in rec.series[0].blocks or []]
    window = [(b["start_s"], b["duration_s"]) for b in blocks if b["start_s"] >= 0]
    assert window == edges and sum(d for _, d in window) == pytest.approx(3.0, abs=0.1)
    assert any(b["start_s"] < 0 for b in blocks)  # the warm-up second
    limit = len(os.sched_getaffinity(0)) * 100 + 20
    for b in blocks:
        for key in ("generator_cpu_percent", "server_cpu_percent"):
            assert b[key] is not None and 0 <= b[key] <= limit, b
    # a busy closed loop: both processes worked in the measured window
    assert all(
        b["generator_cpu_percent"] > 1 and b["server_cpu_percent"] > 1 for b in blocks if b["start_s"] >= 0
    )
    on_disk = json.loads(Path(rec.config["record_path"]).read_text())
    assert on_disk["cpu_blocks"] == blocks


def test_compare_driver_says_which_choice_and_probe_runs_and_records_the_servers_cpu(
    tmp_path: Path, zoo_dir: Path
) -> None:
    """compare's driver: the choice (i of n) and probe as phases, the running load's figures, and the
    started target's CPU in the probe's record (its pid handed to the runner with its URL)."""
    from deploybench.decisions.compare.config import CompareConfig, expand, zoo_catalog
    from deploybench.decisions.compare.driver import RealDriver
    from deploybench.progress import PlainProgress
    from tests.e2e.test_compare_e2e import TINY

    cfg = CompareConfig.from_dict(TINY)
    choices, _, scenario = expand(cfg, zoo_catalog())
    choices = [
        c
        for c in choices
        if c.id in ("fastapi-uvicorn-iris-rf-onnx-w1", "flask-gunicorn-sync-iris-rf-onnx-w1")
    ]
    out = io.StringIO()
    driver = RealDriver(
        cfg, scenario, zoo_dir, tmp_path, progress=PlainProgress(out, every_s=0.0), choices=choices
    )
    first = choices[0]
    with driver.start(first, tmp_path / "server.log") as target:
        rec = driver.load(target, load_model="constant", duration_s=2.0, warmup_s=0.5, rate_rps=50.0,
                          record_path=tmp_path / "probe.json")  # fmt: skip
    assert rec.status == "complete"
    text = out.getvalue()
    step = f"choice 1/2 {first.id}"
    assert text.startswith(
        f"progress: {step}: starting the target\nprogress: {step}: probe 1 (50 rps constant)\n"
    )
    probe = re.escape(f"[{step}: probe 1 (50 rps constant)]")
    assert re.search(rf"^progress: {probe} (measuring|finishing) .* rps", text, re.M), text
    blocks = rec.cpu_blocks
    assert blocks and all(b["server_cpu_percent"] is not None for b in blocks), blocks
