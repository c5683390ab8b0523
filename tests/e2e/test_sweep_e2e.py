"""End-to-end sweeps: ``deploybench load --users 1,2,4`` against the known-latency server, its folder,
records, summary and knee, and ``deploybench report`` on the folder; a rate sweep through the Python API
with a target the sweep starts once and stops.

The server sleeps 20 ms per request and serves at most 2 at a time (``max_concurrency=2``): a known capacity
of ~100 rps. So 1 user gets ~50 rps at ~20 ms, 2 users ~100 rps at ~20 ms, 4 users still ~100 rps but ~40 ms
(2 wait for each one served): throughput grows with users up to 2, then P99 grows instead. Asserted loosely
(4 users > 1.5x the throughput of 1; the knee at 1 or 2 users, never 4) since the 2 shared cores add noise.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploybench.commands.cli import main as cli_main
from deploybench.loadtests.runner import run_sweep
from deploybench.record import SWEEP_FILE, load_record, load_records
from deploybench.sweep import load_sweep
from tests.support.known_latency import KnownLatencyServer

pytestmark = pytest.mark.e2e  # every test here starts a server and load generators


@pytest.fixture
def server_2x20ms() -> Iterator[KnownLatencyServer]:
    with KnownLatencyServer(service_ms=20.0, max_concurrency=2) as srv:
        yield srv


def test_users_sweep_records_summary_knee_and_report(
    server_2x20ms: KnownLatencyServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results"
    rc = cli_main(["load", "--url", server_2x20ms.url, "--users", "1,2,4", "--duration", "1", "--warmup", "0",
                   "--out", str(out), "--progress", "off"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0, printed
    (folder,) = [p for p in out.iterdir() if p.is_dir()]
    assert "-sweep-" in folder.name
    names = sorted(p.name for p in folder.glob("*.json"))
    assert names == ["01-users-1.json", "02-users-2.json", "03-users-4.json", SWEEP_FILE]
    records = load_records([folder])  # the summary is skipped: three ordinary run records
    assert [r.status for r in records] == ["complete"] * 3
    sweep = load_sweep(folder)
    assert (
        sweep.status == "complete" and sweep.axis == "users" and [p.value for p in sweep.points] == [1, 2, 4]
    )
    doc = json.loads((folder / SWEEP_FILE).read_text())
    assert doc["kind"] == "deploybench-sweep" and len(doc["points"]) == 3
    tput = [p.throughput_rps or 0.0 for p in sweep.points]
    assert tput[0] < 60 and tput[2] > 1.5 * tput[0], tput  # 1 user ~50 rps; 4 users ~100 (capacity)
    for p, name in zip(sweep.points, names, strict=False):
        assert p.record == name and load_record(folder / name).series  # each point names its record
        assert p.latency_us["p99"] and p.latency_us["p50"] >= 20_000 and p.error_ratio == 0.0
        assert p.cpu_us_per_request is not None and p.busy_percent_max is not None
    p99 = [p.latency_us["p99"] or 0 for p in sweep.points]
    assert p99[2] > p99[0], p99  # 4 users queue behind the 2 slots
    assert sweep.knee is not None and sweep.knee.value in (1, 2), sweep.knee_note
    # the console: one line per point and the knee
    assert (
        printed.count("users=") >= 3
        and "knee: users=" in printed
        and f"sweep: {folder / SWEEP_FILE}" in printed
    )

    report = tmp_path / "report"
    assert cli_main(["report", str(folder), "--out", str(report)]) == 0
    md = (report / "report.md").read_text()
    knee_rows = [line for line in md.splitlines() if line.startswith("| ") and "**knee**" in line]
    assert len(knee_rows) == 1 and f"users={sweep.knee.value:g}" in knee_rows[0]
    html = (report / "report.html").read_text()
    assert "<img" in html and "latency-throughput curve" in html


def test_rate_sweep_starts_its_target_once(tmp_path: Path) -> None:
    server = KnownLatencyServer(service_ms=5.0)  # not started: the sweep starts and stops it
    sweep, path = run_sweep(
        server, "tabular", axis="rate", values=[20, 40], duration_s=1.0, warmup_s=0.0, users=4,
        load_model="constant", results_dir=tmp_path,
    )  # fmt: skip
    assert not server.is_alive()  # stopped at the end
    assert path.name == SWEEP_FILE and sweep.status == "complete" and len(sweep.points) == 2
    assert sweep.knee is None and "2 point(s)" in sweep.knee_note
    recs = [load_record(path.parent / p.record) for p in sweep.points]
    assert [r.config["rate_rps"] for r in recs] == [20.0, 40.0]
    assert all(r.status == "complete" and r.config["loop"] == "open-loop" for r in recs)
    for p in sweep.points:
        assert p.offered_rps == pytest.approx(p.value, rel=0.05) and p.latency_us["p99"]


class _KillAt:
    """A progress sink that kills the target when a given point starts (a target dying mid-sweep)."""

    def __init__(self, server: KnownLatencyServer, phase: str) -> None:
        self.server, self.phase_text = server, phase

    def phase(self, text: str) -> None:
        if text.startswith(self.phase_text) and self.server.proc is not None:
            self.server.proc.kill()
            self.server.proc.wait(10)

    def update(self, figures: object) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_target_dying_mid_sweep_ends_it_failed_with_the_points_so_far(tmp_path: Path) -> None:
    server = KnownLatencyServer(service_ms=5.0)
    sweep, path = run_sweep(
        server, "tabular", axis="users", values=[1, 2, 4], duration_s=1.0, results_dir=tmp_path,
        progress=_KillAt(server, "point 2/3"),
    )  # fmt: skip
    assert not server.is_alive()
    assert sweep.status == "failed" and "point 2 (users=2)" in (sweep.error or ""), sweep.error
    assert sweep.points[0].status == "complete" and len(sweep.points) <= 2
    assert all(p.status != "complete" for p in sweep.points[1:])
    saved = load_sweep(path)
    assert saved.status == "failed" and saved.error == sweep.error and saved.knee is None


def test_cli_sweep_of_a_started_target_starts_it_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # import cost: the zoo builder, for this test only
    from deploybench.targets.zoo import build_zoo

    zoo = Path(build_zoo(models=["iris-rf"], formats=["onnx"])["zoo_dir"]).resolve()
    rc = cli_main(["load", "--framework", "fastapi", "--server", "uvicorn", "--model", "iris-rf", "--format",
                   "onnx", "--zoo", str(zoo), "--users", "1:2", "--duration", "1", "--warmup", "0",
                   "--out", str(tmp_path), "--progress", "off"])  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0, printed
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert folder.name.endswith("-sweep-fastapi-uvicorn-iris-rf-onnx-tabular")
    # one server log for the sweep (one start), none per point
    assert sorted(p.name for p in folder.glob("*server.log")) == ["server.log"]
    recs = load_records([folder])
    assert [r.status for r in recs] == ["complete", "complete"]
    assert all(r.config["framework"] == "fastapi" and r.config["format"] == "onnx" for r in recs)
    assert all(r.cpu_blocks and any(b["server_cpu_percent"] is not None for b in r.cpu_blocks) for r in recs)
    sweep = load_sweep(folder)
    assert [p.value for p in sweep.points] == [1, 2] and sweep.knee is None and "2 point(s)" in printed
