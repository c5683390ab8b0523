"""The Markdown files outside the docs site (README, CONTRIBUTING) link only to files that exist (the site's
own links are checked by mkdocs --strict: tests/e2e/test_docs_e2e.py)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def relative_links(markdown: str) -> list[str]:
    links = re.findall(r"\]\(([^)\s]+)\)", markdown)
    return [link for link in links if not re.match(r"[a-z]+:", link) and not link.startswith("#")]


def test_readme_and_contributing_link_only_to_files_that_exist() -> None:
    for name in ("README.md", "CONTRIBUTING.md"):
        text = (ROOT / name).read_text(encoding="utf-8")
        links = relative_links(text)
        assert links, name
        missing = [link for link in links if not (ROOT / link.split("#", 1)[0]).exists()]
        assert missing == [], (name, missing)
