"""deploybench: which way to deploy a model, measured with real servers and real load.

One installed namespace: everything is ``deploybench.*``. The repository keeps the design's top-level folders
(``targets/``, ``loadtests/``, ``bench/``, ``reports/``); an installed wheel holds them as subpackages of
``deploybench`` (pyproject's ``package-dir``). In a checkout, the finder below maps ``deploybench.targets``
&c. to those folders of *this* tree, ahead of any other finder: an editable install's finder points at the
tree that was installed, but an A/B worktree of another commit (``deploybench ab``, which puts that tree first
on ``PYTHONPATH``) must run its own code.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

FOLDER_PACKAGES = ("targets", "loadtests", "bench", "reports")  # top-level folders -> deploybench.<name>


class _CheckoutFinder(importlib.abc.MetaPathFinder):
    """Finds ``deploybench.<folder>`` in the checkout ``root`` (its subpackages follow from its path)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        head, _, name = fullname.partition(".")
        if head != __name__ or name not in FOLDER_PACKAGES:
            return None
        folder = self.root / name
        return importlib.util.spec_from_file_location(
            fullname, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )

    def __repr__(self) -> str:
        return f"deploybench checkout finder ({self.root})"


def _checkout_root() -> Path | None:
    """The repository root when this package is imported from a checkout (not from an installed wheel)."""
    here = Path(__file__).resolve().parent
    if (here / "targets").is_dir():  # an installed wheel: the subpackages are in here
        return None
    root = here.parent
    if (root / "pyproject.toml").is_file() and all(
        (root / f / "__init__.py").is_file() for f in FOLDER_PACKAGES
    ):
        return root
    return None


_root = _checkout_root()
if _root is not None:
    sys.meta_path.insert(0, _CheckoutFinder(_root))
