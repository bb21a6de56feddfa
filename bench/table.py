"""The one table printer every benchmark uses (no flags, no torch: importable anywhere)."""


def print_aligned(lines: list[tuple[str, ...]]) -> None:
    """Prints rows of cells as a table: first column left-aligned, a rule under the header."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for k, line in enumerate(lines):
        print("  ".join(cell.rjust(w) if i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths))), flush=True)
        if k == 0:
            print("  ".join("-" * w for w in widths), flush=True)
