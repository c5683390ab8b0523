"""Where generated output goes. Everything here is git-ignored."""

from __future__ import annotations

import os
from pathlib import Path


def zoo_dir() -> Path:
    """Model artifacts + manifest. Override with DEPLOYBENCH_ZOO."""
    return Path(os.environ.get("DEPLOYBENCH_ZOO", "artifacts/zoo"))


def results_dir() -> Path:
    """Run records (JSON). Override with DEPLOYBENCH_RESULTS."""
    return Path(os.environ.get("DEPLOYBENCH_RESULTS", "results"))
