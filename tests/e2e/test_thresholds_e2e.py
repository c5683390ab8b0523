"""``--threshold`` end to end: `deploybench load` exits 3 when a limit is crossed and 0 when every limit
holds, with the crossings in the record; plain `locust -f` on a built-in scenario does the same (exit 3)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploybench.commands.cli import main as cli_main
from deploybench.record import load_record
from deploybench.thresholds import EXIT_THRESHOLD, WARNING_CODE
from tests.support.known_latency import KnownLatencyServer

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server_2ms() -> Iterator[KnownLatencyServer]:
    with KnownLatencyServer(service_ms=2.0) as srv:
        yield srv


def load(srv: KnownLatencyServer, tmp_path: Path, *thresholds: str) -> tuple[int, Path]:
    record = tmp_path / "run.json"
    args = ["load", "--url", srv.url, "--scenario", "tabular", "--duration", "1", "--warmup", "0.2",
            "--users", "2", "--record", str(record), "--out", str(tmp_path)]  # fmt: skip
    for t in thresholds:
        args += ["--threshold", t]
    return cli_main(args), record


def test_a_crossed_threshold_is_exit_3_and_written_in_the_record(
    server_2ms: KnownLatencyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, path = load(server_2ms, tmp_path, "p99<1us", "error_ratio<50%")
    out = capsys.readouterr().out
    assert rc == EXIT_THRESHOLD, out
    rec = load_record(path)
    assert rec.status == "complete" and rec.config["thresholds"] == ["p99<1us", "error_ratio<50%"]
    crossed = [w for w in rec.warnings if w.code == WARNING_CODE]
    assert [(w.series, w.message.split(" crossed")[0]) for w in crossed] == [("POST /predict", "p99<1us")]
    assert "threshold p99<1us: POST /predict" in out and "(crossed)" in out
    assert "threshold error_ratio<50%: POST /predict 0 % (ok)" in out


def test_generous_thresholds_hold_exit_0(server_2ms: KnownLatencyServer, tmp_path: Path) -> None:
    rc, path = load(server_2ms, tmp_path, "p99<10s", "throughput>1")
    assert rc == 0
    rec = load_record(path)
    assert rec.status == "complete" and not [w for w in rec.warnings if w.code == WARNING_CODE]


def locust(srv: KnownLatencyServer, tmp_path: Path, threshold: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "locust", "-f", "loadtests/tabular.py", "--headless", "--host", srv.url,
           "-u", "2", "-r", "2", "-t", "20s", "--duration", "1", "--warmup", "0.2", "--results-dir",
           str(tmp_path), "--only-summary", "--threshold", threshold]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_plain_locust_runs_judge_thresholds_too(server_2ms: KnownLatencyServer, tmp_path: Path) -> None:
    crossed = locust(server_2ms, tmp_path / "crossed", "p99<1us")
    assert crossed.returncode == EXIT_THRESHOLD, crossed.stderr[-2000:]
    (path,) = (tmp_path / "crossed").glob("*.json")
    rec = load_record(path)
    assert rec.status == "complete" and [w.code for w in rec.warnings].count(WARNING_CODE) == 1
    held = locust(server_2ms, tmp_path / "held", "p99<10s")
    assert held.returncode == 0, held.stderr[-2000:]
