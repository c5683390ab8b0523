"""In a checkout, ``deploybench.targets`` & co. come from *that* tree's top-level folders, ahead of the
editable install's finder (which points at the tree that was installed): an A/B worktree of another commit,
put first on PYTHONPATH by ``deploybench ab``, must run its own code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("targets", "loadtests", "bench", "reports")


def test_a_second_tree_on_pythonpath_runs_its_own_folders(tmp_path: Path) -> None:
    other = tmp_path / "other-tree"
    (other / "deploybench").mkdir(parents=True)
    shutil.copy(ROOT / "deploybench" / "__init__.py", other / "deploybench" / "__init__.py")
    shutil.copy(ROOT / "pyproject.toml", other / "pyproject.toml")
    for folder in FOLDERS:
        (other / folder).mkdir()
        (other / folder / "__init__.py").write_text(f"TREE = 'other {folder}'\n")
    (other / "targets" / "probe.py").write_text("WHERE = __file__\n")
    code = (
        "import deploybench.targets, deploybench.loadtests, deploybench.bench, deploybench.reports\n"
        "import deploybench.targets.probe as p\n"
        "print(deploybench.targets.TREE, deploybench.reports.TREE, p.WHERE, p.__name__)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(other)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    probe = str(other / "targets" / "probe.py")
    assert out.stdout.split() == ["other", "targets", "other", "reports", probe, "deploybench.targets.probe"]


def test_this_checkout_maps_its_folders_and_nothing_else() -> None:
    code = (
        "import importlib.util, deploybench, deploybench.loadtests.lean as lean\n"
        "print(lean.__file__)\n"
        "find = importlib.util.find_spec\n"
        "print(find('deploybench.tests'), find('deploybench.noxfile'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lean_file, missing = out.stdout.splitlines()
    assert Path(lean_file) == ROOT / "loadtests" / "lean.py"
    assert missing == "None None"
