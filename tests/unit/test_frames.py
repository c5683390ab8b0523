"""Results as pandas DataFrames (``deploybench.frames``): one row per run x series, per time block and per
compare probe; the report's CSV comes from the same rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from deploybench.decisions.compare.config import expand
from deploybench.decisions.compare.run import run_matrix
from deploybench.errors import UsageError
from deploybench.frames import BLOCK_COLUMNS, PROBE_COLUMNS, RUN_COLUMNS, load_frames, series_rows
from deploybench.record import RunRecord, Series, load_record
from deploybench.reports.render import write_csv
from deploybench.stats import encode_histogram, new_histogram, record_us
from tests.unit.test_compare import CATALOG, FakeDriver, quick_cfg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def test_runs_frame_has_one_row_per_run_and_series_with_units_in_the_names() -> None:
    f = load_frames(FIXTURES / "record_load.json", FIXTURES / "record_micro_iris-rf.json")
    load = load_record(FIXTURES / "record_load.json")
    micro = load_record(FIXTURES / "record_micro_iris-rf.json")
    assert len(f.runs) == len(load.series) + len(micro.series)
    assert list(f.runs.columns[: len(RUN_COLUMNS)]) == list(RUN_COLUMNS)
    row = f.runs[(f.runs.run_id == load.run_id) & (f.runs.series == "POST /predict")].iloc[0]
    s = load.get_series("POST /predict")
    assert s is not None
    assert row.p99_us == s.latency_us["p99"] and row["count"] == s.count
    assert row.framework == load.config["framework"] and row.kind == "load"
    assert set(f.runs[f.runs.kind == "micro"].series) == {x.name for x in micro.series}
    assert f.blocks.empty and f.probes.empty and list(f.probes.columns) == list(PROBE_COLUMNS)


def test_the_report_csv_comes_from_the_same_rows(tmp_path: Path) -> None:
    records = [
        load_record(FIXTURES / "record_load.json"),
        load_record(FIXTURES / "record_micro_iris-rf.json"),
    ]
    path = write_csv(records, tmp_path / "summary.csv")
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert tuple(rows[0]) == RUN_COLUMNS
    expected = series_rows(records)
    assert [r["series"] for r in rows] == [r["series"] for r in expected]
    assert [r["p99_us"] for r in rows] == ["" if r["p99_us"] is None else str(r["p99_us"]) for r in expected]


def block(start_s: float, latency_us: int, n: int, errors: int = 0) -> dict:
    hist = new_histogram()
    for _ in range(n):
        record_us(hist, latency_us)
    return {
        "start_s": start_s,
        "duration_s": 1.0,
        "count": n,
        "errors": errors,
        "histogram": encode_histogram(hist),
    }


def test_blocks_frame_gives_each_time_block_its_own_figures(tmp_path: Path) -> None:
    s = Series("POST /predict", count=600, blocks=[block(0, 1_000, 100), block(1, 50_000, 200, errors=3),
                                                   block(2, 2_000, 300)])  # fmt: skip
    rec = RunRecord("load", {"scenario": "tabular", "framework": "fastapi"}, {}, series=[s])
    rec.save(tmp_path / "run.json")
    b = load_frames(tmp_path).blocks
    assert list(b.columns) == list(BLOCK_COLUMNS)
    assert list(b.block) == [0, 1, 2] and list(b.start_s) == [0.0, 1.0, 2.0]
    assert list(b["count"]) == [100, 200, 300] and list(b.error_count) == [0, 3, 0]
    assert list(b.throughput_rps) == [100.0, 200.0, 300.0]
    assert [round(v / 1000) for v in b.p50_us] == [1, 50, 2]  # the stall shows in its block only


def test_probes_frame_holds_every_search_step_of_a_compare_folder(tmp_path: Path) -> None:
    cfg = quick_cfg()
    cfg.matrix.format = ["onnx"]
    choices, skipped, scenario = expand(cfg, CATALOG)
    driver = FakeDriver({"fastapi": 400.0, "flask": 150.0})
    run = run_matrix(cfg, choices, skipped, scenario, driver, tmp_path, env={})
    f = load_frames(tmp_path)  # the folder: compare.json and every load record under it
    expected = sum(len((r.saturation or {}).get("points", [])) for r in run.results)
    assert len(f.probes) == expected > 0
    for r in run.results:
        mine = f.probes[f.probes.choice == r.choice.id]
        assert list(mine.probe) == list(range(len(mine)))
        assert mine.passed.any() and (~mine.passed).any()  # the search bracketed the capacity
        assert mine[mine.passed].offered_rps.max() <= (r.max_rps or 0) * 1.0001
    assert len(f.runs) > 0 and set(f.runs.kind) == {"load"}


def test_bad_paths_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file or folder"):
        load_frames(tmp_path / "missing")
    other = tmp_path / "manifest.json"
    other.write_text(json.dumps({"models": {}}))
    with pytest.raises(UsageError, match="neither a run record nor a compare document"):
        load_frames(other)
    assert load_frames(tmp_path).runs.empty  # inside a folder, other JSON files are skipped


def test_load_reports_plot_each_block_over_time_with_the_warm_up_shaded() -> None:
    from deploybench.reports import plots  # import cost: matplotlib, only for this test

    blocks = [block(0, 1_000, 100), block(1, 50_000, 200, errors=3), block(2, 2_000, 300)]
    s = Series("POST /predict", count=600, latency_us={"p50": 2_000, "p99": 50_000}, throughput_rps=200.0,
               blocks=blocks)  # fmt: skip
    rec = RunRecord("load", {"scenario": "tabular", "warmup_s": 2.0}, {}, series=[s])
    titles = [t for t, png in plots.load_plots(rec) if png.startswith(b"\x89PNG")]
    assert titles[-1] == f"{rec.run_id}: over time"
    one = Series("POST /predict", count=100, latency_us={"p50": 1_000, "p99": 1_000}, blocks=blocks[:1])
    assert plots.timeline_png(RunRecord("load", {}, {}, series=[one])) is None  # one block: nothing to draw
    assert not any(
        t.endswith("over time") for t, _ in plots.load_plots(RunRecord("load", {}, {}, series=[one]))
    )
