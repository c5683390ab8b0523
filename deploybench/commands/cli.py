"""The ``deploybench`` entry point: one sub-command per module of this package, imported only when asked for.

A command module provides ``add_arguments(parser)`` and ``run(args) -> int`` and calls the library.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from deploybench import __version__
from deploybench.errors import UsageError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "build": ("deploybench.commands.build", "build every model x format into the zoo, with a manifest"),
    "serve": ("deploybench.commands.serve", "start a Flask or FastAPI target under gunicorn/uvicorn"),
    "load": (
        "deploybench.commands.load",
        "start a target (or use --url), run a load scenario, write a run record",
    ),
    "worker": (
        "deploybench.commands.worker",
        "a Locust worker for a `deploybench load --expect-workers` master",
    ),
    "locustfile": (
        "deploybench.commands.locustfile",
        "print the path of a built-in Locust scenario (for locust -f)",
    ),
    "bench": ("deploybench.commands.bench", "run the in-process micro-benchmarks and write records + report"),
    "report": ("deploybench.commands.report", "render run records as Markdown, HTML (+PNG plots), CSV, JSON"),
    "gate": (
        "deploybench.commands.gate",
        "compare records with a baseline under rules; exit 1 on a regression",
    ),
    "baseline": ("deploybench.commands.baseline", "save or show the baseline records, keyed by environment"),
    "ab": (
        "deploybench.commands.ab",
        "same-job A/B: measure a base git ref and the working tree interleaved, then gate",
    ),
    "compare": (
        "deploybench.commands.compare",
        "run a matrix of deployment choices and rank them under a P99 SLO",
    ),
    "plan": (
        "deploybench.commands.plan",
        "replicas, cores and cost per choice to carry a traffic, from compare results or load records",
    ),
}


def build_parser(wanted: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    """The top-level parser with one sub-parser per command; only the ``wanted`` command's module is imported
    and given its options (torch & co. are slow to import), every command's when ``wanted`` is ``"*"`` (the
    CLI reference, ``deploybench.commands.reference``)."""
    parser = argparse.ArgumentParser(prog="deploybench", description=__doc__)
    parser.add_argument("--version", action="version", version=f"deploybench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules: dict[str, ModuleType] = {}
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if wanted in (name, "*"):
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            modules[name] = module
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, modules = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)
    except UsageError as exc:
        print(f"deploybench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deploybench {args.command}: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
