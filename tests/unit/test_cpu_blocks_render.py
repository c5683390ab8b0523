"""A record's optional ``cpu_blocks`` (the generator's and the server's CPU per block, 100 = one core): a
third panel of the load report's timeline, and the ``cpu`` frame of ``deploybench.frames``."""

from __future__ import annotations

import json
import math
from pathlib import Path

from deploybench.frames import BLOCK_COLUMNS, CPU_COLUMNS, Frames, cpu_rows, frames, load_frames
from deploybench.record import RunRecord, Series
from deploybench.reports import plots
from deploybench.reports.render import build_document
from tests.unit.test_frames import block

CPU_BLOCKS = [
    {"start_s": -1.0, "duration_s": 1.0, "generator_cpu_percent": 12.0, "server_cpu_percent": 40.0},
    {"start_s": 0.0, "duration_s": 1.0, "generator_cpu_percent": 20.0, "server_cpu_percent": 95.5},
    {"start_s": 1.0, "duration_s": 1.0, "generator_cpu_percent": 21.0, "server_cpu_percent": None},
    {"start_s": 2.0, "duration_s": 1.0, "generator_cpu_percent": None, "server_cpu_percent": 99.0},
]


def load_record_with(cpu_blocks: list[dict] | None) -> RunRecord:
    blocks = [block(0, 1_000, 100), block(1, 50_000, 200, errors=3), block(2, 2_000, 300)]
    s = Series("POST /predict", count=600, latency_us={"p50": 2_000, "p99": 50_000}, throughput_rps=200.0,
               blocks=blocks)  # fmt: skip
    rec = RunRecord("load", {"scenario": "tabular", "warmup_s": 1.0}, {}, series=[s])
    if cpu_blocks is not None:
        rec.cpu_blocks = cpu_blocks
    return rec


def test_cpu_blocks_become_the_timelines_third_panel() -> None:
    tl = plots.timeline(load_record_with(CPU_BLOCKS))
    assert tl is not None and tl.cpu is not None
    assert tl.cpu.mid_s == [-0.5, 0.5, 1.5, 2.5]  # the warm-up's block too
    assert tl.cpu.generator_percent[:3] == [12.0, 20.0, 21.0] and math.isnan(tl.cpu.generator_percent[3])
    assert tl.cpu.server_percent[:2] == [40.0, 95.5] and math.isnan(tl.cpu.server_percent[2])
    with_cpu = plots.timeline_png(load_record_with(CPU_BLOCKS))
    without = plots.timeline_png(load_record_with(None))
    assert with_cpu is not None and without is not None
    assert _png_height(with_cpu) > _png_height(without)  # three panels, not two
    assert plots.timeline(load_record_with(None)).cpu is None
    empty = [{"start_s": 0.0, "duration_s": 1.0, "generator_cpu_percent": None, "server_cpu_percent": None}]
    assert plots.timeline(load_record_with(empty)).cpu is None  # nothing measured: no panel
    doc = build_document([load_record_with(CPU_BLOCKS)], plots=True)
    assert any(getattr(b, "title", "").endswith("over time") for b in doc)


def _png_height(png: bytes) -> int:
    return int.from_bytes(png[20:24], "big")  # the IHDR chunk: width at 16..20, height at 20..24


def test_the_cpu_frame_has_one_row_per_cpu_block() -> None:
    rec, other = load_record_with(CPU_BLOCKS), load_record_with(None)
    other.run_id = "no-cpu"
    f = frames([rec, other])
    assert list(f.cpu.columns) == list(CPU_COLUMNS) and len(f.cpu) == 4
    assert list(f.cpu.start_s) == [-1.0, 0.0, 1.0, 2.0] and list(f.cpu.block) == [0, 1, 2, 3]
    assert f.cpu.server_cpu_percent.iloc[1] == 95.5 and math.isnan(f.cpu.server_cpu_percent.iloc[2])
    assert set(f.cpu.run_id) == {rec.run_id}
    assert list(f.blocks.columns) == list(BLOCK_COLUMNS)  # the blocks frame is as before
    side = f.blocks.merge(f.cpu[["run_id", "start_s", "server_cpu_percent"]], on=["run_id", "start_s"],
                          how="left")  # fmt: skip
    assert list(side[side.run_id == rec.run_id].server_cpu_percent.fillna(-1)) == [95.5, -1, 99.0]
    assert cpu_rows([load_record_with(None)]) == []
    # the three-frame constructor still works: the cpu frame defaults to an empty one with its columns
    old = Frames(f.runs, f.blocks, f.probes)
    assert old.cpu.empty and list(old.cpu.columns) == list(CPU_COLUMNS)


def test_load_frames_reads_cpu_blocks_from_the_file(tmp_path: Path) -> None:
    rec = load_record_with(None)
    data = rec.to_dict()
    data["cpu_blocks"] = CPU_BLOCKS
    (tmp_path / "run.json").write_text(json.dumps(data))
    f = load_frames(tmp_path)
    assert len(f.cpu) == 4 and list(f.cpu.generator_cpu_percent.fillna(-1)) == [12.0, 20.0, 21.0, -1]
    assert len(load_frames(tmp_path).blocks) == 3
