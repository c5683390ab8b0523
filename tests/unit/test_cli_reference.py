"""The CLI reference page (docs/reference/cli.md) is generated from the argparse parsers: it fails here when
the committed page and the parsers differ, or when an option has no help text."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from deploybench.commands import cli, reference

ROOT = Path(__file__).resolve().parents[2]


def test_the_committed_page_is_the_generated_one() -> None:
    committed = (ROOT / reference.PAGE).read_text(encoding="utf-8")
    assert committed == reference.generate(), (
        "docs/reference/cli.md is stale: run `python -m deploybench.commands.reference --write`"
    )


def test_every_option_of_every_command_has_help_text() -> None:
    parser, _ = cli.build_parser("*")
    assert reference.undocumented(parser) == []
    page = reference.generate()
    for name, sub in reference.commands(parser).items():
        assert f"deploybench {name}\n" in page
        for action in reference.documented_actions(sub):
            for option in action.option_strings:
                assert f"`{option}" in page, (name, option)


def test_an_option_added_without_help_or_without_regenerating_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from deploybench.commands import load

    original = load.add_arguments

    def with_extra(parser: argparse.ArgumentParser) -> None:
        original(parser)
        parser.add_argument("--secret-knob", type=int, default=3)  # deliberately undocumented

    monkeypatch.setattr(load, "add_arguments", with_extra)
    parser, _ = cli.build_parser("*")
    assert reference.undocumented(parser) == ["load --secret-knob"]
    page = reference.generate()
    assert "`--secret-knob SECRET_KNOB` | `3` |" in page
    assert page != (ROOT / reference.PAGE).read_text(encoding="utf-8")


def test_check_mode_reports_a_stale_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert reference.main(["--check"]) == 1
    assert "differs from the parsers" in capsys.readouterr().err
    assert reference.main(["--write"]) == 0
    assert reference.main(["--check"]) == 0
    assert (tmp_path / reference.PAGE).read_text(encoding="utf-8") == reference.generate()


def test_generated_tables_escape_markdown_and_html() -> None:
    parser = argparse.ArgumentParser(prog="x")
    parser.add_argument(
        "--pick", choices=["a", "b"], help="a | b, e.g. <stamp>; default %(default)s", default="a"
    )
    (action,) = [a for a in parser._actions if a.dest == "pick"]
    assert reference._names(action) == "`--pick {a,b}`"
    assert reference._cell(reference._help_text(action, "x")) == "a \\| b, e.g. &lt;stamp&gt;; default a"
