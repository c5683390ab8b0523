"""The one-way dependency rule, computed from the code (not from a hand-written list).

Every ``.py`` file of the project's packages is parsed with ``ast``; every import counts: top-level and
function-local, ``import a.b``, ``from a import b`` (``b`` may be a module), relative imports and
``importlib.import_module("literal")``. From that module graph:

1. no import cycle between project modules;
2. each package imports only from the packages below it (``ALLOWED``);
3. a function-local import carries a comment saying "import cost" (on its line, the line above, or the import
   lines right above it): imports are lazy only to keep a heavy import (torch, matplotlib, ...) off a path
   that does not need it, never to hide a cycle.
"""

from __future__ import annotations

import ast
import io
import sys
import tokenize
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# The layers, bottom to top: a package may import itself and the packages listed for it.
ALLOWED: dict[str, set[str]] = {
    "deploybench": set(),
    "targets": {"deploybench"},
    "loadtests": {"deploybench", "targets"},
    "bench": {"deploybench", "targets", "loadtests"},  # the overhead benchmark drives the load engines
    "reports": {"deploybench"},
    "decisions": {"deploybench", "targets", "loadtests", "bench", "reports"},
    "commands": {"deploybench", "targets", "loadtests", "bench", "reports", "decisions"},
}
PACKAGES = tuple(ALLOWED)
COST_NOTE = "import cost"
# Where each installed package's code lives in the repository: pyproject's package-dir (the wheel's layout),
# plus deploybench itself (commands/ and decisions/ are folders inside it).
PACKAGE_DIRS: dict[str, str] = {
    "deploybench": "deploybench",
    **tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"],
}


def layer_of(module: str) -> str:
    """``deploybench.targets.zoo`` -> ``targets``; ``deploybench.stats`` -> ``deploybench`` (the core)."""
    if module == "deploybench.__main__":  # `python -m deploybench`: the command line's entry point
        return "commands"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "deploybench" and parts[1] in ALLOWED else parts[0]


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module, e.g. "deploybench.decisions.gate.judge"
    target: str  # what it imports, resolved to a module name where it is a project module
    path: Path
    line: int
    local: bool  # inside a function (runs when called, not when the module is imported)
    explained: bool  # an "import cost" comment goes with it


def module_name(root: Path, path: Path) -> str:
    """The installed name of a file: ``targets/zoo.py`` -> ``deploybench.targets.zoo`` (``PACKAGE_DIRS``)."""
    rel = path.relative_to(root).with_suffix("")
    for package, folder in PACKAGE_DIRS.items():
        if rel.parts[0] == folder:
            parts = [package, *rel.parts[1:]]
            break
    else:
        parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files(root: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for folder in PACKAGE_DIRS.values():
        for path in sorted((root / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                files[module_name(root, path)] = path
    return files


def _comments(source: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


def _import_module_literal(node: ast.Call) -> str | None:
    """``importlib.import_module("x")`` / ``import_module("x")`` / ``__import__("x")`` with a literal name."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def scan_file(root: Path, path: Path, modules: set[str]) -> list[Import]:
    """The imports of one file, with relative imports resolved and ``from pkg import module`` seen as a
    module import."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path))
    comments = _comments(source)
    importer = module_name(root, path)
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    import_lines: set[int] = set()
    found: list[tuple[ast.AST, str, bool]] = []

    def visit(node: ast.AST, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_local = local or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                import_lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
                found.extend((child, alias.name, local) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                import_lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base_name = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    base_name = child.module or ""
                for alias in child.names:
                    sub = f"{base_name}.{alias.name}"
                    found.append((child, sub if sub in modules else base_name, local))
            elif isinstance(child, ast.Call) and (literal := _import_module_literal(child)):
                found.append((child, literal, local))
            visit(child, child_local)

    visit(tree, False)

    def explained(node: ast.AST) -> bool:
        first, last = node.lineno, node.end_lineno or node.lineno
        lines = list(range(first, last + 1))
        above = first - 1
        while above > 0 and (above in import_lines or above in comments):  # the block of imports above
            lines.append(above)
            if above not in import_lines:  # a comment line ends the block
                break
            above -= 1
        if above > 0 and above not in lines:
            lines.append(above)
        return any(COST_NOTE in comments.get(n, "").lower() for n in lines)

    return [
        Import(importer, target, path, node.lineno, local, explained(node)) for node, target, local in found
    ]


def resolve(target: str, modules: set[str]) -> str | None:
    """The project module ``target`` names (the longest prefix that is one), or None (not the project's)."""
    parts = target.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        if name in modules:
            return name
    return None


def scan(root: Path) -> tuple[dict[str, Path], list[Import]]:
    files = project_files(root)
    modules = set(files)
    imports = [imp for path in files.values() for imp in scan_file(root, path, modules)]
    return files, imports


def graph_of(imports: list[Import], modules: set[str]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in imports:
        target = resolve(imp.target, modules)
        if target is not None and target != imp.importer:
            graph[imp.importer].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                strongconnect(v)
    finally:
        sys.setrecursionlimit(limit)
    return [_cycle_path(graph, set(c), c[0]) for c in components]


def _cycle_path(graph: dict[str, set[str]], component: set[str], start: str) -> list[str]:
    """A shortest path from ``start`` back to itself inside one component (breadth first)."""
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                chain = [v]
                while chain[-1] != start:
                    chain.append(previous[chain[-1]])
                return [*reversed(chain), start]
            if w not in previous:
                previous[w] = v
                queue.append(w)
    return [start]


def check(root: Path) -> list[str]:
    """Every violation of the three rules under ``root``, as readable lines (empty: all good)."""
    files, imports = scan(root)
    modules = set(files)
    problems: list[str] = []
    for cycle in find_cycles(graph_of(imports, modules)):
        problems.append("import cycle: " + " -> ".join(cycle))
    for imp in imports:
        target = resolve(imp.target, modules)
        where = f"{imp.path.relative_to(root)}:{imp.line}"
        if target is not None:
            src, dst = layer_of(imp.importer), layer_of(target)
            if dst != src and dst not in ALLOWED[src]:
                allowed = ", ".join(sorted(ALLOWED[src])) or "nothing outside itself"
                problems.append(
                    f"{where}: upward import {imp.importer} -> {target} ({src} may import only {allowed})"
                )
        if imp.local and not imp.explained:
            problems.append(
                f"{where}: function-local import of {imp.target} without an '# {COST_NOTE}: ...' comment "
                "(import it at the top, or say why it must be lazy)"
            )
    return problems


# -- the project ------------------------------------------------------------------------------------------
def test_the_project_has_one_way_layers_no_cycles_and_only_explained_lazy_imports() -> None:
    problems = check(REPO)
    assert problems == [], "\n".join(problems)


def test_the_scan_sees_the_whole_project() -> None:
    """Guard against a vacuous pass: the scan finds every package and the edges that must exist."""
    files, imports = scan(REPO)
    graph = graph_of(imports, set(files))
    assert {layer_of(m) for m in files} == set(PACKAGES)
    assert {m.split(".")[0] for m in files} == {"deploybench"}  # one installed namespace
    assert len(files) > 60
    assert "deploybench.record" in graph["deploybench.stats"]
    assert "deploybench.targets.predictors" in graph["deploybench.targets.zoo"]
    assert "deploybench.compare_doc" in graph["deploybench.reports.compare_render"]
    assert "deploybench.decisions.gate.judge" in graph["deploybench.decisions.ab"]
    local = [imp for imp in imports if imp.local]
    assert any(imp.target == "torch" for imp in local)  # lazy torch imports are seen (and explained)
    assert not graph["deploybench.io"] - {"deploybench.errors"}


# -- the checker catches what it must --------------------------------------------------------------------
def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_catches_cycles_upward_imports_and_unexplained_lazy_imports(tmp_path: Path) -> None:
    write(tmp_path, {
        "deploybench/__init__.py": "",
        "deploybench/base.py": "from deploybench.reports import table\n",  # upward: the core imports reports
        "targets/__init__.py": "",
        "targets/x.py": "from deploybench.targets import y\n",  # a cycle through a relative import ...
        "targets/y.py": "def f():\n    from . import x  # import cost: none, hides the cycle\n",
        "reports/__init__.py": "",
        "reports/table.py": (
            "def render():\n"
            "    import json\n"  # stdlib, lazy, no reason given
            "    # import cost: matplotlib is slow to import\n"
            "    import matplotlib\n"
            "    import matplotlib.pyplot\n"  # in the block under the comment
            "    return json, matplotlib\n"
        ),
        "deploybench/decisions/__init__.py": "",
        "deploybench/decisions/pick.py": (
            "import importlib\nCLI = importlib.import_module('deploybench.commands.cli')\n"
        ),
        "deploybench/commands/__init__.py": "",
        "deploybench/commands/cli.py": "import deploybench.base as b\n",
    })  # fmt: skip
    problems = check(tmp_path)
    assert "import cycle: deploybench.targets.x -> deploybench.targets.y -> deploybench.targets.x" in problems
    upward = [p for p in problems if "upward import" in p]
    assert len(upward) == 2
    assert any(
        "deploybench/base.py:1: upward import deploybench.base -> deploybench.reports.table" in p
        for p in upward
    )
    assert any(
        "deploybench/decisions/pick.py:2: upward import deploybench.decisions.pick -> "
        "deploybench.commands.cli" in p
        for p in upward
    )
    lazy = [p for p in problems if "function-local import" in p]
    assert lazy == [
        "reports/table.py:2: function-local import of json without an '# import cost: ...' comment "
        "(import it at the top, or say why it must be lazy)"
    ]
    assert len(problems) == 4


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    write(tmp_path, {
        "deploybench/__init__.py": "",
        "deploybench/a.py": "import json\n",
        "targets/__init__.py": "",
        "targets/t.py": "from deploybench import a\nfrom deploybench.a import json\n",
        "deploybench/commands/__init__.py": "",
        "deploybench/commands/c.py": (
            "from deploybench.targets.t import a\n\ndef run():\n    import torch  # import cost: torch\n"
        ),
    })  # fmt: skip
    assert check(tmp_path) == []
    files, imports = scan(tmp_path)
    assert graph_of(imports, set(files))["deploybench.targets.t"] == {"deploybench.a"}
