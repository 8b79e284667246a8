"""Writes one benchmark's section of ``docs/benchmarks.md`` between its markers."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(marker: str, text: str) -> None:
    """Replace the ``<!-- {marker}:begin -->`` .. ``end`` block, or append one."""
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    current = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in current:
        head, rest = current.split(begin, 1)
        current = head + block + rest.split(end, 1)[1]
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(current)
