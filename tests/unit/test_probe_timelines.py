"""The compare report draws each search probe over time (``reports.plots.probe_timelines``): per choice, one
panel per probe from its load record's 1 s blocks, at most ``PROBE_CAP`` panels (the probes nearest the
boundary); a stall shows in the plotted data as one block with a huge P99 and a rate near 0."""

from __future__ import annotations

import math
from pathlib import Path

from deploybench.compare_doc import Choice, ChoiceResult, CompareRun, load_compare
from deploybench.decisions.compare.config import expand
from deploybench.decisions.compare.run import run_matrix
from deploybench.record import RunRecord, Series
from deploybench.reports import plots
from deploybench.reports.compare_render import build_blocks, probe_records, write_report
from deploybench.reports.render import Image
from tests.unit.test_compare import CATALOG, FakeDriver, quick_cfg
from tests.unit.test_frames import block


def probe_record(
    rate: float, latency_us: int, *, stall_at: int | None = None, n_blocks: int = 3
) -> RunRecord:
    """An open-loop load record at ``rate`` with ``n_blocks`` 1 s blocks; block ``stall_at`` (if any) has
    one request at 2 s latency: a stall."""
    blocks = [
        block(float(i), 2_000_000, 1) if i == stall_at else block(float(i), latency_us, int(rate))
        for i in range(n_blocks)
    ]
    count = sum(b["count"] for b in blocks)
    s = Series("POST /predict", count=count, latency_us={"p50": latency_us, "p99": latency_us},
               duration_s=float(n_blocks), throughput_rps=count / n_blocks, offered_rps=rate,
               blocks=blocks)  # fmt: skip
    rec = RunRecord("load", {"load_model": "constant", "warmup_s": 1.0}, {}, series=[s])
    rec.finish()
    return rec


class BlockDriver(FakeDriver):
    """The fake driver's records with per-block data; a rate above capacity stalls in its second block."""

    def load(self, target, *, load_model, duration_s, warmup_s, record_path, users=None, rate_rps=None):
        rec = super().load(target, load_model=load_model, duration_s=duration_s, warmup_s=warmup_s,
                           record_path=record_path, users=users, rate_rps=rate_rps)  # fmt: skip
        if rate_rps is not None:
            over = rate_rps > target.capacity
            p = probe_record(rate_rps, 3_000, stall_at=1 if over else None)
            rec.series[0].blocks = p.series[0].blocks
            rec.config["warmup_s"] = 1.0
            rec.save(record_path)
        return rec


def compare_with_blocks(tmp_path: Path) -> CompareRun:
    cfg = quick_cfg()
    cfg.matrix.format = ["onnx"]
    choices, skipped, scenario = expand(cfg, CATALOG)
    return run_matrix(cfg, choices, skipped, scenario, BlockDriver({"fastapi": 400.0, "flask": 150.0}),
                      tmp_path, env={})  # fmt: skip


def test_the_compare_report_has_one_probe_figure_per_choice(tmp_path: Path) -> None:
    run = compare_with_blocks(tmp_path)
    figures = plots.probe_timelines(run, probe_records(run, tmp_path))
    assert [f.choice_id for f in figures] == [r.choice.id for r in run.results]
    for f, r in zip(figures, run.results, strict=True):
        n = len(r.saturation["points"])
        assert f.probes == n and f.without_blocks == 0
        assert len(f.panels) == min(n, plots.PROBE_CAP)
        rates = [p.offered_rps for p in f.panels]
        assert rates == sorted(rates)
        assert {p.phase for p in f.panels} <= {"coarse", "repeat 2", "repeat 3", "repeat 1"}
        assert all(p.timeline.warmup_s == 1.0 for p in f.panels)

    write_report(run, tmp_path)
    md = (tmp_path / "report.md").read_text()
    html = (tmp_path / "report.html").read_text()
    assert "## Probes over time" in md
    for r in run.results:
        assert f"![{r.choice.label}: each probe over time](plots/" in md
    assert md.count("![") == 2 + len(run.results) and html.count("data:image/png;base64,") == md.count("![")
    # probes were capped (a default search runs more than PROBE_CAP probes), and the report says so
    assert any(len(r.saturation["points"]) > plots.PROBE_CAP for r in run.results)
    assert f"{plots.PROBE_CAP} of " in md and "nearest the boundary" in md
    # the size stays modest: small multiples at a low dpi
    pngs = [p for p in (tmp_path / "plots").glob("*each-probe*.png")]
    assert len(pngs) == len(run.results) and all(p.stat().st_size < 150_000 for p in pngs)
    # re-rendered from compare.json in the same folder: the same Markdown
    again = load_compare(tmp_path)
    write_report(again, tmp_path / "again", records_dir=tmp_path)
    assert (tmp_path / "again" / "report.md").read_text() == md


def test_without_probe_records_or_plots_there_is_no_probe_figure(tmp_path: Path) -> None:
    run = compare_with_blocks(tmp_path)
    assert not any(isinstance(b, Image) and "each probe" in b.title for b in build_blocks(run))
    assert plots.probe_timelines(run, {}) == []
    no_plots = build_blocks(run, plots=False, records_dir=tmp_path)
    assert not any("Probes over time" in getattr(b, "text", "") for b in no_plots)


def synthetic_run(rates: list[float], max_rps: float, first_fail_rps: float) -> tuple[CompareRun, dict]:
    r = ChoiceResult(Choice("fastapi", "uvicorn", "iris-rf", "onnx"))
    r.status = "complete"
    points, records = [], {}
    for i, rate in enumerate(rates):
        path = f"{r.choice.id}/rate-{i + 1:02d}.json"
        passed = rate <= max_rps
        points.append({"offered_rps": rate, "throughput_rps": rate, "p99_us": 3_000 if passed else 900_000,
                       "error_ratio": 0.0, "passed": passed, "reasons": [],
                       "extra": {"record": path, "phase": "coarse" if i < 6 else "repeat 2"}})  # fmt: skip
        records[path] = probe_record(rate, 3_000 if passed else 900_000)
    r.saturation = {"max_rps": max_rps, "first_fail_rps": first_fail_rps, "points": points}
    cfg = {"name": "synthetic", "slo": {"p99_ms": 50}}
    return CompareRun(cfg, "tabular", {}, [r]), records


def test_the_cap_keeps_the_probes_nearest_the_boundary() -> None:
    rates = [100.0, 800.0, 400.0, 200.0, 300.0, 250.0, 270.0, 280.0, 260.0, 290.0, 275.0, 1600.0]
    run, records = synthetic_run(rates, max_rps=270.0, first_fail_rps=280.0)
    (f,) = plots.probe_timelines(run, records, cap=8)
    assert f.probes == 12 and len(f.panels) == 8
    shown = [p.offered_rps for p in f.panels]
    assert shown == sorted(shown)
    assert {100.0, 800.0, 1600.0}.isdisjoint(shown)  # the far ones go first
    assert {260.0, 270.0, 275.0, 280.0, 290.0} <= set(shown)
    assert [p.passed for p in f.panels] == [r <= 270.0 for r in shown]
    assert plots.probe_timelines_png(f, 50.0).startswith(b"\x89PNG")
    # under the cap: every probe; a missing record is counted, not drawn
    del records[run.results[0].saturation["points"][0]["extra"]["record"]]
    (g,) = plots.probe_timelines(run, records, cap=20)
    assert len(g.panels) == 11 and g.without_blocks == 1
    assert plots.select_probes([1.0, 2.0, 3.0], None, cap=2) == [0, 1]  # no boundary: the first ones


def test_a_stall_is_one_block_with_a_huge_p99_and_a_rate_near_zero() -> None:
    rec = probe_record(200.0, 3_000, stall_at=2, n_blocks=5)
    tl = plots.timeline(rec)
    assert tl is not None and tl.warmup_s == 1.0 and tl.cpu is None
    (st,) = tl.series
    assert st.mid_s == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert st.rate_rps == [200.0, 200.0, 1.0, 200.0, 200.0]
    assert [round(v, -1) for v in st.p99_ms] == [0, 0, 2000, 0, 0]  # ms, to HdrHistogram's precision
    assert max(st.p99_ms) == st.p99_ms[2] and min(st.rate_rps) == st.rate_rps[2]
    # a block where nothing completed stays in the plot: rate 0, no latency
    rec.series[0].blocks[2] = {**rec.series[0].blocks[2], "count": 0, "histogram": None}
    st = plots.timeline(rec).series[0]
    assert st.rate_rps[2] == 0.0 and math.isnan(st.p99_ms[2]) and len(st.mid_s) == 5
    # the same data drawn as a compare panel
    run, records = synthetic_run([200.0], 200.0, 250.0)
    records[next(iter(records))] = rec
    (f,) = plots.probe_timelines(run, records)
    assert f.panels[0].timeline.series[0].rate_rps[2] == 0.0
