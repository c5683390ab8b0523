"""Packaging rules: the installable package declares compatible ranges and no Python cap; our own
environments use the exact versions of constraints.txt (torch the CPU build, installed first); .ci/run runs
exactly the README's test command, which works where the system pip is refused (PEP 668)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
README = (ROOT / "README.md").read_text()


def constraints() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not an exact pin"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def declared() -> list[Requirement]:
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    return [
        Requirement(r) for r in [*project["dependencies"], *(r for reqs in extras.values() for r in reqs)]
    ]


def test_requires_python_has_no_upper_cap() -> None:
    spec = PYPROJECT["project"]["requires-python"]
    assert spec == ">=3.11" and "<" not in spec


def test_dependencies_are_ranges_and_every_one_is_pinned_in_the_constraints_inside_its_range() -> None:
    pins = constraints()
    for req in declared():
        ops = {s.operator for s in req.specifier}
        assert ops and ops <= {">=", "<", "!=", "~="}, f"{req}: a range, not an exact pin"
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{req.name}=={pins[name]} outside {req}"


def test_torch_is_pinned_exactly_and_installed_first_with_the_constraints() -> None:
    assert constraints()["torch"] == Version("2.13.0")  # also matches the 2.13.0+cpu wheel
    nox = (ROOT / "noxfile.py").read_text()
    installs = re.findall(r"session\.install\((.*)\)", nox)
    assert installs and all("CONSTRAINTS" in call for call in installs), installs
    assert installs[0].endswith('"torch"') and '"-e"' in installs[1]  # torch first, then the project
    assert 'CONSTRAINTS = ("-c", "constraints.txt")' in nox


def test_ci_runs_exactly_the_readme_test_command_in_a_venv_of_its_own() -> None:
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()][-1].strip()
    readme = [line.split("#", 1)[0].strip() for line in README.splitlines() if "nox -s tests" in line]
    assert ci in readme, (ci, readme)
    # never `pip install` into the system Python (PEP 668: Debian/Ubuntu refuse it)
    assert ci.startswith("python3 -m venv .venv && .venv/bin/pip install ") and ci.endswith("nox -s tests")
    compare = [line for line in README.splitlines() if "nox -s compare" in line and "venv" in line]
    assert compare and compare[0].startswith(ci.removesuffix("nox -s tests"))


def test_configs_ship_as_package_data() -> None:
    data = PYPROJECT["tool"]["setuptools"]["package-data"]
    assert data["deploybench.decisions.compare"] == ["configs/*.toml"]
    assert list((ROOT / "deploybench" / "decisions" / "compare" / "configs").glob("*.toml"))
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["deploybench.targets"] == ["data/*"]


def test_one_installed_namespace_lists_every_package_folder() -> None:
    """The wheel's only top-level name is deploybench: the design's folders map to its subpackages, and the
    explicit package list names every folder with an __init__.py (a new subpackage must be added there)."""
    tool = PYPROJECT["tool"]["setuptools"]
    dirs = {"deploybench": "deploybench", **tool["package-dir"]}
    assert dirs == {
        "deploybench": "deploybench",
        "deploybench.targets": "targets",
        "deploybench.loadtests": "loadtests",
        "deploybench.bench": "bench",
        "deploybench.reports": "reports",
    }
    on_disk = set()
    for package, folder in dirs.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            on_disk.add(".".join([package, *init.parent.relative_to(ROOT / folder).parts]))
    assert set(tool["packages"]) == on_disk
    assert all(p.split(".")[0] == "deploybench" for p in tool["packages"])
    assert PYPROJECT["project"]["scripts"] == {"deploybench": "deploybench.commands.cli:main"}
    for generic in ("commands", "decisions"):
        assert not (ROOT / generic).exists(), f"{generic}/ lives in deploybench/ now"
