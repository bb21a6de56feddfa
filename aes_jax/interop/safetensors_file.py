"""Opening a .safetensors file with an error that names it: the library's own message
("incomplete metadata", "header too large") never says which file was broken."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from safetensors import SafetensorError, safe_open


class SafetensorsFileError(ValueError):
    """A .safetensors file that cannot be read (truncated, not safetensors)."""


@contextlib.contextmanager
def open_safetensors(path: str | Path) -> Iterator:
    """`safe_open(path, framework="numpy")`, with the file named in any read error."""
    try:
        handle = safe_open(str(path), framework="numpy")
    except SafetensorError as e:
        raise SafetensorsFileError(f"{path}: not a readable safetensors file ({e}); is it "
                                   "truncated? Copy or export it again") from None
    with handle as f:
        try:
            yield f
        except SafetensorError as e:
            raise SafetensorsFileError(f"{path}: cannot read a tensor ({e}); is the file "
                                       "truncated? Copy or export it again") from None
