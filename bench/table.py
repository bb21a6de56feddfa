"""What every benchmark prints with: the table printer and the progress log (no flags,
no torch: importable anywhere, tests included)."""

import time

from aes_jax.eval.tables import aligned

_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress line with seconds since start, flushed so long runs show they are alive."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


def print_aligned(lines: list[tuple[str, ...]]) -> None:
    """Prints rows of cells as a table: first column left-aligned, a rule under the header."""
    print("\n".join(aligned(lines)), flush=True)
