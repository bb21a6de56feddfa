"""The one table printer every benchmark uses (no flags, no torch: importable anywhere)."""

from aes_jax.eval.tables import aligned


def print_aligned(lines: list[tuple[str, ...]]) -> None:
    """Prints rows of cells as a table: first column left-aligned, a rule under the header."""
    print("\n".join(aligned(lines)), flush=True)
