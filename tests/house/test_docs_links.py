"""Every relative link of README.md and docs/*.md resolves: the file exists and a #fragment names a heading there;
every script or test the pages name in backticks (`tools/eval/evaluate.py`, `tests/house/test_layers.py`) exists.

The documentation is split over topic pages that link to each other; a moved section or a renamed heading
otherwise leaves links that lead nowhere, which nobody notices until a newcomer follows one. The same goes for a
command to run after tools/ or tests/ was reorganised.
"""

from __future__ import annotations

import re
from pathlib import Path

from support import ROOT

LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE = re.compile(r"`([^`\n]+)`")
# A checkout path to a Python file, as it appears in a command or on its own (not a part of a longer path or URL).
SCRIPT = re.compile(r"(?<![\w/.-])((?:tools|tests|device)/[\w./-]*?\.py)(?![\w/])")


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(path: Path) -> list[str]:
    """The page's lines outside fenced code blocks."""
    lines, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def anchors(path: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    for line in _prose(path):
        if not (m := HEADING.match(line)):
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).replace("`", "").lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    broken = []
    for line in _prose(path):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target):
                continue  # https:, mailto: - not ours to check
            file_part, _, fragment = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                broken.append(f"{target}: no such file")
            elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
                broken.append(f"{target}: no heading #{fragment} in {dest.name}")
    return broken


def missing_scripts(path: Path) -> list[str]:
    """The ``tools/``, ``tests/`` and ``device/`` .py paths named in backticks or fenced commands that do not exist."""
    missing, fenced = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        for span in [line] if fenced else CODE.findall(line):
            missing += [name for name in SCRIPT.findall(span) if not (ROOT / name).exists()]
    return missing


def test_anchor_slugs_follow_github() -> None:
    page = ROOT / "docs" / "install-and-pi.md"
    assert "make-pi-check-the-install-proven-on-emulated-arm64" in anchors(page)


def test_every_relative_link_resolves() -> None:
    problems = {p.relative_to(ROOT).as_posix(): b for p in pages() if (b := broken_links(p))}
    assert not problems, problems


def test_the_readme_links_every_topic_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"](docs/{p.name}" not in readme]
    assert not missing, f"README.md does not link these pages: {missing}"


def test_every_named_script_and_test_file_exists() -> None:
    problems = {p.relative_to(ROOT).as_posix(): m for p in pages() if (m := missing_scripts(p))}
    assert not problems, f"the docs name files that are not in the checkout: {problems}"
