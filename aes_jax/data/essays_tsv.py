"""New essays to score: a tab-separated file whose header names at least essay_id,
essay_set and essay, in any order (``launch.score``'s TRM-AES input; the official ASAP
layout qualifies, score columns are ignored).

Lines are decoded and split into records exactly as ``launch.build_dataset`` reads ASAP
files (:mod:`aes_jax.data.tsv_records`): a quote is text unless the whole field is quoted
and closed (``"..."`` with doubled inner quotes, which may span lines: a multi-paragraph
essay); a field that merely opens a quote keeps it, and a field wrapped in quotes whose
inner quotes were never doubled loses the wrapping (both noted).

Tabs inside an essay: when ``essay`` is the header's last column, every field after it
belongs to the essay, so the row's extra fields are joined back with tabs (the essay
text as written). When other columns follow ``essay``, a row with more fields than the
header cannot be split unambiguously and is skipped as ``too many columns``; rows with
fewer fields than the header are fine as long as they reach every required column (an
editor may trim empty trailing columns).

Every data row is either an essay or a counted skip with a ``file:line: detail`` example
(``strict=True`` raises :class:`EssaysFormatError` at the first instead): ``too few
columns``, ``too many columns``, ``bad essay_id`` / ``bad essay_set`` (not an integer),
``empty essay`` (empty or whitespace only), ``untrained prompt`` (an essay_set outside the
caller's ``prompts``), ``duplicate essay_id`` (a repeat of an id read before: the first is
kept, since the scores CSV is keyed by essay_id and two scores for one id could not be
told apart). Blank lines are counted, not rows.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
from collections.abc import Collection
from pathlib import Path

from aes_jax.data.asap import parse_int
from aes_jax.data.read_report import DataFormatError, FileStats, ReadResult, SkipCounter
from aes_jax.data.tsv_records import (AUTO, DecodedLines, LineDecoding, decode_lines,
                                      iter_records, repair_quotes)

__all__ = ["REQUIRED_COLUMNS", "ESSAY_LAST", "FIXED_COLUMNS", "EssaysFormatError",
           "NewEssay", "read_essays_file"]

REQUIRED_COLUMNS = ("essay_id", "essay_set", "essay")
ESSAY_LAST, FIXED_COLUMNS = "essays, essay last", "essays, fixed columns"


class EssaysFormatError(DataFormatError):
    """An essays file that cannot be read; the message names file and line."""


@dataclasses.dataclass(frozen=True)
class NewEssay:
    essay_id: int
    prompt: int
    text: str
    source: str
    line: int                                # 1-based physical line of the row's start
    decoding: LineDecoding = LineDecoding()  # of the row's own physical lines


class _Layout:
    """Where the required columns are, and which field counts a row may have."""

    def __init__(self, header: list[str], where: str):
        names = [h.strip().lower() for h in header]
        missing = [c for c in REQUIRED_COLUMNS if c not in names]
        if missing:
            raise EssaysFormatError(f"{where}: header lacks column(s) {missing}; expected at "
                                    f"least {list(REQUIRED_COLUMNS)} (tab-separated)")
        self.id_col, self.set_col, self.essay_col = (names.index(c) for c in REQUIRED_COLUMNS)
        self.width = len(header)
        self.need = max(self.id_col, self.set_col, self.essay_col) + 1
        self.essay_last = self.essay_col == self.width - 1
        self.name = ESSAY_LAST if self.essay_last else FIXED_COLUMNS

    def acceptable(self, fields: list[str]) -> bool:
        return len(fields) >= self.need and (self.essay_last or len(fields) <= self.width)


class _Rows:
    """Turns one file's records into essays, skipping (counting) the bad ones."""

    def __init__(self, path: Path, layout: _Layout, decoded: DecodedLines, stats: FileStats,
                 skips: SkipCounter, prompts: Collection[int] | None):
        self.path, self.layout, self.decoded = path, layout, decoded
        self.stats, self.skips = stats, skips
        self.prompts = None if prompts is None else sorted(set(prompts))
        self.notes: collections.Counter = collections.Counter()
        self.seen: dict[int, str] = {}

    def _skip(self, where: str, reason: str, detail: str) -> None:
        self.skips.skip(where, reason, detail, self.stats)

    def _text(self, fields: list[str], i: int, span: int, tab_split: bool) -> str:
        col = self.layout.essay_col
        if len(fields) > self.layout.width:
            # Extra fields are the essay's own tabs (essay_last only: acceptable() refused
            # them otherwise). On one line take the text as written after the essay
            # column's tab, so quotes the csv parse would have consumed stay.
            raw = (self.decoded.lines[i].split("\t", col)[col] if span == 1
                   else "\t".join(fields[col:]))
            return (repair_quotes(raw, self.notes) if tab_split else raw).strip()
        return (repair_quotes(fields[col], self.notes) if tab_split else fields[col]).strip()

    def row(self, fields: list[str], i: int, span: int, tab_split: bool) -> NewEssay | None:
        where = f"{self.path}:{i + 1}"
        lay = self.layout
        if len(fields) < lay.need:
            return self._skip(where, "too few columns", f"{len(fields)} tab-separated fields, "
                              f"expected at least {lay.need}")
        if not lay.acceptable(fields):
            return self._skip(where, "too many columns", f"{len(fields)} tab-separated "
                              f"fields, expected at most {lay.width}: a tab inside the essay "
                              "can only be kept when essay is the header's last column")
        essay_id = parse_int(fields[lay.id_col])
        if essay_id is None:
            return self._skip(where, "bad essay_id",
                              f"{fields[lay.id_col]!r} is not an integer")
        prompt = parse_int(fields[lay.set_col])
        if prompt is None:
            return self._skip(where, "bad essay_set", f"essay {essay_id}: "
                              f"{fields[lay.set_col]!r} is not an integer")
        text = self._text(fields, i, span, tab_split)
        if not text:
            return self._skip(where, "empty essay", f"essay {essay_id} has no text")
        if self.prompts is not None and prompt not in self.prompts:
            return self._skip(where, "untrained prompt", f"essay {essay_id}: prompt {prompt} "
                              f"is not one of the model's prompts {self.prompts}")
        if essay_id in self.seen:
            return self._skip(where, "duplicate essay_id", f"essay {essay_id} was already "
                              f"read at {self.seen[essay_id]}")
        self.seen[essay_id] = where
        return NewEssay(essay_id=essay_id, prompt=prompt, text=text, source=str(self.path),
                        line=i + 1, decoding=self.decoded.counts(i, i + span))


def read_essays_file(path: str | os.PathLike, *, strict: bool = False, encoding: str = AUTO,
                     prompts: Collection[int] | None = None) -> ReadResult:
    """The essays of one file (see the module docstring), with its ``FileStats``, skips and
    notes. ``prompts``: the essay_sets the caller can score (None: any integer);
    ``encoding``: ``"auto"`` (UTF-8, cp1252 for bytes that are not UTF-8) or a codec name.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such essays file: {path}") from None
    decoded = decode_lines(data, encoding)
    stats = FileStats(path=str(path), sha256=hashlib.sha256(data).hexdigest(), format="")
    stats.set_decoding(decoded.encoding, decoded.counts())
    lines = decoded.lines
    if not lines or not lines[0].strip():
        raise EssaysFormatError(f"{path}:1: empty file or blank first line; expected a header "
                                f"with {', '.join(REQUIRED_COLUMNS)} (tab-separated)")
    layout = _Layout(lines[0].split("\t"), f"{path}:1")
    stats.format = layout.name
    skips = SkipCounter(strict, EssaysFormatError)
    rows = _Rows(path, layout, decoded, stats, skips, prompts)
    essays: list[NewEssay] = []
    for i, fields, span, tab_split in iter_records(lines, layout.acceptable,
                                                   continuation_first=layout.essay_last):
        if fields is None:
            stats.blank_lines += 1
            continue
        stats.rows += 1
        essay = rows.row(fields, i, span, tab_split)
        if essay is not None:
            essays.append(essay)
    stats.essays = len(essays)
    return ReadResult(essays=essays, files=[stats], skipped=skips.counts,
                      skip_examples=skips.examples, notes=rows.notes)
