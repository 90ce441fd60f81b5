"""The specification in ``docs/specification.md`` stays in step with the code.

* every registered check has a section with an explicit anchor (``docs/specification.md#s4``),
  and every check anchor in the document belongs to a registered check;
* every declaration a target can make is documented;
* every link into the specification's anchors, anywhere in the repository, resolves;
* the repository does not point outside itself (the design notes and seed documents it started
  from are not part of it).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from sft_conformance.checks import CHECKS
from sft_conformance.target import Declared

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "docs" / "specification.md"

#: fields of Declared that the suite derives from the target object rather than being declared
DERIVED = {"has_loss", "has_forward", "description"}
#: declarations the protocol defines that Declared does not carry yet
PENDING = {"tokenization"}

#: built at run time so that this file does not match its own search
OUTSIDE_POINTERS = ("../" + "shared", "DESIGN" + ".md")
SCANNED_SUFFIXES = (".py", ".md", ".toml", ".ini")


@pytest.fixture(scope="module")
def spec() -> str:
    return SPEC.read_text(encoding="utf-8")


def anchors(text: str) -> set[str]:
    return set(re.findall(r'<a id="([^"]+)"></a>', text))


def test_every_registered_check_has_an_anchored_section(spec):
    have = anchors(spec)
    missing = [c.id for c in CHECKS if c.id.lower() not in have]
    assert not missing, f"docs/specification.md has no <a id=...> section for {missing}"


def test_no_stale_check_sections(spec):
    registered = {c.id.lower() for c in CHECKS}
    check_anchors = {a for a in anchors(spec) if re.fullmatch(r"s\d+|s7dp", a)}
    stale = sorted(check_anchors - registered)
    assert not stale, f"docs/specification.md has sections for unregistered checks: {stale}"


def test_each_check_anchor_sits_right_above_its_heading(spec):
    for check in CHECKS:
        m = re.search(rf'<a id="{check.id.lower()}"></a>\s*\n#+ {check.id}\.', spec)
        assert m, f"the anchor of {check.id} is not directly followed by its '### {check.id}.' " \
                  "heading"


def test_every_declaration_is_documented(spec):
    fields = {f.name for f in dataclasses.fields(Declared)} - DERIVED
    undocumented = sorted(n for n in fields | PENDING if f"`{n}`" not in spec)
    assert not undocumented, f"declarations not mentioned in docs/specification.md: " \
                             f"{undocumented}"


def test_version_line(spec):
    assert re.search(r"^Specification version \d+, for sft-conformance \d+\.\d+", spec, re.M)


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()
        files = [ROOT / f for f in out]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist)
        files = [p for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    files.append(SPEC)  # also before it is committed
    return sorted({p for p in files if p.suffix in SCANNED_SUFFIXES and p.exists()
                   and p.relative_to(ROOT).parts[0] != "reports"})


def test_cited_spec_anchors_exist(spec):
    have = anchors(spec)
    broken = []
    for path in tracked_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for anchor in re.findall(r"specification\.md#([A-Za-z0-9_-]+)", text):
            if anchor not in have:
                broken.append(f"{path.relative_to(ROOT)}: #{anchor}")
    assert not broken, "links to anchors docs/specification.md does not have:\n" + \
                       "\n".join(sorted(set(broken)))


def outside_pointers(paths) -> list[str]:
    hits = []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace")
                                 .splitlines(), 1):
            if any(p in line for p in OUTSIDE_POINTERS):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    return hits


def test_docs_and_tests_do_not_point_outside_the_repository():
    paths = [p for p in tracked_files() if p.relative_to(ROOT).parts[0] in ("docs", "tests")]
    hits = outside_pointers(paths)
    assert not hits, "the specification and the tests must not point outside the repository:\n" \
                     + "\n".join(hits)


def test_repository_does_not_point_outside_itself():
    hits = outside_pointers(tracked_files())
    assert not hits, "files that point outside the repository (cite docs/specification.md " \
                     "instead):\n" + "\n".join(hits)


def test_every_check_docstring_cites_its_section():
    from sft_conformance.checks import CHECKS

    for check in CHECKS:
        assert check.spec_link in (check.func.__doc__ or ""), (check.id, check.func.__doc__)
