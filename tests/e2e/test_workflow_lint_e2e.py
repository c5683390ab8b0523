"""The workflows pass zizmor, the GitHub Actions security linter, offline (it is in the test extra, pinned in
constraints.txt). The linter is also shown a workflow with the faults the issue found, to prove it is really
looking."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # runs the linter as a process

ROOT = Path(__file__).resolve().parents[2]

BAD = """name: bad
on: pull_request
permissions:
  contents: read
jobs:
  gate:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - run: echo "origin/${{ github.base_ref }}"
      - uses: actions/upload-artifact@v4
        with:
          name: results
          path: .
"""


def zizmor(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("zizmor", path=str(Path(sys.executable).parent)) or shutil.which("zizmor")
    assert exe, "zizmor is missing: it is in the test extra (pip install -c constraints.txt -e '.[test]')"
    return subprocess.run([exe, "--offline", "--no-progress", *args], capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_workflows_have_no_findings() -> None:
    proc = zizmor("--persona", "pedantic", str(ROOT / ".github" / "workflows"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout + proc.stderr


def test_the_linter_flags_the_faults_it_found_before(tmp_path: Path) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "bad.yml").write_text(BAD)
    proc = zizmor(str(workflows))
    assert proc.returncode != 0
    for audit in ("template-injection", "artipacked", "unpinned-uses"):
        assert f"[{audit}]" in proc.stdout, proc.stdout
