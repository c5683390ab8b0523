"""The `deploybench report` command as a process, on the stored fixture records."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deploybench.record import load_records
from deploybench.reports.render import render_markdown

FIXTURES = Path(__file__).parent.parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]
RECORD_FILES = [
    FIXTURES / "record_micro_iris-rf.json",
    FIXTURES / "record_micro_preprocess.json",
    FIXTURES / "record_load.json",
    FIXTURES / "record_v1.json",
]


@pytest.mark.e2e
def test_report_command_as_a_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "deploybench", "report", *map(str, RECORD_FILES), "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.md"]  # the default md,html
    records = load_records(RECORD_FILES)
    assert (tmp_path / "report.md").read_text() == render_markdown(records)
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and all(f"{r.run_id}" in page for r in records)
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(pngs) == 7 and all(base64.b64decode(d).startswith(b"\x89PNG") for d in pngs)
