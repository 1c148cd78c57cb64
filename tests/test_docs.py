"""Every repository file the code, the profiles and the documents cite exists.

A comment that says "measured: see docs/x.md" is evidence only if a reader of a fresh clone
can open it; a cited file that is git-ignored (bench/results/, where the benchmarks write)
or was moved or renamed rots silently.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITING = [
    *ROOT.glob("*.md"),
    *ROOT.glob("docs/*.md"),
    *ROOT.glob("pipeline/**/*.py"),
    *ROOT.glob("bench/*.py"),
    *ROOT.glob("profiles/*.toml"),
    *(p for p in ROOT.glob("tests/*.py") if p.name != "test_docs.py"),  # not its examples
    ROOT / "Makefile",
    ROOT / "MLproject",
]
# a relative path into one of the repository's folders, ending in a file suffix
CITED = re.compile(
    r"(?<![\w/.])((?:docs|bench|profiles|pipeline|tests|tools)/[\w./-]*\w\."
    r"(?:md|py|toml|jsonl|json|csv|png|yaml|sh))\b"
)


def cited_paths(text: str) -> set[str]:
    return set(CITED.findall(text))


def test_the_pattern_finds_citations():
    text = "see docs/x.md, (pipeline/a/b.py) and bench/results/out.json; not urls/a.md, x.py"
    assert cited_paths(text) == {"docs/x.md", "pipeline/a/b.py", "bench/results/out.json"}


def clone_files() -> set[str] | None:
    """The files a fresh clone would have: tracked or not yet added, never git-ignored (an
    ignored file exists here but not in CI's clone). None outside a git checkout."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {line for line in listed.splitlines() if (ROOT / line).exists()}


def test_every_cited_repository_file_exists():
    files = clone_files()
    found = (lambda path: path in files) if files is not None else (lambda p: (ROOT / p).exists())
    missing = sorted(
        f"{source.relative_to(ROOT)} cites {cited}"
        for source in CITING
        if source.is_file()
        for cited in cited_paths(source.read_text(encoding="utf-8"))
        if not found(cited)
    )
    assert not missing, "\n".join(missing)
