"""The `deploybench report` command as a process, on the stored fixture records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
        [sys.executable, "-m", "commands.cli", "report", *map(str, RECORD_FILES), "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report.html").stat().st_size > 10_000
