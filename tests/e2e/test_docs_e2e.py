"""The documentation site builds with mkdocs --strict (a broken link or anchor, a page missing from the nav or
a nav entry without a page fails), as `nox -s docs` builds it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_the_docs_site_builds_in_strict_mode(tmp_path: Path) -> None:
    if shutil.which("mkdocs") is None and not (Path(sys.executable).parent / "mkdocs").exists():
        pytest.fail("mkdocs is not installed: the tests session installs the project's `docs` extra")
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    site = tmp_path / "site"
    proc = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(site)], cwd=ROOT, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    cli = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    assert 'id="deploybench-compare"' in cli and "--expect-workers" in cli
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    assert {"index.html", "guides/your-model.html", "measurements/load-engines.html", "limits.html"} <= pages
