"""Capacity plans (``deploybench plan``): the arithmetic against a hand-computed example, the extrapolation
warning, plans from a compare document and from a load record, and bad input (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploybench.commands.cli import main
from deploybench.compare_doc import Choice, ChoiceResult, CompareRun, RateInterval, scaling_rows
from deploybench.decisions.plan import (
    Capacity,
    PlanRequest,
    parse_headroom,
    parse_price,
    parse_traffic,
    plan_row,
)
from deploybench.errors import UsageError
from deploybench.record import RecordWarning, RunRecord, Series
from deploybench.reports.compare_render import write_report


def test_the_arithmetic_matches_a_hand_computed_plan() -> None:
    """1,000 rps (95 % interval 800-1,250) on 1 core; 2,000 rps of traffic, 30 % headroom, 0.04 a core-hour.
    By hand: usable 1,000 x 0.7 = 700 rps a replica -> ceil(2,000 / 700) = ceil(2.857) = 3 replicas = 3 cores;
    3 x 0.04 x 730 h = 87.60 a month; an hour costs 0.12 and carries 7.2 M requests: 0.016667 per million.
    Range: 1,250 x 0.7 = 875 -> ceil(2.286) = 3; 800 x 0.7 = 560 -> ceil(3.571) = 4 replicas: 87.60-116.80."""
    row = plan_row(
        Capacity("a", 1000.0, 1, lo_rps=800.0, hi_rps=1250.0),
        PlanRequest(traffic_rps=2000.0, headroom=0.30, core_hour_price=0.04),
    )
    assert row.usable_rps == pytest.approx(700.0)
    assert (row.replicas, row.cores, row.cores_per_replica) == (3, 3, 1)
    assert row.replicas_range == (3, 4) and row.cores_range == (3, 4)
    assert row.cost_per_month == pytest.approx(87.60)
    assert row.cost_per_month_range == pytest.approx((87.60, 116.80))
    assert row.cost_per_million == pytest.approx(0.12 / 7.2)
    assert not row.extrapolated and not row.notes
    # exactly at a replica's usable capacity: no extra replica
    exact = plan_row(Capacity("b", 500.0, 2), PlanRequest(traffic_rps=1000.0))
    assert (exact.replicas, exact.cores) == (2, 4) and exact.cost_per_month is None
    assert exact.notes == ["no interval (a single measurement): no range"]


def test_more_cores_per_replica_than_measured_is_extrapolation_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    row = plan_row(
        Capacity("a", 1000.0, 1, 800.0, 1250.0), PlanRequest(traffic_rps=10_000.0, cores_per_replica=4)
    )
    assert row.extrapolated and row.capacity_rps == pytest.approx(4000.0) and row.replicas == 3
    assert row.cores == 12 and row.capacity_lo_rps == pytest.approx(3200.0)
    assert (
        "extrapolated beyond the cores measured: measured on 1 core(s), planned at 4 per replica"
        in (row.notes[0])
    )
    fewer = plan_row(Capacity("b", 1000.0, 2), PlanRequest(traffic_rps=1000.0, cores_per_replica=1))
    assert not fewer.extrapolated and "interpolated below the cores measured" in fewer.notes[0]
    path = compare_doc(tmp_path)
    assert main(["plan", str(path), "--traffic", "5000rps", "--cores-per-replica", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 (extrapolated)" in out and "extrapolated beyond the cores measured" in out


def compare_doc(tmp_path: Path) -> Path:
    def result(fw: str, estimates: list[float], affinity: list[int] | None) -> ChoiceResult:
        server = "uvicorn" if fw == "fastapi" else "gunicorn-sync"
        r = ChoiceResult(Choice(fw, server, "iris-mlp", "onnx"), status="complete", server_affinity=affinity)
        iv = RateInterval(tuple(estimates), floor_log=0.02)
        r.saturation = {"max_rps": estimates[0], "repeats": iv.to_dict()}
        return r

    bound = result("flask", [9000.0], [1])
    bound.choice = Choice("flask", "gunicorn-gthread", "iris-mlp", "onnx")
    bound.warnings.append(RecordWarning("generator-bound", "the generator was the limit"))
    failed = ChoiceResult(Choice("fastapi", "gunicorn-uvicorn", "iris-mlp", "onnx"), status="failed")
    run = CompareRun(
        config={"slo": {"p99_ms": 50.0}},
        scenario="tabular",
        env={},
        results=[result("fastapi", [6000.0, 7000.0, 6500.0], [1]), result("flask", [2500.0], None), bound,
                 failed],
        status="complete",
    )  # fmt: skip
    return run.save(tmp_path / "cmp" / "compare.json")


def test_plan_from_a_compare_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = compare_doc(tmp_path).parent
    out_json = tmp_path / "plan.json"
    argv = ["plan", str(folder), "--traffic", "12k/s", "--slo", "p99<50ms", "--headroom", "25%",
            "--core-hour-price", "0.05", "--json", str(out_json)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("Plan: 12,000 rps under P99 < 50 ms, 25% headroom, 0.05 per core-hour")
    doc = json.loads(out_json.read_text())
    fastapi, flask = doc["rows"]  # cheapest first
    assert fastapi["label"].startswith("fastapi+uvicorn") and fastapi["cores_measured"] == 1
    # geometric mean of 6,000 / 7,000 / 6,500 = 6,490.5; x 0.75 = 4,867.9 -> ceil(2.465) = 3 replicas
    assert fastapi["capacity_rps"] == pytest.approx((6000 * 7000 * 6500) ** (1 / 3))
    assert fastapi["replicas"] == 3 and fastapi["cost_per_month"] == pytest.approx(3 * 0.05 * 730)
    # unpinned: its 1 worker taken as its cores (said); one search: the interval is the search's resolution
    assert flask["replicas"] == 7 and "cores not pinned" in flask["notes"][0]  # 12,000 / 1,875 = 6.4
    assert flask["replicas_range"] == [7, 7]  # 2,500 x e^(+-0.02) x 0.75 -> 6.3 and 6.5
    assert any("generator's ceiling" in line for line in doc["left_out"])
    assert any("failed" in line for line in doc["left_out"])


def test_plan_from_a_load_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = RunRecord("load", {"target": {"framework": "fastapi", "server": "uvicorn", "model": "iris-rf",
                                        "format": "onnx", "workers": 1, "cpus": [1]},
                             "load_model": "closed"}, {}, status="complete")  # fmt: skip
    rec.series.append(
        Series(name="POST /predict", count=9000, latency_us={"p99": 20_000}, throughput_rps=900.0)
    )
    path = rec.save(tmp_path / "runs" / "run.json")
    assert main(["plan", str(path.parent), "--traffic", "2000rps", "--slo", "p99<50ms"]) == 0
    out = capsys.readouterr().out
    assert "fastapi uvicorn iris-rf onnx" in out and "a single load run" in out
    assert main(["plan", str(path), "--traffic", "2000rps", "--slo", "p99<10ms"]) == 2
    assert "P99 20 ms is above the SLO 10 ms" in capsys.readouterr().err
    assert main(["plan", str(path), "--traffic", "2000rps"]) == 2
    assert "load records carry no SLO: give --slo" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--traffic", "2000"], "--traffic '2000': give a rate with its unit"),
        (["--traffic", "20ms"], "--traffic '20ms': give a rate with its unit"),
        (["--traffic", "2000rps", "--core-hour-price", "0.04/min"], "--core-hour-price '0.04/min'"),
        (["--traffic", "2000rps", "--headroom", "120%"], "--headroom '120%': must be at least 0 and below"),
        (["--traffic", "2000rps", "--slo", "p50<5ms"], "--slo 'p50<5ms': a P99 limit"),
        (["--traffic", "2000rps", "--slo", "p99<20ms"], "compare measured its max rates under P99 < 50 ms"),
        (["--traffic", "2000rps", "--cores-per-replica", "0"], "--cores-per-replica must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    path = compare_doc(tmp_path)
    assert main(["plan", str(path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_a_folder_without_measurements_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.json").write_text('{"rows": []}')
    assert main(["plan", str(tmp_path / "empty"), "--traffic", "100rps", "--slo", "p99<50ms"]) == 2
    assert "nothing to plan from" in capsys.readouterr().err
    assert main(["plan", str(tmp_path / "nope"), "--traffic", "100rps"]) == 2


def test_units() -> None:
    assert parse_traffic("2k/s") == 2000.0 and parse_traffic("120000/min") == 2000.0
    assert parse_traffic("7.2M/h") == pytest.approx(2000.0) and parse_traffic("2000 rps") == 2000.0
    assert parse_price("$0.04") == parse_price("0.04/core-hour") == 0.04
    assert parse_headroom("30%") == pytest.approx(0.3) and parse_headroom("0.3") == pytest.approx(0.3)
    with pytest.raises(UsageError):
        parse_traffic("0rps")


def test_scaling_of_the_same_deployment_over_workers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """w1 on 1 core at ~1,000 rps, w2 on 2 cores at ~1,500 rps: speed-up 1.5x (its interval from the two sets
    of repeats), 750 rps per core, efficiency 1.5 / 2 = 75 %. A choice of another deployment has no row."""

    def result(workers: int, estimates: list[float], cpus: list[int]) -> ChoiceResult:
        r = ChoiceResult(Choice("flask", "gunicorn-sync", "iris-mlp", "onnx", workers=workers),
                         status="complete", server_affinity=cpus)  # fmt: skip
        r.saturation = {"max_rps": estimates[0], "repeats": RateInterval(tuple(estimates), 0.02).to_dict()}
        return r

    other = ChoiceResult(
        Choice("fastapi", "uvicorn", "iris-mlp", "onnx"), status="complete", server_affinity=[1]
    )
    other.saturation = {"max_rps": 3000.0}
    w1, w2 = result(1, [990.0, 1010.0, 1000.0], [3]), result(2, [1480.0, 1520.0, 1500.0], [2, 3])
    run = CompareRun(config={"slo": {"p99_ms": 50.0}}, scenario="tabular", env={}, status="complete",
                     results=[w1, w2, other])  # fmt: skip
    rows = scaling_rows(run)
    assert [(r.workers, r.cores) for r in rows] == [(1, 1), (2, 2)]
    two = rows[1]
    assert two.speedup == pytest.approx(1.5, rel=1e-3) and two.efficiency == pytest.approx(0.75, rel=1e-3)
    assert two.rps_per_core == pytest.approx(750.0, rel=1e-3)
    assert two.speedup_lo is not None and two.speedup_lo < 1.5 < two.speedup_hi
    path = run.save(tmp_path / "c" / "compare.json")
    write_report(run, tmp_path / "c", plots=False)
    report = (tmp_path / "c" / "report.md").read_text()
    assert "## Scaling" in report and "| 1.50x (" in report and "| 75% |" in report
    assert main(["plan", str(path), "--traffic", "3000rps"]) == 0
    out = capsys.readouterr().out
    assert "Scaling (measured" in out and "75%" in out and "flask+gunicorn-sync iris-mlp/onnx" in out
