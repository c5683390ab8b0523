"""The command-line reference, generated from the argparse parsers themselves (so it cannot drift):
``python -m deploybench.commands.reference --write`` rewrites ``docs/reference/cli.md``; ``--check`` exits 1
when the committed page differs from the parsers, or when an option has no help text.
``tests/unit/test_cli_reference.py`` runs the same checks."""

from __future__ import annotations

import argparse
import html
import os
import sys
from pathlib import Path

from deploybench.commands.cli import COMMANDS, build_parser

PAGE = Path("docs") / "reference" / "cli.md"
USAGE_WIDTH = 100  # argparse wraps usage to the terminal; the page is the same on every machine


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's sub-commands, in the order they were added (empty: it has none)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def sub_help(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The one-line help of each sub-command (``add_parser(name, help=...)``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {a.dest: a.help or "" for a in action._choices_actions}
    return {}


def commands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, argparse.ArgumentParser]:
    """``"baseline save"`` -> its parser: every command and nested sub-command, depth first."""
    out: dict[str, argparse.ArgumentParser] = {}
    for name, sub in subparsers(parser).items():
        out[f"{prefix}{name}"] = sub
        out.update(commands(sub, f"{prefix}{name} "))
    return out


def documented_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options and arguments a page lists (not --help, not the sub-command selector)."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and a.help != argparse.SUPPRESS
    ]


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    """``command option`` for every option or argument of every command without a help text."""
    missing = []
    for name, sub in commands(parser).items():
        for action in documented_actions(sub):
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    return missing


def _help_text(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        text = text % {**vars(action), "prog": prog}
    return " ".join(text.split())


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "\\|")


def _names(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    metavar = ""
    if action.nargs != 0:
        meta = action.metavar or (
            "{" + ",".join(map(str, action.choices)) + "}" if action.choices else action.dest.upper()
        )
        metavar = f" {meta if isinstance(meta, str) else ' '.join(meta)}"
    return ", ".join(f"`{opt}{metavar}`" for opt in action.option_strings)


def _default(action: argparse.Action) -> str:
    if action.nargs == 0 or action.default in (None, argparse.SUPPRESS) or action.default == []:
        return ""
    return f"`{action.default}`"


def _docstring(module: object) -> str:
    doc = (getattr(module, "__doc__", None) or "").strip()
    return doc.replace("``", "`")


def generate() -> str:
    """The Markdown page for every command: its purpose, usage, and one table row per option."""
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(USAGE_WIDTH)
    try:
        parser, modules = build_parser("*")
        out = [
            "# Command line",
            "",
            "<!-- Generated from the argparse parsers by `python -m deploybench.commands.reference --write`;",
            "     tests/unit/test_cli_reference.py fails when this page and the parsers differ. -->",
            "",
            "`deploybench COMMAND [options]` (or `python -m deploybench COMMAND`). Every command answers",
            "`--help`. Bad input is a one-line message and exit code 2.",
            "",
            "| command | what it does |",
            "|---|---|",
            *(f"| [`{name}`](#deploybench-{name}) | {_cell(text)} |" for name, (_, text) in COMMANDS.items()),
        ]  # fmt: skip
        parser_of = commands(parser)
        for name, sub in parser_of.items():
            top, _, nested = name.partition(" ")
            about = _docstring(modules[top]) if not nested else sub_help(parser_of[top])[nested]
            out += ["", f"{'###' if nested else '##'} deploybench {name}", "", about, "", "```text"]
            out += [sub.format_usage().strip(), "```"]
            if children := subparsers(sub):
                out += [
                    "",
                    "Sub-commands: " + ", ".join(f"[`{c}`](#deploybench-{top}-{c})" for c in children),
                ]
            if rows := documented_actions(sub):
                out += ["", "| option | default | description |", "|---|---|---|"]
                out += [f"| {_names(a)} | {_default(a)} | {_cell(_help_text(a, sub.prog))} |" for a in rows]
        return "\n".join(out).rstrip() + "\n"
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m deploybench.commands.reference", description=__doc__)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"rewrite {PAGE} (run from the repository root)")
    mode.add_argument(
        "--check", action="store_true", help=f"exit 1 if {PAGE} is stale or an option has no help"
    )
    args = p.parse_args(argv)
    text = generate()
    if args.write:
        PAGE.parent.mkdir(parents=True, exist_ok=True)
        PAGE.write_text(text, encoding="utf-8")
        return 0
    problems = [f"option without help: {m}" for m in undocumented(build_parser("*")[0])]
    if not PAGE.is_file() or PAGE.read_text(encoding="utf-8") != text:
        problems.append(
            f"{PAGE} differs from the parsers: run python -m deploybench.commands.reference --write"
        )
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
