"""docs/benchmarks.md is written by several benchmarks, each owning one section between
its own markers; rerunning one replaces its section and leaves the others alone."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(name: str, text: str, doc: Path = DOC) -> None:
    """Put ``text`` (which starts and ends with ``markers(name)``) in place of the
    section of that name, or append it."""
    start, end = markers(name)
    current = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if start in current and end in current:
        before, rest = current.split(start, 1)
        updated = before + text + rest.split(end, 1)[1]
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    doc.write_text(updated)
