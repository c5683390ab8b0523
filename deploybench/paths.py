"""Where generated output goes by default. Everything here is git-ignored.

Both defaults are relative to the caller's working directory (``./artifacts/zoo``, ``./results``), whether
deploybench runs from a checkout or is installed: code that hands one to another process (the load runner,
the target launcher) makes it absolute first.
"""

from __future__ import annotations

import os
from pathlib import Path


def zoo_dir() -> Path:
    """Model artifacts + manifest: ``./artifacts/zoo``. Override with DEPLOYBENCH_ZOO."""
    return Path(os.environ.get("DEPLOYBENCH_ZOO", "artifacts/zoo"))


def results_dir() -> Path:
    """Run records (JSON): ``./results``. Override with DEPLOYBENCH_RESULTS."""
    return Path(os.environ.get("DEPLOYBENCH_RESULTS", "results"))
