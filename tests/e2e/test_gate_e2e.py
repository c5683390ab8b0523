"""Gate end to end: real load runs (Locust, HdrHistogram records) against a known-service-time server.

Three baseline runs and one current run (runs are the units: a prediction interval for one new run from the
baseline runs' spread). A run at the same service time must pass (A/A); doubling the service time must fail
with exit 1. Tolerances: the rule is p50:+25%, so an A/A run fails only if its median moves by more than 5 ms
(the server sleeps a fixed 20 ms; client overhead on loopback is about 1 ms, more on a busy machine), and the
slow run's median is about +100%, far beyond it. One run against one run says "cannot tell" (exit 4). Each
load run is 2 s (+0.5 s warm-up) with 2 users (~200 requests).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deploybench.commands.cli import main
from deploybench.loadtests.runner import run_load
from tests.support.known_latency import KnownLatencyServer

pytestmark = pytest.mark.e2e  # starts the known-latency server and Locust


def measure(folder: Path, name: str, service_ms: float) -> str:
    path = folder / f"{name}.json"
    with KnownLatencyServer(service_ms=service_ms) as srv:
        rec = run_load(srv.url, "tabular", duration_s=2, warmup_s=0.5, users=2, record_path=path)
    assert rec.status == "complete" and rec.series[0].histogram
    return str(path)


def test_gate_on_real_load_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base_dir = tmp_path / "base"
    for i in range(3):
        measure(base_dir, f"base-{i}", 20.0)
    same = measure(tmp_path, "same", 20.0)
    slow = measure(tmp_path, "slow", 40.0)
    rules = ["--rule", "p50:+25%", "--rule", "error_ratio:+1pp"]
    base = ["--baseline", str(base_dir), "--last", "0"]
    assert main(["gate", *base, "--current", same, *rules]) == 0
    out = capsys.readouterr().out
    assert "Latency gate: PASS" in out and "POST /predict" in out
    md = str(tmp_path / "s.md")
    assert main(["gate", *base, "--current", slow, *rules, "--markdown", md]) == 1
    out = capsys.readouterr().out
    # 1 test in the Holm family: error_ratio has no errors on either side, so it cannot become significant
    assert "REGRESSION" in out and "over 1 test (Holm: smallest p vs 0.05)" in out
    row = next(line for line in out.splitlines() if line.startswith("p50:+25%"))
    assert "regression" in row and "runs 3+1 (t)" in row
    assert "❌ regression" in (tmp_path / "s.md").read_text()
    # one run against one run: drift between the two runs cannot be estimated, so the doubled service time
    # is "cannot tell" with its own exit code (4), not a regression -- and said so
    one = str(sorted(base_dir.glob("*.json"))[0])
    assert main(["gate", "--baseline", one, "--current", slow, *rules]) == 4
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("p50:+25%"))
    assert "Latency gate: CANNOT TELL" in out and "cannot tell" in row
    assert "not the drift of the machine between the baseline run and this one" in out
