"""What every benchmark prints with: the table printer and the progress log (no flags,
no torch: importable anywhere, tests included)."""

import time

from aes_jax.eval.tables import aligned

_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress line with seconds since start, flushed so long runs show they are alive."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


def require_same_loss(name: str, abs_diff: float, atol: float) -> None:
    """Refuses to report a speed ratio for two sides that did not compute the same thing."""
    if not abs_diff <= atol:
        raise AssertionError(f"{name}: step-1 losses differ by {abs_diff:.3g} > "
                             f"--loss_atol={atol}: not the same computation")


def print_aligned(lines: list[tuple[str, ...]]) -> None:
    """Prints rows of cells as a table: first column left-aligned, a rule under the header."""
    print("\n".join(aligned(lines)), flush=True)
