"""Renderers: Markdown/CSV snapshots of stored fixture records, a self-contained HTML file, the report CLI.

Regenerate the snapshots after an intended change:
DEPLOYBENCH_UPDATE_SNAPSHOTS=1 pytest tests/unit/test_render.py
"""

from __future__ import annotations

import base64
import csv
import json
import os
import re
from pathlib import Path

import pytest

from deploybench.commands.cli import main as cli_main
from deploybench.record import load_records
from deploybench.reports.render import (
    CSV_COLUMNS,
    expand_record_paths,
    fmt_bytes,
    fmt_ms,
    render_html,
    render_markdown,
    summary_rows,
    write_csv,
    write_report,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
RECORD_FILES = [
    FIXTURES / "record_micro_iris-rf.json",
    FIXTURES / "record_micro_preprocess.json",
    FIXTURES / "record_load.json",
    FIXTURES / "record_v1.json",
]
UPDATE = os.environ.get("DEPLOYBENCH_UPDATE_SNAPSHOTS") == "1"


def check_snapshot(name: str, actual: str) -> None:
    path = FIXTURES / name
    if UPDATE:
        path.write_text(actual, encoding="utf-8")
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"{name} differs from the snapshot (DEPLOYBENCH_UPDATE_SNAPSHOTS=1 to accept)"


@pytest.fixture(scope="module")
def records():
    return load_records(RECORD_FILES)


def test_markdown_matches_snapshot(records) -> None:
    check_snapshot("report_snapshot.md", render_markdown(records))


def test_csv_matches_snapshot(records, tmp_path: Path) -> None:
    path = write_csv(records, tmp_path / "summary.csv")
    check_snapshot("summary_snapshot.csv", path.read_text(encoding="utf-8"))


def test_markdown_is_deterministic_and_complete(records) -> None:
    md = render_markdown(records)
    assert md == render_markdown(load_records(RECORD_FILES))
    # every series of every record appears, with its warnings next to its row
    row = next(line for line in md.splitlines() if line.startswith("| pickle | 1 | 1 |"))
    assert "high-spread" in row and "few-samples" in row
    assert "case-missing" in md and "predict/iris-rf/pickle/b8/t1" in md
    # load record: corrected and uncorrected side by side, server timing, errors, record-level warning
    assert "↳ POST /predict (uncorrected)" in md
    assert "| POST /predict | infer | 1.500 |" in md
    assert "0.50% (http-503: 6, timeout: 4)" in md
    assert "**generator-bound**" in md
    # the v1 record was migrated: 2.5 ms -> 2500 µs -> "2.500"
    assert "| POST /predict | 1000 | 2.500 |" in md


def test_markdown_figures_come_from_the_record(records) -> None:
    micro = records[0]
    s = micro.get_series("predict/iris-rf/onnx/b1/t1")
    assert s is not None
    md = render_markdown([micro])
    row = next(line for line in md.splitlines() if line.startswith("| onnx | 1 | 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:6] == [fmt_ms(s.latency_us[k]) for k in ("p50", "p95", "p99")]
    assert cells[8] == fmt_bytes(s.extra["size_bytes"])
    assert cells[9] == str(s.count)


def test_status_of_an_unfinished_record_is_shown(records) -> None:
    rec = load_records([RECORD_FILES[2]])[0]
    rec.status, rec.error = "interrupted", "stopped by SIGINT"
    assert "**status interrupted**: stopped by SIGINT" in render_markdown([rec])


def test_html_is_self_contained_with_embedded_pngs(records) -> None:
    page = render_html(records)
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r'(src|href)="(https?:)?//', page), "external asset referenced"
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # micro iris-rf: per format + vs batch + throughput; load: 2 records x (percentiles + throughput)
    assert len(pngs) == 7
    for data in pngs:
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    md_tables = sum(1 for line in render_markdown(records).splitlines() if line.startswith("|---"))
    assert page.count("<table>") == md_tables == 5
    assert '<td class="l">high-spread, few-samples</td>' in page


def test_summary_rows_have_units_and_one_row_per_series(records) -> None:
    rows = summary_rows(records)
    assert len(rows) == sum(len(r.series) for r in records)
    assert set(rows[0]) == set(CSV_COLUMNS)
    load_row = next(
        r for r in rows if r["series"] == "POST /predict" and r["kind"] == "load" and r["offered_rps"]
    )
    assert load_row["error_count"] == 10 and load_row["uncorrected_p99_us"] is not None


def test_write_report_all_formats(records, tmp_path: Path) -> None:
    written = write_report(records, tmp_path, ["md", "html", "csv", "json"])
    assert {p.name for p in written.values()} == {"report.md", "report.html", "summary.csv", "summary.json"}
    data = json.loads(written["json"].read_text())
    assert data["runs"] == [r.run_id for r in records]
    with written["csv"].open() as fh:
        assert len(list(csv.DictReader(fh))) == len(data["rows"])
    # the report's own exports are skipped when its folder is read back as records
    for f in RECORD_FILES:
        (tmp_path / f.name).write_text(f.read_text())
    assert len(load_records(expand_record_paths([tmp_path]))) == len(RECORD_FILES)


def test_report_cli_writes_files(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "records"
    folder.mkdir()
    for f in RECORD_FILES:
        (folder / f.name).write_text(f.read_text())
    out = tmp_path / "out"
    rc = cli_main(["report", str(folder), "--out", str(out), "--format", "md,csv"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["report.md", "summary.csv"]  # no html, no json
    printed = capsys.readouterr().out
    assert str(out / "report.md") in printed and str(out / "summary.csv") in printed
    records = load_records(sorted(RECORD_FILES))
    series = [(r, s) for r in records for s in r.series]

    # CSV: the documented header, then one row per series with that record's own numbers
    with (out / "summary.csv").open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        rows = list(reader)
    assert len(rows) == len(series) == 9
    for row, (rec, s) in zip(rows, series, strict=True):
        assert (row["run_id"], row["kind"], row["status"], row["series"]) == (
            rec.run_id, rec.kind, rec.status, s.name,
        )  # fmt: skip
        assert int(row["count"]) == s.count
        for key in ("p50", "p90", "p95", "p99", "p99.9", "max"):
            want = s.latency_us.get(key)
            assert row[f"{key}_us"] == ("" if want is None else str(want)), (s.name, key)
        assert int(row["error_count"]) == s.error_count
        if s.throughput_rps is not None:
            assert float(row["throughput_rps"]) == pytest.approx(s.throughput_rps)
    onnx_b1 = next(r for r in rows if r["series"] == "predict/iris-rf/onnx/b1/t1")
    assert (onnx_b1["p50_us"], onnx_b1["p99_us"], onnx_b1["size_bytes"]) == ("20", "22", "70081")
    v1 = next(r for r in rows if r["run_id"] == "20250101T000000Z-load-flask-iris-rf")
    assert (v1["p50_us"], v1["p99_us"], v1["error_count"]) == ("2500", "4250", "2")  # migrated ms -> µs

    # Markdown: each series' table row names it and carries its own percentiles (ms)
    md = (out / "report.md").read_text()
    assert md == render_markdown(records)
    lines = md.splitlines()
    for rec, s in series:
        if s.name.startswith("load/"):  # artifact load time: the "load (ms)" column of that format's rows
            fmt_rows = [line for line in lines if line.startswith(f"| {s.params['format']} | ")]
            assert fmt_rows and all(
                line.strip("|").split("|")[7].strip() == fmt_ms(s.latency_us["p50"]) for line in fmt_rows
            ), (s.name, fmt_rows)
            continue
        if s.name.startswith("predict/"):
            prefix = f"| {s.params['format']} | {s.params['batch_size']} | {s.params['threads']} |"
            keys = ("p50", "p95", "p99")
        elif rec.kind == "micro":
            prefix, keys = f"| {s.name} | {s.count} |", ("p50", "p95", "p99", "max")
        else:
            prefix, keys = f"| {s.name} | {s.count} |", ("p50", "p90", "p95", "p99", "p99.9", "max")
        (row,) = [line for line in lines if line.startswith(prefix)]  # exactly one row per series
        assert "| " + " | ".join(fmt_ms(s.latency_us[k]) for k in keys) + " |" in row, (s.name, row)
    load = next(line for line in lines if line.startswith("| POST /predict | 1990 |"))
    assert "| 3.027 | 4.999 | 5.719 | 7.803 | 9.623 | 12.783 |" in load  # the fixture's numbers, literally


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "pdf"], "unknown report format"),
        (["--format", ","], "--format needs"),
    ],
)
def test_report_cli_bad_options_exit_2(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    rc = cli_main(["report", str(RECORD_FILES[0]), "--out", str(tmp_path), *args])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_report_cli_bad_records_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli_main(["report", str(bad), "--out", str(tmp_path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert cli_main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["report", str(empty), "--out", str(tmp_path)]) == 2
    assert "no *.json records" in capsys.readouterr().err
