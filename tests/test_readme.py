"""The README and docs/ pages: every link into the repository resolves, headings included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*)$", text, re.M)}


def links() -> list[tuple[Path, str]]:
    found = []
    for page in PAGES:
        text = _FENCE.sub("", page.read_text())
        for target in _LINK.findall(text):
            if not re.match(r"^[a-z]+:", target):  # http:, https:, mailto: point elsewhere
                found.append((page, target))
    return found


def test_the_readme_fits_on_a_few_screens() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


def test_the_quick_start_is_two_commands_serve_then_test() -> None:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", quick, re.S)
    assert block is not None
    commands = [ln for ln in block.group(1).splitlines() if ln and not ln.startswith(" ")]
    assert len(commands) == 2, commands
    assert commands[0].startswith("python3 dev.py serve")
    assert commands[1].startswith("python3 dev.py test")
    assert "python3 dev.py test" in (ROOT / ".ci" / "run").read_text()  # CI runs the same


@pytest.mark.parametrize(
    ("page", "target"), links(), ids=lambda v: v.name if isinstance(v, Path) else v
)
def test_links_into_the_repository_resolve(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), f"{page.name}: {target} points at nothing"
    if anchor:
        assert resolved.suffix == ".md", f"{page.name}: {target}: an anchor into a non-page"
        assert anchor in anchors(resolved), f"{page.name}: no heading for #{anchor} in {path}"


#: Files the text tells the reader to write.
WRITTEN_BY_THE_READER = {"deploy/.env"}
_CODE_PATH = re.compile(r"`((?:gateway|tests|bench|deploy|examples)/[\w./-]*)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_files_named_in_the_text_exist(page: Path) -> None:
    """A module map that names moved files misleads more than none."""
    named = set(_CODE_PATH.findall(page.read_text())) - WRITTEN_BY_THE_READER
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"{page.name} names files that do not exist: {missing}"
