"""The GitHub workflows are the example users copy: static checks of the rules zizmor enforces (the linter
itself runs in tests/e2e/test_workflow_lint_e2e.py) and of the CPU torch on hosted runners."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$")


def run_blocks(text: str) -> list[str]:
    """The text of every `run:` value (one line, or a block scalar: the lines indented deeper)."""
    blocks: list[str] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)(?:-\s+)?run:\s*(.*)$", line)
        if not m:
            continue
        indent, rest = len(m.group(1)), m.group(2)
        body = [rest]
        if rest.startswith(("|", ">")):
            for nxt in lines[i + 1 :]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                body.append(nxt)
        blocks.append("\n".join(body))
    return blocks


def test_there_are_workflows() -> None:
    assert {p.name for p in WORKFLOWS} >= {"latency-gate.yml", "tests.yml"}


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_commits(workflow: Path) -> None:
    uses = [m.groups() for m in map(USES.match, workflow.read_text().splitlines()) if m]
    assert uses
    for ref, comment in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref), f"{workflow.name}: {ref} is not a commit"
        assert re.fullmatch(r"\s*# v\d+(\.\d+)*", comment), f"{workflow.name}: {ref} lacks its # vX.Y comment"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_checkouts_keep_no_credentials_and_no_template_reaches_a_script(workflow: Path) -> None:
    text = workflow.read_text()
    checkouts = text.count("uses: actions/checkout@")
    assert checkouts and text.count("persist-credentials: false") == checkouts
    for block in run_blocks(text):
        assert "${{" not in block, f"{workflow.name}: a template expression inside run: {block!r}"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_torch_comes_from_the_cpu_index_on_hosted_runners(workflow: Path) -> None:
    """Every workflow installs through nox (directly or via .ci/run); the noxfile takes torch from
    TORCH_INDEX_URL when it is set, and the workflow sets it to PyTorch's CPU wheel index."""
    text = workflow.read_text()
    assert "nox" in text or ".ci/run" in text
    assert re.search(rf"^env:\n  TORCH_INDEX_URL: {re.escape(CPU_INDEX)}$", text, re.M), workflow.name
    nox = (ROOT / "noxfile.py").read_text()
    assert 'os.environ.get("TORCH_INDEX_URL", "")' in nox and '"--index-url", TORCH_INDEX_URL' in nox


def test_run_blocks_finds_what_the_linter_would_flag() -> None:
    text = 'steps:\n  - run: |\n      echo "${{ github.base_ref }}"\n  - name: x\n    run: echo ok\n'
    assert run_blocks(text) == ['|\n      echo "${{ github.base_ref }}"', "echo ok"]
