"""What a corpus reader reports besides its essays, shared by the ASAP and ELLIPSE readers.

A read never drops a row silently: :class:`SkipCounter` counts each bad row under a reason
and keeps a few ``file:line: detail`` examples (or raises the reader's
:class:`DataFormatError` subclass when ``strict``); :class:`FileStats` describes each file
read, and :class:`ReadResult` carries the essays together with all of that.
:func:`refuse_existing` is the guard every dataset builder runs before writing.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["DataFormatError", "FileStats", "ReadResult", "SkipCounter", "refuse_existing"]

EXAMPLES_PER_REASON = 5


class DataFormatError(ValueError):
    """A file that cannot be read as corpus data; the message names file and line."""


@dataclasses.dataclass
class FileStats:
    path: str
    sha256: str
    format: str                  # the layout detected from the header
    rows: int = 0                # data rows seen (after the header, blank lines excluded)
    essays: int = 0              # rows read into essays
    blank_lines: int = 0
    lines_with_replacement: int = 0  # lines whose undecodable bytes became U+FFFD
    replacement_chars: int = 0
    split: str | None = None
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ReadResult:
    essays: list[Any]              # asap.Essay or ell.EllEssay, in file order
    files: list[FileStats]
    skipped: collections.Counter   # reason -> rows skipped
    skip_examples: list[str]       # "file:line: detail", the first few of each reason
    # Things kept but worth reporting (e.g. ignored values, repaired quotes).
    notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def replacement_chars(self) -> int:
        return sum(f.replacement_chars for f in self.files)

    @property
    def layouts(self) -> list[str]:
        return sorted({f.format for f in self.files})


class SkipCounter:
    """Skip bookkeeping for one read: counts per reason, examples, or raise when strict.

    ``error`` is the reader's own format error, so a strict read fails with the class its
    callers catch.
    """

    def __init__(self, strict: bool, error: type[ValueError] = DataFormatError):
        self.strict = strict
        self.error = error
        self.counts: collections.Counter = collections.Counter()
        self.examples: list[str] = []

    def skip(self, where: str, reason: str, detail: str, stats: FileStats) -> None:
        message = f"{where}: {reason}: {detail}"
        if self.strict:
            raise self.error(message + " (strict=True; without it the row is skipped "
                             "and counted)")
        self.counts[reason] += 1
        stats.skipped[reason] = stats.skipped.get(reason, 0) + 1
        if self.counts[reason] <= EXAMPLES_PER_REASON:
            self.examples.append(message)


def refuse_existing(output_dir: str | os.PathLike, overwrite: bool,
                    names: Sequence[str] = ("manifest.json",)) -> None:
    """FileExistsError when ``output_dir`` holds any of a dataset's files ``names`` and not
    ``overwrite``. Builders call it before the slow part, so a refusal costs nothing."""
    output_dir = Path(output_dir)
    existing = [n for n in names if (output_dir / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds a dataset ({existing[0]}); pass "
                              "overwrite=True (--overwrite) to replace it")
