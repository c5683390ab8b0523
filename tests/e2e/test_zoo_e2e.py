"""Model zoo checks that need a fresh interpreter: what importing the zoo pulls in, and the exit code of
`deploybench build` as a process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # every test here starts a Python process


def test_sample_inputs_import_neither_sklearn_nor_torch() -> None:
    """A fresh interpreter (this one has imported both already)."""
    code = (
        "import sys; from deploybench.targets.zoo import sample_inputs; sample_inputs('iris-rf', 2); "
        "print('sklearn' in sys.modules, 'torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "False False"


def test_cli_console_script_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "deploybench.commands.cli",
            "build",
            "--models",
            "nope",
            "--zoo-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown models nope" in proc.stderr
    assert "Traceback" not in proc.stderr
