"""Every reference to a section of the project's documents resolves (issue 23, item 8).

The code, tests, scripts, bench, configs and documents cite sections in these forms:
    architecture.md, "Heading"          a heading of the file, or a paragraph's bold run-in title (`**Title.**`);
                                        a trailing parenthetical may be left off ("The memory update" names
                                        `## The memory update (ops/memory.py)`); several: "A" and "B"
    results.md §N                       a numbered section `## N. ...` of docs/results.md
    gap N of architecture.md            item N of architecture.md's "Decisions on the paper's gaps"
    (bare §N inside docs/results.md)    its own section N
The documents must stand alone: a cited file must be one of the project's own (the papers' sections, e.g.
"Nested Learning §8", are the papers'); numbered invariants and numbered architecture sections do not exist.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITED = {"architecture.md": ROOT / "docs" / "architecture.md", "results.md": ROOT / "docs" / "results.md",
         "performance.md": ROOT / "docs" / "performance.md", "README.md": ROOT / "README.md"}
# Documents of the workspace around the project, which a user of the package does not have.
FOREIGN = ("anchors.md", "style.md")
# A bare "§" is the papers' when one of these names stands just before it.
PAPERS = ("Nested Learning", "Titans", "paper")

GAPS = "Decisions on the paper's gaps"
QUOTED = r'(?:"[^"\n]+"|\'[^\'\n]+\')'
REF = re.compile(
    r"(?P<file>\b[\w-]+\.md)`?"
    r"(?:(?P<heads>,\s*" + QUOTED + r"(?:\s*(?:,|and|or)\s*" + QUOTED + r")*)"
    r"|,?\s*(?P<secs>§\s*\w+(?:\.\w+)?(?:(?:,\s*|\s*(?:and|or|-)\s*)§\s*\w+(?:\.\w+)?)*))")
GAP_REF = re.compile(r"\bgap (?P<num>\d+) of `?(?:docs/)?architecture\.md")
SECTION = re.compile(r"§\s*(\w+(?:\.\w+)?)")


def _sources() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "configs").glob("*.yaml"))]
    for folder in ("hope", "tests", "scripts", "bench"):
        files += sorted(p for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".sh") and p.is_file())
    return [p for p in files if p != Path(__file__).resolve()]  # this file's slips are on purpose


def _flat(text: str) -> str:
    """One line: a reference may wrap over comment or docstring lines."""
    return re.sub(r"\s*\n[ \t]*(?:#+[ \t]*)?", " ", text)


def _plain(title: str) -> str:
    return title.replace("`", "").strip().rstrip(".:").strip()


def _names(title: str) -> set[str]:
    """A title, and the title without its trailing parenthetical."""
    title = _plain(title)
    return {title, re.sub(r"\s*\([^()]*\)$", "", title)}


def anchors(path: Path) -> tuple[set[str], set[str]]:
    """(names a reference may quote, section numbers) of one document."""
    names, numbers = set(), set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code:
            continue
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            title = heading.group(1)
            number = re.match(r"(\d+(?:\.\d+)*)\.?\s+(.*)", title)
            if number:
                numbers.add(number.group(1))
                title = number.group(2)
            names |= _names(title)
        bold = re.match(r"\s*(?:[-*]|\d+\.)?\s*\*\*(.+?)\*\*", line)
        if bold:
            names |= _names(bold.group(1))
    return names, numbers


def gap_numbers() -> set[str]:
    text = CITED["architecture.md"].read_text(encoding="utf-8")
    section = text.split(f"## {GAPS}", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^(\d+)\. ", section, re.M))


def dangling_references() -> list[str]:
    known = {name: anchors(path) for name, path in CITED.items()}
    gaps = gap_numbers()
    bad = []
    for path in _sources():
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        text = _flat(path.read_text(encoding="utf-8"))
        covered = set()
        for ref in REF.finditer(text):
            name = ref.group("file")
            if not (ref.group("heads") or ref.group("secs")):
                continue
            covered.update(range(ref.start(), ref.end()))
            if name not in known:
                bad.append(f"{where}: {ref.group(0)!r} cites a file that is not one of the project's documents")
                continue
            names, numbers = known[name]
            if ref.group("heads"):
                for quoted in re.findall(QUOTED, ref.group("heads")):
                    if _plain(quoted[1:-1]) not in names:
                        bad.append(f"{where}: {ref.group(0)!r}: no heading {quoted} in {name}")
            for number in SECTION.findall(ref.group("secs") or ""):
                if number not in numbers:
                    bad.append(f"{where}: {ref.group(0)!r}: {name} has no section {number}")
        for ref in GAP_REF.finditer(text):
            if ref.group("num") not in gaps:
                bad.append(f"{where}: {ref.group(0)!r}: architecture.md's {GAPS!r} has no item {ref.group('num')}")
        for mark in re.finditer("§", text):
            if mark.start() in covered:
                continue
            if path == CITED["results.md"]:
                number = SECTION.match(text, mark.start())
                if number and number.group(1) in known["results.md"][1]:
                    continue
            elif any(paper in text[max(0, mark.start() - 40):mark.start()] for paper in PAPERS):
                continue
            context = text[max(0, mark.start() - 40):mark.end() + 10]
            bad.append(f"{where}: a section mark that names no project document: {context!r}")
        for number in re.finditer(r"\binvariants? \d+", text):
            bad.append(f"{where}: {number.group(0)!r}: docs/architecture.md's invariants are not numbered "
                       "(cite \"Invariants under test\")")
        for foreign in FOREIGN:
            if any(m.start() not in covered for m in re.finditer(rf"(?<![\w/.-]){re.escape(foreign)}", text)):
                bad.append(f"{where}: cites {foreign}, which is not one of the project's documents")
    return bad


def test_every_reference_resolves():
    bad = dangling_references()
    assert not bad, "\n".join(bad)


def test_the_checker_catches_dangling_references(tmp_path, monkeypatch):
    """The scan is not vacuous: it finds the project's real references, and each kind of slip is reported."""
    names, numbers = anchors(CITED["architecture.md"])
    assert {"Execution on accelerators", "Invariants under test", "The memory update", "Episodic bank"} <= names
    assert {"1", "2"} <= anchors(CITED["results.md"])[1]
    assert {"1", "2", "4"} <= gap_numbers()
    found = [m.group(0) for p in _sources() for m in REF.finditer(_flat(p.read_text(encoding="utf-8")))]
    assert any('"Execution on accelerators"' in f for f in found) and any("§1" in f for f in found)

    sample = tmp_path / "sample.py"
    sample.write_text('"""See architecture.md, "No such heading" and\n    results.md §99; architecture.md §3b;\n'
                      'invariant 9; gap 42 of architecture.md; (anchors.md, "Associative recall")."""\n'
                      '# fine: architecture.md, "Execution on\n# accelerators"; results.md §1; Nested Learning §8\n')
    monkeypatch.setattr(sys.modules[__name__], "_sources", lambda: [sample])
    bad = dangling_references()
    text = "\n".join(bad)
    for slip in ('"No such heading"', "no section 99", "no section 3b", "'invariant 9'", "no item 42",
                 "anchors.md"):
        assert slip in text, (slip, text)
    assert "accelerators" not in text and "section 1:" not in text and "Nested" not in text
    assert len(bad) == 6, text
