"""Documents cite only the repository: no file names a document outside it, every reference to a section of
docs/ALGORITHM.md names a heading that exists, and the worked check in docs/ALGORITHM.md runs as printed."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALGORITHM = REPO / "docs" / "ALGORITHM.md"
# Where users and readers look: shipped code, documents, benchmark and helper scripts.
PUBLISHED = [REPO / "src", REPO / "docs", REPO / "benchmarks", REPO / "scripts", REPO / "README.md"]
# Strings that point at documents outside the repository (the background notes kept next to it).
OUTSIDE = ("../shared", "shared/docs", "wrc-spec", "spec §")
# ... and prose that leans on it ("the spec's formula", "the WRC spec states"); code names such as find_spec or
# timespec do not match.
OUTSIDE_PROSE = re.compile(r"\b(?:the|WRC|a) spec\b|\bspec's\b|\bspec (?:recipe|transcription)\b", re.I)
# A section reference: "ALGORITHM.md#anchor" or "ALGORITHM.md §Heading text".
ANCHOR_REF = re.compile(r"ALGORITHM\.md#([\w-]+)")
SECTION_REF = re.compile(r"ALGORITHM\.md §\s*([^\n]+)")


def _text_files(roots):
    for root in roots:
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:  # weights, pictures
                continue


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def algorithm_headings() -> list[str]:
    text = ALGORITHM.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # '#' comments inside code blocks are not headings
    return [m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+)$", text, flags=re.M)]


def test_github_anchor_rule():
    assert github_anchor("The exact solver (`wrc-exact`)") == "the-exact-solver-wrc-exact"
    assert github_anchor("The authors' closed form (`wrc-reference`)") == "the-authors-closed-form-wrc-reference"
    assert github_anchor("Constant weights: the closed form by FFT") == "constant-weights-the-closed-form-by-fft"


def _outside_citations(roots) -> list[str]:
    found = []
    for path, text in _text_files(roots):
        hits = [(text.find(s), s) for s in OUTSIDE if s in text]
        hits += [(m.start(), m.group(0)) for m in OUTSIDE_PROSE.finditer(text)]
        found += [f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:"
                  f"{text[:pos].count(chr(10)) + 1}: {s!r}" for pos, s in sorted(hits)]
    return found


def test_published_files_cite_no_document_outside_the_repository():
    offending = _outside_citations(PUBLISHED)
    assert not offending, "cites a document outside the repository (cite docs/ALGORITHM.md or another "\
        "document in the repository instead):\n" + "\n".join(offending)


def test_the_checker_catches_outside_citations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('"""As in spec §2 (see ../shared/docs/wrc-spec.md)."""\n# the spec\'s formula, the WRC spec\n')
    found = [line.split(": ", 1)[1] for line in _outside_citations([tmp_path])]
    assert sorted(found) == sorted([*map(repr, OUTSIDE), "'the spec'", "'WRC spec'"]), found
    fine = tmp_path / "fine.py"
    bad.unlink()
    fine.write_text("spec = importlib.util.find_spec(name)  # timespec='seconds'; spec_ms\n")
    assert _outside_citations([tmp_path]) == []


def test_algorithm_section_references_name_existing_headings():
    headings = algorithm_headings()
    anchors = {github_anchor(h) for h in headings}
    assert "the-exact-solver-wrc-exact" in anchors and "a-worked-check" in anchors
    roots = [*PUBLISHED, REPO / "tests", REPO / "hubconf.py"]
    seen, broken = 0, []
    for path, text in _text_files(roots):
        if path == Path(__file__).resolve():
            continue
        refs = [(m.group(1), "#") for m in ANCHOR_REF.finditer(text)]
        refs += [(m.group(1), "§") for m in SECTION_REF.finditer(text)]
        if path == ALGORITHM:  # links inside the page itself: (#anchor)
            refs += [(m.group(1), "#") for m in re.finditer(r"\]\(#([\w-]+)\)", text)]
        for ref, kind in refs:
            seen += 1
            ok = ref in anchors if kind == "#" else any(ref.startswith(h) for h in headings)
            if not ok:
                broken.append(f"{path.relative_to(REPO)}: ALGORITHM.md{kind}{ref}")
    assert seen > 0
    assert not broken, "references to sections of docs/ALGORITHM.md that do not exist:\n" + "\n".join(broken)


@pytest.mark.usefixtures("one_thread")
def test_algorithm_worked_check_runs(capsys):
    text = ALGORITHM.read_text(encoding="utf-8")
    section = text.split("## A worked check", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    exec(compile(code, str(ALGORITHM), "exec"), {"__name__": "algorithm_worked_check"})  # asserts inside
    # the page quotes the printed line; the closed form's distance is compared (the PCG error is rounding)
    printed = capsys.readouterr().out
    quoted = re.search(r"It prints `(.*?)`", section, flags=re.S).group(1)
    aligned = re.compile(r"aligned: ([0-9.]+)")
    assert aligned.search(printed).group(1) == aligned.search(quoted).group(1), (printed, quoted)
