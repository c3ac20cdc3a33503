"""Documentation links: every relative link in README.md, docs/*.md and the notebooks' Markdown
cells points at a file or folder that exists, and docs/README.md indexes every page and notebook."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
EXTERNAL = ("http://", "https://", "mailto:")


def relative_links(markdown: str) -> list[str]:
    """Targets of Markdown links and images outside code, without their #fragment; external
    links and links to a fragment of the same page are left out."""
    text = CODE_SPAN.sub("", FENCE.sub("", markdown))
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t.split("#", 1)[0] for t in targets if not t.startswith(EXTERNAL) and not t.startswith("#")]


def markdown_of(path: Path) -> str:
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text()


def test_the_link_finder_sees_links_and_skips_code():
    text = ("see [a](a.md) and ![img](pics/b.png \"title\"), [web](https://x.org), [here](#top),"
            " [c](c.md#part)\n`[not](code.md)`\n```\n[nor](fenced.md)\n```\n")
    assert relative_links(text) == ["a.md", "pics/b.png", "c.md"]


@pytest.mark.parametrize("path", PAGES + NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = [t for t in relative_links(markdown_of(path)) if not (path.parent / t).exists()]
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"


def test_docs_index_lists_every_page_and_notebook():
    index = ROOT / "docs" / "README.md"
    linked = {(index.parent / t).resolve() for t in relative_links(index.read_text())}
    pages = [p for p in PAGES if p.parent.name == "docs" and p.name != "README.md"]
    missing = [str(p.relative_to(ROOT)) for p in [*pages, *NOTEBOOKS] if p.resolve() not in linked]
    assert not missing, f"docs/README.md does not link to {missing}"
