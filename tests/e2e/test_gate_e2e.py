"""Gate end to end: real load runs (Locust, HdrHistogram records) against a known-service-time server.

Two runs at the same service time must pass (A/A); doubling the service time must fail with exit 1.
Tolerances: the rule is p50:+25%, so an A/A run fails only if its median moves by more than 5 ms (the server
sleeps a fixed 20 ms; client overhead on loopback is about 1 ms, more on a busy machine), and the slow run's
median is about +100%, far beyond it. Each load run is 2 s (+0.5 s warm-up) with 2 users (~200 requests).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from commands.cli import main
from loadtests.runner import run_load
from tests.support.known_latency import KnownLatencyServer

pytestmark = pytest.mark.e2e  # starts the known-latency server and Locust

pytestmark = pytest.mark.e2e


def measure(tmp_path: Path, name: str, service_ms: float) -> str:
    path = tmp_path / f"{name}.json"
    with KnownLatencyServer(service_ms=service_ms) as srv:
        rec = run_load(srv.url, "tabular", duration_s=2, warmup_s=0.5, users=2, record_path=path)
    assert rec.status == "complete" and rec.series[0].histogram
    return str(path)


def test_gate_on_real_load_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = measure(tmp_path, "base", 20.0)
    same = measure(tmp_path, "same", 20.0)
    slow = measure(tmp_path, "slow", 40.0)
    rules = ["--rule", "p50:+25%", "--rule", "error_ratio:+1pp"]
    assert main(["gate", "--baseline", base, "--current", same, *rules]) == 0
    out = capsys.readouterr().out
    assert "Latency gate: PASS" in out and "POST /predict" in out
    assert (
        main(["gate", "--baseline", base, "--current", slow, *rules, "--markdown", str(tmp_path / "s.md")])
        == 1
    )
    out = capsys.readouterr().out
    assert "REGRESSION" in out
    row = next(line for line in out.splitlines() if line.startswith("p50:+25%"))
    assert "regression" in row and "bootstrap" in row
    assert "❌ regression" in (tmp_path / "s.md").read_text()
