"""Sweeps (``deploybench.sweep``): point lists and ranges, their errors, the knee on synthetic curves (and its
edge cases), the summary's round trip, the sweep report, and ``deploybench load``/``report`` refusing bad
sweep input with exit 2 before anything starts (no test here starts a process: tests/conftest.py fails one
that does)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploybench.commands.cli import main as cli_main
from deploybench.commands.load import format_sweep
from deploybench.errors import UsageError
from deploybench.loadtests.runner import run_sweep
from deploybench.record import SWEEP_FILE, RunRecord, Series, load_records
from deploybench.reports.sweep_render import write_sweep_report
from deploybench.sweep import (
    MAX_POINTS,
    Sweep,
    SweepPoint,
    find_knee,
    judge_point,
    load_sweep,
    parse_points,
    point_file_name,
    point_from_record,
    save_sweep,
    sweep_path,
)


# -- point lists -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "axis", "expected"),
    [
        ("8", "users", [8]),
        ("1,2,4,8,16", "users", [1, 2, 4, 8, 16]),
        (" 1, 3 ,5 ", "users", [1, 3, 5]),
        ("1:4", "users", [1, 2, 3, 4]),
        ("2:10:4", "users", [2, 6, 10]),
        ("2:9:4", "users", [2, 6]),  # the end is included only when a step lands on it
        ("1:16:x2", "users", [1, 2, 4, 8, 16]),
        ("1:20:*3", "users", [1, 3, 9]),
        ("4:4", "users", [4]),
        ("100,250.5,400", "rate", [100, 250.5, 400]),
        ("100:400:100", "rate", [100, 200, 300, 400]),
        ("50:400:x2", "rate", [50, 100, 200, 400]),
        ("0.5:1.5:0.5", "rate", [0.5, 1.0, 1.5]),
    ],
)
def test_parse_points_lists_and_ranges(text: str, axis: str, expected: list[float]) -> None:
    assert parse_points(text, axis) == expected


@pytest.mark.parametrize(
    ("text", "axis", "message"),
    [
        ("", "users", "empty"),
        ("0", "users", "must be >= 1: users are whole numbers"),
        ("1,0,2", "users", "must be >= 1: users are whole numbers"),
        ("-2", "users", "must be >= 1: users are whole numbers"),
        ("1.5", "users", "must be >= 1: users are whole numbers"),
        ("abc", "users", "not a number"),
        ("1,,2", "users", "empty item"),
        ("4,2,8", "users", "strictly increasing.*2 comes after 4"),
        ("2,2", "users", "strictly increasing"),
        ("1:30", "users", f"at most {MAX_POINTS}"),
        (",".join(str(i) for i in range(1, MAX_POINTS + 2)), "users", f"at most {MAX_POINTS}"),
        ("8:2", "users", "end is below its start"),
        ("1:8:0", "users", "step must be > 0"),
        ("1:8:1.5", "users", "users step is a whole number"),
        ("1:8:x1", "users", "factor > 1"),
        ("1:8:xz", "users", "factor after 'x'"),
        ("1:2:3:4", "users", "START:END"),
        ("1:", "users", "START:END"),
        ("1,2:4", "users", "not both"),
        ("0", "rate", "must be > 0 requests/s"),
        ("-100,200", "rate", "must be > 0 requests/s"),
        ("nan", "rate", "not a finite number"),
        ("inf", "rate", "not a finite number"),
    ],
)
def test_parse_points_refuses_bad_lists(text: str, axis: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as err:
        parse_points(text, axis)
    assert f"--{axis}" in str(err.value)


def test_point_file_names_sort_in_sweep_order() -> None:
    names = [point_file_name(i, "users", v) for i, v in enumerate([1, 2, 16])]
    assert names == ["01-users-1.json", "02-users-2.json", "03-users-16.json"] == sorted(names)
    assert point_file_name(0, "rate", 12.5) == "01-rate-12_5.json"


# -- the knee --------------------------------------------------------------------------------------------
def _point(value: float, rps: float, p99_ms: float, **kw: object) -> SweepPoint:
    p = SweepPoint(value=value, record=f"{value:g}.json", throughput_rps=rps,
                   latency_us={"p50": int(p99_ms * 500), "p90": None, "p99": int(p99_ms * 1000),
                               "p99.9": None}, **kw)  # type: ignore[arg-type]  # fmt: skip
    judge_point(p)
    return p


def _curve() -> list[SweepPoint]:
    """A server saturating at ~100 rps: 1 user 50 rps/20 ms, 2: 100/20, 4: 100/30, 8: 100/80 (power 2.5, 5,
    3.3, 1.25)."""
    return [_point(1, 50, 20), _point(2, 100, 20), _point(4, 100, 30), _point(8, 100, 80)]


def test_knee_is_the_point_of_maximal_power() -> None:
    knee, note = find_knee(_curve())
    assert knee is not None and knee.index == 1 and knee.value == 2
    assert knee.throughput_rps == 100 and knee.p99_us == 20_000 and knee.power == pytest.approx(5.0)
    assert "maximal power" in note and "first" not in note


def test_no_knee_while_power_still_rises() -> None:
    rising = [_point(1, 50, 20), _point(2, 100, 20), _point(4, 200, 21)]
    knee, note = find_knee(rising)
    assert knee is None and "not reached" in note


@pytest.mark.parametrize("n", [0, 1, 2])
def test_no_knee_with_fewer_than_three_points(n: int) -> None:
    knee, note = find_knee(_curve()[:n])
    assert knee is None and f"{n} point(s)" in note


def test_knee_at_the_first_point_says_it_may_lie_below() -> None:
    falling = [_point(1, 100, 10), _point(2, 100, 20), _point(4, 100, 40)]
    knee, note = find_knee(falling)
    assert knee is not None and knee.index == 0 and "at or below" in note


def test_points_with_errors_or_a_bound_generator_cannot_be_the_knee() -> None:
    pts = _curve()
    pts[1] = _point(2, 100, 20, error_ratio=0.05)  # else the knee
    knee, note = find_knee(pts)
    assert not pts[1].eligible and "error ratio 5.0% > 1%" in pts[1].why_not
    assert knee is not None and knee.index == 2 and "could not be the knee" in note
    pts[1] = _point(2, 100, 20, generator_bound=True)
    assert "generator bound" in pts[1].why_not and find_knee(pts)[0].index == 2  # type: ignore[union-attr]
    pts[1] = _point(2, 100, 20, status="failed")
    assert pts[1].why_not == "run failed"
    pts[1] = _point(2, 100, 20, error_ratio=0.01)  # at the limit: still eligible
    assert pts[1].eligible and find_knee(pts)[0].index == 1  # type: ignore[union-attr]


def test_too_few_eligible_points_no_knee() -> None:
    pts = [_point(1, 50, 20), _point(2, 100, 20, error_ratio=0.5), _point(4, 100, 40)]
    knee, note = find_knee(pts)
    assert knee is None and "2 eligible point(s) of 3" in note


def test_a_point_without_p99_has_no_power() -> None:
    p = SweepPoint(value=1, record="x.json", throughput_rps=0.0, latency_us={"p99": None})
    judge_point(p)
    assert p.power is None and not p.eligible and p.why_not == "no throughput or P99"


def test_point_from_record_sums_throughput_and_takes_the_slowest_series() -> None:
    head = {"cpu_us_per_request": 80.5, "busy_percent_max": 31.0}
    rec = RunRecord(kind="load", config={"generator_headroom": head}, env={})
    rec.series = [
        Series("POST /predict", count=98, errors={"http_500": 2}, throughput_rps=98.0,
               latency_us={"p50": 1000, "p90": 2000, "p99": 3000, "p99.9": 4000}),
        Series("GET /health", count=100, throughput_rps=100.0,
               latency_us={"p50": 500, "p90": 2500, "p99": 2600, "p99.9": 9000}),
    ]  # fmt: skip
    rec.finish("complete")
    rec.add_warning("generator-bound", "busy")
    p = point_from_record(4, rec, "03-users-4.json")
    assert p.throughput_rps == 198.0 and p.error_ratio == pytest.approx(0.01)
    assert p.latency_us == {"p50": 1000, "p90": 2500, "p99": 3000, "p99.9": 9000}
    assert p.cpu_us_per_request == 80.5 and p.busy_percent_max == 31.0
    assert p.generator_bound and not p.eligible and p.power == pytest.approx(66.0)


# -- the summary -----------------------------------------------------------------------------------------
def _sweep() -> Sweep:
    s = Sweep(
        axis="users", load_model="closed", config={"target": {"url": "http://x"}, "scenario": "tabular"}
    )
    for p in _curve():
        s.add(p)
    s.finish()
    return s


def test_summary_round_trip_and_detection(tmp_path: Path) -> None:
    s = _sweep()
    path = save_sweep(s, tmp_path / SWEEP_FILE)
    doc = json.loads(path.read_text())
    assert doc["kind"] == "deploybench-sweep" and doc["schema_version"] == 1 and doc["axis"] == "users"
    assert doc["knee"]["value"] == 2 and [p["value"] for p in doc["points"]] == [1, 2, 4, 8]
    assert {"throughput_rps", "latency_us", "error_ratio", "cpu_us_per_request", "busy_percent_max",
            "why_not"} <= set(doc["points"][0])  # fmt: skip
    back = load_sweep(tmp_path)
    assert back.to_dict() == s.to_dict()
    assert sweep_path(tmp_path) == path and sweep_path(path) == path
    other = tmp_path / "copy.json"
    other.write_text(path.read_text())
    assert sweep_path(other) == other  # recognised by its kind
    other.unlink()
    record = tmp_path / "r.json"
    RunRecord(kind="load", config={}, env={}).save(record)
    assert sweep_path(record) is None and sweep_path(tmp_path / "nope") is None
    # a folder reader of records skips the summary
    assert [r.kind for r in load_records([tmp_path])] == ["load"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kind": "load", "schema_version": 1}, "not a deploybench sweep"),
        ({"kind": "deploybench-sweep", "schema_version": 99, "axis": "users"}, "schema_version 99"),
        ({"kind": "deploybench-sweep", "schema_version": 1, "axis": "threads"}, "axis must be one of"),
        ({"kind": "deploybench-sweep", "schema_version": 1}, "malformed sweep"),
        ({"kind": "deploybench-sweep", "schema_version": 1, "axis": "users", "points": [3]}, "malformed"),
    ],
)
def test_bad_summaries_are_refused(tmp_path: Path, doc: dict[str, object], message: str) -> None:
    (tmp_path / SWEEP_FILE).write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=message):
        load_sweep(tmp_path)


# -- the report ------------------------------------------------------------------------------------------
def test_sweep_report_has_the_table_the_knee_and_the_chart(tmp_path: Path) -> None:
    written = write_sweep_report(_sweep(), tmp_path, ["md", "html", "csv", "json"])
    md = written["md"].read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 4  # the header and one row per point
    knee_rows = [r for r in rows if "**knee**" in r]
    assert len(knee_rows) == 1 and "users=2" in knee_rows[0]
    assert "**Knee:** users=2" in md
    html = written["html"].read_text()
    assert "<img" in html and "latency-throughput curve" in html
    csv_lines = written["csv"].read_text().splitlines()
    assert len(csv_lines) == 5 and csv_lines[2].endswith(",True")
    assert json.loads(written["json"].read_text())["knee"]["index"] == 1


def test_sweep_report_without_a_knee_says_why(tmp_path: Path) -> None:
    s = Sweep(axis="rate", load_model="constant", config={"users": 8})
    s.add(_point(100, 100, 5))
    s.add(_point(200, 200, 5))
    s.finish()
    md = write_sweep_report(s, tmp_path, ["md"])["md"].read_text()
    assert "**Knee:** none: 2 point(s)" in md and "rate=100 rps" in md and "**knee**" not in md


def test_report_command_renders_a_sweep_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "sweep"
    save_sweep(_sweep(), folder / SWEEP_FILE)
    out = tmp_path / "report"
    assert cli_main(["report", str(folder), "--out", str(out), "--format", "md"]) == 0
    assert "**knee**" in (out / "report.md").read_text()
    assert cli_main(["report", str(folder), str(folder / SWEEP_FILE), "--out", str(out)]) == 2
    assert "reported on its own" in capsys.readouterr().err


# -- bad sweep input: exit 2 before anything starts ------------------------------------------------------
URL = ["load", "--url", "http://127.0.0.1:9", "--duration", "1", "--warmup", "0"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--users", "1,2", "--rate", "10,20", "--load-model", "constant"], "one axis at a time"),
        (["--users", "1,2", "--rate", "10", "--load-model", "constant"], "closed-loop sweep"),
        (["--rate", "10,20"], "open-loop sweep"),
        (["--users", "4,2"], "strictly increasing"),
        (["--users", "0,1"], "must be >= 1: users are whole numbers"),
        (["--users", ""], "empty"),
        (["--rate", "0,10", "--load-model", "poisson"], "must be > 0 requests/s"),
        (["--users", "1:64"], f"at most {MAX_POINTS}"),
        (["--users", "1,2", "--record", "r.json"], "--record"),
        (["--users", "1,2", "--threshold", "p99<5ms"], "--threshold"),
        (["--users", "1,2", "--expect-workers", "2"], "--expect-workers"),
        (["--users", "1,2", "--duration", "0"], "--duration must be > 0"),
        (["--users", "1,2", "--engine", "lean", "--locustfile", "x.py"], "cannot run a locustfile"),
    ],
)
def test_load_refuses_bad_sweeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    # port 9 (discard) is closed here: had the input passed, the reachability check would refuse it after
    assert cli_main([*URL, "--out", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 2
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_single_values_keep_one_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # one value is an ordinary run: refused here only by the closed port, as before
    assert cli_main([*URL, "--out", str(tmp_path), "--users", "4"]) == 2
    assert "unreachable" in capsys.readouterr().err
    assert cli_main([*URL, "--out", str(tmp_path), "--users", "4", "--record", str(tmp_path / "r.json")]) == 2
    assert "unreachable" in capsys.readouterr().err


def test_run_sweep_checks_before_starting(tmp_path: Path) -> None:
    class NeverStart:
        url = "http://127.0.0.1:9"

        def start(self) -> None:
            raise AssertionError("started")

    kw = {"duration_s": 1.0, "results_dir": tmp_path}
    with pytest.raises(UsageError, match="--record"):
        run_sweep(NeverStart(), "tabular", axis="users", values=[1, 2], record_path="r.json", **kw)
    with pytest.raises(UsageError, match="strictly increasing"):
        run_sweep(NeverStart(), "tabular", axis="users", values=[2, 1], **kw)
    with pytest.raises(UsageError, match="axis"):
        run_sweep(NeverStart(), "tabular", axis="threads", values=[1, 2], **kw)
    with pytest.raises(UsageError, match="--warmup"):
        run_sweep(NeverStart(), "tabular", axis="users", values=[1, 2], warmup_s=-1, **kw)
    with pytest.raises(UsageError, match="unknown scenario"):
        run_sweep(NeverStart(), "nope", axis="users", values=[1, 2], **kw)
    with pytest.raises(UsageError, match="open-loop sweep"):
        run_sweep(NeverStart(), "tabular", axis="rate", values=[1, 2], **kw)
    assert list(tmp_path.iterdir()) == []


def test_console_summary_has_a_line_per_point_and_the_knee() -> None:
    text = format_sweep(_sweep())
    lines = text.splitlines()
    assert lines[0].startswith("sweep users=1,2,4,8  status=complete")
    assert [line.split(":")[0].strip() for line in lines[1:5]] == ["users=1", "users=2", "users=4", "users=8"]
    assert lines[2].endswith("<- knee") and sum("<- knee" in line for line in lines) == 1
    assert lines[5].startswith("  knee: users=2 (100.0 rps at p99 20.00 ms)")
    failed = Sweep(axis="rate", load_model="poisson", config={"values": [10, 20]})
    failed.finish("failed", "point 1 (rate=10 rps): the target exited")
    text = format_sweep(failed)
    assert "sweep rate=10,20  status=failed" in text and "error: point 1" in text and "no knee" in text
