"""Fixed-width text tables, shared by the reports and the benchmarks."""

from __future__ import annotations

from typing import Sequence


def aligned(lines: Sequence[Sequence[str]]) -> list[str]:
    """Rows of cells -> text lines: first column left-aligned, the rest right-aligned, a
    rule under the header (row 0)."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = ["  ".join(cell.rjust(w) if i else cell.ljust(w)
                     for i, (cell, w) in enumerate(zip(line, widths))) for line in lines]
    return [out[0], "  ".join("-" * w for w in widths), *out[1:]]
