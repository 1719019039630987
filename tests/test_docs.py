"""Every design doc the code cites exists in the repository, with the section it names.

Citations take the forms `docs/NAME.md`, `docs/NAME.md, "Section heading"` and
`docs/ARCHITECTURE.md, rule N`; a bare `RECIPES.md` (a brief outside the repository) is an error.
Markdown links between the docs must resolve too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("cmhash", "zoo", "export", "runtime", "tests", "bench", "docs", "model_cards")
TOP_FILES = ("README.md", "RESULTS.md", "BENCHMARKS.md", "RELIABILITY.md", "Makefile", "pyproject.toml")
DOC_NAMES = "ARCHITECTURE|RECIPES|PLATFORM-NOTES|FORMATS"

CITATION = re.compile(r'docs/([\w/.-]+?\.md)(?:, (?:"((?:[^"\\]|\\.)+)"|\\"(.+?)\\"|rule (\d+)))?')
BARE = re.compile(rf"(?<![/\w-])({DOC_NAMES})\.md")
LINK = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")


def _texts() -> list[tuple[Path, str]]:
    files = [ROOT / name for name in TOP_FILES if (ROOT / name).is_file()]
    for top in SOURCES:
        files += [p for p in (ROOT / top).rglob("*") if p.suffix in {".py", ".md", ".j2", ".txt"}
                  and "__pycache__" not in p.parts and "pretrained" not in p.parts]
    return [(p, p.read_text(encoding="utf-8")) for p in files if p.is_file() and p != Path(__file__)]


def _headings(doc: Path) -> set[str]:
    return {re.sub(r"[`*]", "", m.group(1)).strip() for m in re.finditer(r"^#+\s+(.+)$", doc.read_text(), re.M)}


def _rules(doc: Path) -> set[int]:
    """The numbers of the list items under the heading "The rules"."""
    text = doc.read_text()
    start = re.search(r"^#+\s+The rules\s*$", text, re.M)
    assert start, f"{doc} has no heading 'The rules'"
    section = re.split(r"^#+\s", text[start.end():], maxsplit=1, flags=re.M)[0]
    return {int(n) for n in re.findall(r"^(\d+)\.\s", section, re.M)}


CITATIONS = [(path, m) for path, text in _texts() for m in CITATION.finditer(text)]


def test_the_code_cites_the_design_docs():
    cited = {m.group(1) for _, m in CITATIONS}
    assert {"ARCHITECTURE.md", "RECIPES.md", "PLATFORM-NOTES.md", "FORMATS.md"} <= cited


def test_every_cited_doc_and_section_exists():
    problems = []
    for path, m in CITATIONS:
        doc = ROOT / "docs" / m.group(1)
        where = f"{path.relative_to(ROOT)}: {m.group(0)}"
        if not doc.is_file():
            problems.append(f"{where}: no such file")
            continue
        heading = m.group(2) or m.group(3)
        if heading and heading.replace('\\"', '"') not in _headings(doc):
            problems.append(f"{where}: no heading {heading!r} in {doc.name}")
        if m.group(4) and int(m.group(4)) not in _rules(doc):
            problems.append(f"{where}: {doc.name} has no rule {m.group(4)}")
    assert not problems, "\n".join(problems)


def test_no_citation_of_a_doc_outside_the_repository():
    bare = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p, text in _texts() for m in BARE.finditer(text)]
    assert not bare, "cite docs/NAME.md, which is in the repository:\n" + "\n".join(bare)


@pytest.mark.parametrize("doc", sorted((ROOT / "docs").rglob("*.md")), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_between_docs_resolve(doc):
    broken = [link for link in LINK.findall(doc.read_text()) if not (doc.parent / link).is_file()]
    assert not broken, f"{doc.name} links to missing files: {broken}"
