"""ASAP / ASAP++ essays: readers, score ranges and normalisation.

Two input layouts are read, told apart by their header line:

* ``official``: the Kaggle release ``training_set_rel3.tsv`` (28 tab-separated columns,
  essay_id, essay_set, essay, rater1_domain1, ..., domain1_score, ..., rater3_trait6). The
  holistic score is ``domain1_score``; the rater columns are not used.
* ``traits``: the ASAP++ combined layout (robert1ridley/cross-prompt-trait-scoring):
  essay_id, essay_set, essay, score, <trait values>. Its published header is defective for
  prompts 2-6: it lists the trait names of every earlier prompt as well, while each row
  holds only its own prompt's traits. The true trait columns are the prompt's own names,
  which are the *last* names of such a header.

Rows are split into fields by :mod:`aes_jax.data.tsv_records`, which copes with the
published files' unescaped quotes (an essay field read by the plain tab split has its
quotes repaired by ``tsv_records.repair_quotes``) and decodes each line on its own
(``encoding="auto"``: UTF-8, cp1252 for the bytes that are not UTF-8). Each essay
carries the decoding of its own lines (``Essay.decoding``), so a dataset can report the
bytes replaced in the essays it keeps.

Bad rows are never dropped silently: each is counted under a reason (``ReadResult.skipped``)
with a few ``file:line: detail`` examples, or raises :class:`AsapFormatError` naming the
file and line when ``strict=True``. An ``essay_set`` outside the score table always raises.

The tokenised dataset built from these essays is :mod:`aes_jax.data.asap_records`; splits
are :mod:`aes_jax.data.splits`.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aes_jax.data.read_report import DataFormatError, FileStats, ReadResult, SkipCounter
from aes_jax.data.tsv_records import (AUTO, LineDecoding, decode_lines, is_int, iter_records,
                                      repair_quotes)

__all__ = [
    "AsapFormatError",
    "Essay",
    "SCORE_RANGES",
    "TRAIT_NAMES",
    "TRAIT_RANGES",
    "OFFICIAL_COLUMNS",
    "SPLITS",
    "score_range",
    "normalize",
    "denormalize",
    "detect_format",
    "read_tsv",
    "read_asap",
    "expand_inputs",
    "parse_prompt_set",
    "parse_int",
]

SPLITS = ("train", "dev", "test")

# ----------------------------------------------------------------------------- score tables

# Holistic (domain1) range per prompt, from the ASAP essay-set descriptions. Prompt 2's
# domain1 (writing applications) is 1-6; its domain2 (conventions, 1-4) is not used.
SCORE_RANGES: dict[int, tuple[int, int]] = {
    1: (2, 12), 2: (1, 6), 3: (0, 3), 4: (0, 3), 5: (0, 4), 6: (0, 4), 7: (0, 30), 8: (0, 60),
}
_FIVE_TRAITS = ("Content", "Organization", "Word Choice", "Sentence Fluency", "Conventions")
_FOUR_TRAITS = ("Content", "Prompt Adherence", "Language", "Narrativity")
# ASAP++ (Mathias & Bhattacharyya, 2018) trait annotations exist for prompts 1-6 only.
TRAIT_NAMES: dict[int, tuple[str, ...]] = {
    1: _FIVE_TRAITS, 2: _FIVE_TRAITS,
    3: _FOUR_TRAITS, 4: _FOUR_TRAITS, 5: _FOUR_TRAITS, 6: _FOUR_TRAITS,
}
_TRAIT_RANGE = {1: (1, 6), 2: (1, 6), 3: (0, 3), 4: (0, 3), 5: (0, 4), 6: (0, 4)}
TRAIT_RANGES: dict[int, dict[str, tuple[int, int]]] = {
    p: {t: _TRAIT_RANGE[p] for t in names} for p, names in TRAIT_NAMES.items()
}

OFFICIAL_COLUMNS: tuple[str, ...] = (
    "essay_id", "essay_set", "essay",
    "rater1_domain1", "rater2_domain1", "rater3_domain1", "domain1_score",
    "rater1_domain2", "rater2_domain2", "domain2_score",
    *(f"rater{r}_trait{t}" for r in (1, 2, 3) for t in range(1, 7)),
)
_TRAITS_PREFIX = ("essay_id", "essay_set", "essay", "score")
OFFICIAL, TRAITS = "official", "traits"


class AsapFormatError(DataFormatError):
    """A file that cannot be read as ASAP data; the message names file and line."""


def _canonical_trait(prompt: int, trait: str) -> str:
    names = TRAIT_NAMES.get(prompt)
    if not names:
        raise ValueError(f"prompt {prompt} has no ASAP++ trait scores (only prompts "
                         f"{sorted(TRAIT_NAMES)} do)")
    for name in names:
        if name.casefold() == str(trait).strip().casefold():
            return name
    raise ValueError(f"prompt {prompt} has no trait {trait!r}; its traits are {list(names)}")


def score_range(prompt: int, trait: str | None = None) -> tuple[int, int]:
    """Inclusive (low, high) of the holistic score, or of ``trait``, for ``prompt``."""
    prompt = int(prompt)
    if prompt not in SCORE_RANGES:
        raise ValueError(f"prompt {prompt} is not an ASAP prompt (expected 1-8)")
    if trait is None:
        return SCORE_RANGES[prompt]
    name = _canonical_trait(prompt, trait)  # first: it explains a prompt without traits
    return TRAIT_RANGES[prompt][name]


def _bounds(prompt: Any, trait: str | None) -> tuple[np.ndarray, np.ndarray]:
    # Prompts may be an array (a batch mixing prompts), so look the range up per element.
    prompts = np.asarray(prompt)
    if prompts.ndim == 0:
        lo, hi = score_range(int(prompts), trait)
        return np.float64(lo), np.float64(hi)
    pairs = {int(p): score_range(int(p), trait) for p in np.unique(prompts)}
    lo = np.vectorize(lambda p: pairs[int(p)][0], otypes=[np.float64])(prompts)
    hi = np.vectorize(lambda p: pairs[int(p)][1], otypes=[np.float64])(prompts)
    return lo, hi


def _scalar_or_array(x: np.ndarray, cast: Callable[[Any], Any]) -> Any:
    return cast(x) if np.ndim(x) == 0 else x


def normalize(score: Any, prompt: Any, trait: str | None = None) -> Any:
    """Map a raw score on ``prompt``'s (or its ``trait``'s) range linearly onto [0, 1].

    Scalars give a float; arrays (``prompt`` may be an array too) give a float64 array.
    """
    lo, hi = _bounds(prompt, trait)
    out = (np.asarray(score, dtype=np.float64) - lo) / (hi - lo)
    return _scalar_or_array(out, float)


def denormalize(x: Any, prompt: Any, trait: str | None = None, round_: bool = True,
                clip: bool = True) -> Any:
    """Inverse of :func:`normalize`: back to the score scale.

    ``round_=True`` rounds half up to the nearest integer score (int / int64 array) within
    the range, which makes ``denormalize(normalize(s, p), p) == s`` exact for every valid
    integer ``s``; ``round_=False`` returns the float, clipped to the range unless
    ``clip=False`` (the raw value, e.g. for RMSE on the score scale).
    """
    lo, hi = _bounds(prompt, trait)
    value = np.asarray(x, dtype=np.float64) * (hi - lo) + lo
    if clip or round_:
        value = np.clip(value, lo, hi)
    if not round_:
        return _scalar_or_array(value, float)
    # floor(v + 0.5), not np.rint: banker's rounding would send 2.5 to 2 but 3.5 to 4.
    return _scalar_or_array(np.floor(value + 0.5).astype(np.int64), int)


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass(frozen=True)
class Essay:
    essay_id: int
    prompt: int
    text: str
    score: int
    traits: dict[str, int]  # canonical order of TRAIT_NAMES[prompt]; empty when none
    source: str             # file the row came from
    line: int               # 1-based physical line of the row's start
    split: str | None = None  # given by the file name (traits layout train/dev/test.tsv)
    decoding: LineDecoding = LineDecoding()  # of the row's own physical lines


def _split_name(path: Path) -> str | None:
    stem = path.stem.lower()
    return stem if stem in SPLITS else None


def detect_format(header: Sequence[str], where: str = "<header>") -> str:
    """``"official"`` or ``"traits"`` from the header fields; anything else raises."""
    names = [h.strip().lower() for h in header]
    if tuple(names[:7]) == OFFICIAL_COLUMNS[:7]:
        return OFFICIAL
    if tuple(names[:4]) == _TRAITS_PREFIX:
        return TRAITS
    raise AsapFormatError(
        f"{where}: unrecognised header {list(header)[:8]}...: expected the official ASAP "
        f"layout ({', '.join(OFFICIAL_COLUMNS[:7])}, ...) or the ASAP++ traits layout "
        f"({', '.join(_TRAITS_PREFIX)}, <trait names>), tab-separated")


def parse_int(text: str) -> int | None:
    """An integer score; accepts ``"8"`` and ``"8.0"``, refuses ``"7.5"``; None if not one."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value.is_integer() else None


_MISSING = {"", "na", "nan", "none", "null"}


def _prompt_of(fields: list[str], where: str) -> int:
    raw = fields[1].strip() if len(fields) > 1 else ""
    prompt = parse_int(raw)
    if prompt is None or prompt not in SCORE_RANGES:
        raise AsapFormatError(f"{where}: essay_set {raw!r} is not an ASAP prompt: expected an "
                              f"integer in {sorted(SCORE_RANGES)} (the score-range table)")
    return prompt


def _trait_order(header_traits: Sequence[str], prompt: int, where: str) -> tuple[str, ...]:
    """Which of ``prompt``'s traits each trait column holds, in column order.

    The defective headers (prompts 2-6) accumulate earlier prompts' names in front of the
    prompt's own, so the prompt's columns are the header's *last* names. A combined file
    of several prompts carries one header for all, so otherwise accept the prompt's names
    anywhere in the header as a contiguous run. Matching by name, not position, also reads
    files whose trait columns come in another order.
    """
    names = TRAIT_NAMES[prompt]
    folded = [h.strip().casefold() for h in header_traits]
    wanted = sorted(n.casefold() for n in names)
    n = len(names)
    candidates = [folded[len(folded) - n:]] + [folded[k:k + n] for k in range(len(folded) - n + 1)]
    for run in candidates:
        if len(run) == n and sorted(run) == wanted:
            return tuple(_canonical_trait(prompt, t) for t in run)
    raise AsapFormatError(f"{where}: the header's trait names {list(header_traits)} do not "
                          f"name prompt {prompt}'s traits {list(names)}")


class _FileReader:
    """Reads one file's rows into essays; holds what every row needs (header, layout)."""

    def __init__(self, path: Path, header: list[str], fmt: str, stats: FileStats,
                 skips: SkipCounter, notes: collections.Counter):
        self.path, self.header, self.fmt = path, header, fmt
        self.stats, self.skips, self.notes = stats, skips, notes
        lowered = [h.strip().lower() for h in header]
        if fmt == OFFICIAL:
            self.score_col = lowered.index("domain1_score")
            self.min_cols = self.score_col + 1
        else:
            self.score_col, self.min_cols = 3, 4
            self.header_traits = header[4:]
            self._orders: dict[int, tuple[str, ...]] = {}

    def expected_columns(self, fields: list[str]) -> tuple[int, int]:
        """Inclusive (min, max) column count for a row, from its essay_set when needed."""
        if self.fmt == OFFICIAL:
            # Only the columns up to domain1_score are used; editors may trim the empty
            # trailing rater/trait columns, so fewer than 28 is fine.
            return self.min_cols, max(len(self.header), len(OFFICIAL_COLUMNS))
        if not self.header_traits:
            return 4, 4  # a holistic-only file: essay_id, essay_set, essay, score
        prompt = parse_int(fields[1]) if len(fields) > 1 else None
        if prompt in TRAIT_NAMES:
            n = 4 + len(TRAIT_NAMES[prompt])
            return n, n
        return 4, max(4, len(self.header))  # no trait table: extra values are ignored

    def acceptable(self, fields: list[str]) -> bool:
        lo, hi = self.expected_columns(fields)
        return lo <= len(fields) <= hi

    def row(self, fields: list[str], line: int, tab_split: bool = False,
            decoding: LineDecoding = LineDecoding()) -> Essay | None:
        where = f"{self.path}:{line}"
        lo, hi = self.expected_columns(fields)
        if len(fields) < lo:
            # A row too short to hold its essay_set can't be checked against the table.
            if len(fields) > 1 and is_int(fields[1]):
                _prompt_of(fields, where)
            expected = lo if lo == hi else f"at least {lo}"
            self.skips.skip(where, "too few columns",
                            f"{len(fields)} tab-separated fields, expected {expected}", self.stats)
            return None
        prompt = _prompt_of(fields, where)
        if len(fields) > hi:
            self.skips.skip(where, "too many columns",
                            f"{len(fields)} fields, expected at most {hi} for prompt {prompt}",
                            self.stats)
            return None
        essay_id = parse_int(fields[0])
        if essay_id is None:
            self.skips.skip(where, "bad essay_id", f"{fields[0]!r} is not an integer",
                            self.stats)
            return None
        text = repair_quotes(fields[2], self.notes) if tab_split else fields[2]
        text = text.strip()
        if not text:
            self.skips.skip(where, "empty essay", f"essay {essay_id} has no text", self.stats)
            return None
        score = self._score(fields[self.score_col], prompt, None, where, essay_id)
        if score is None:
            return None
        traits = self._traits(fields, prompt, where, essay_id)
        if traits is None:
            return None
        return Essay(essay_id=essay_id, prompt=prompt, text=text, score=score, traits=traits,
                     source=str(self.path), line=line, split=self.stats.split,
                     decoding=decoding)

    def _score(self, raw: str, prompt: int, trait: str | None, where: str,
               essay_id: int) -> int | None:
        what = "score" if trait is None else f"trait {trait!r}"
        if raw.strip().lower() in _MISSING:
            reason = "missing score" if trait is None else "missing trait score"
            self.skips.skip(where, reason, f"essay {essay_id} has no {what}", self.stats)
            return None
        value = parse_int(raw)
        if value is None:
            self.skips.skip(where, "bad score", f"essay {essay_id}: {what} {raw!r} is not an "
                            "integer", self.stats)
            return None
        lo, hi = score_range(prompt, trait)
        if not lo <= value <= hi:
            self.skips.skip(where, "score out of range", f"essay {essay_id}: {what} {value} "
                            f"outside prompt {prompt}'s range {lo}-{hi}", self.stats)
            return None
        return value

    def _traits(self, fields: list[str], prompt: int, where: str,
                essay_id: int) -> dict[str, int] | None:
        if self.fmt == OFFICIAL:
            return {}  # the official rater trait columns are not ASAP++ traits
        values = fields[4:]
        if not self.header_traits:
            return {}
        if prompt not in TRAIT_NAMES:
            if values:
                self.notes[f"trait values ignored (prompt {prompt} has no trait table)"] += 1
            return {}
        if prompt not in self._orders:
            self._orders[prompt] = _trait_order(self.header_traits, prompt, where)
        by_name = {}
        for name, raw in zip(self._orders[prompt], values):
            value = self._score(raw, prompt, name, where, essay_id)
            if value is None:
                return None
            by_name[name] = value
        return {name: by_name[name] for name in TRAIT_NAMES[prompt]}


def read_tsv(path: str | os.PathLike, *, strict: bool = False,
             encoding: str = AUTO) -> ReadResult:
    """Read one ASAP file (official or traits layout, detected from its header).

    ``encoding``: ``"auto"`` (UTF-8, cp1252 for the bytes of a line that are not UTF-8) or a codec
    whose undecodable bytes become U+FFFD; either way the file's counts are in its
    ``FileStats`` and each essay's in ``Essay.decoding``.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such ASAP file: {path}") from None
    stats = FileStats(path=str(path), sha256=hashlib.sha256(data).hexdigest(), format="")
    decoded = decode_lines(data, encoding)
    lines = decoded.lines
    stats.set_decoding(decoded.encoding, decoded.counts())
    if not lines or not lines[0].strip():
        raise AsapFormatError(f"{path}:1: empty file or blank first line; expected a header")
    header = lines[0].split("\t")
    stats.format = detect_format(header, f"{path}:1")
    if stats.format == TRAITS:
        stats.split = _split_name(path)
    skips, notes = SkipCounter(strict, AsapFormatError), collections.Counter()
    reader = _FileReader(path, header, stats.format, stats, skips, notes)
    essays: list[Essay] = []
    for i, fields, span, tab_split in iter_records(lines, reader.acceptable):
        if fields is None:
            stats.blank_lines += 1
            continue
        stats.rows += 1
        essay = reader.row(fields, i + 1, tab_split, decoded.counts(i, i + span))
        if essay is not None:
            essays.append(essay)
    stats.essays = len(essays)
    return ReadResult(essays=essays, files=[stats], skipped=skips.counts,
                      skip_examples=skips.examples, notes=notes)


def read_asap(paths: Iterable[str | os.PathLike], *, strict: bool = False,
              encoding: str = AUTO) -> ReadResult:
    """Read several files; an essay_id seen before is a counted skip (or an error if strict).

    ASAP essay ids are unique across prompts, so a repeat means the same essay was passed
    twice (e.g. the official file and an ASAP++ file): keeping both would duplicate it, or
    leak it from one split into another.
    """
    essays: list[Essay] = []
    files: list[FileStats] = []
    skips = SkipCounter(strict, AsapFormatError)
    notes: collections.Counter = collections.Counter()
    seen: dict[int, str] = {}
    for path in paths:
        part = read_tsv(path, strict=strict, encoding=encoding)
        stats = part.files[0]
        files.append(stats)
        skips.counts.update(part.skipped)
        skips.examples.extend(part.skip_examples)
        notes.update(part.notes)
        for essay in part.essays:
            first = seen.get(essay.essay_id)
            if first is not None:
                skips.skip(f"{essay.source}:{essay.line}", "duplicate essay_id",
                           f"essay {essay.essay_id} was already read at {first}", stats)
                stats.essays -= 1
                continue
            seen[essay.essay_id] = f"{essay.source}:{essay.line}"
            essays.append(essay)
    if not files:
        raise ValueError("read_asap: no input files given")
    return ReadResult(essays=essays, files=files, skipped=skips.counts,
                      skip_examples=skips.examples, notes=notes)


def expand_inputs(spec: str | Sequence[str]) -> list[Path]:
    """Comma-separated files or directories (every ``*.tsv`` below it, sorted)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    paths: list[Path] = []
    for item in (str(s).strip() for s in items):
        if not item:
            continue
        p = Path(item)
        if p.is_dir():
            found = sorted(p.rglob("*.tsv"))
            if not found:
                raise FileNotFoundError(f"input directory {p} holds no *.tsv file")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"input {p} is neither a file nor a directory")
    if not paths:
        raise ValueError(f"no input files in {spec!r}")
    return paths


# ----------------------------------------------------------------------------- options


def parse_prompt_set(spec: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"all"``/None -> None (every prompt); ``"1,2,7"`` -> (1, 2, 7), each checked."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return None
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    prompts = []
    for item in items:
        value = parse_int(str(item))
        if value is None or value not in SCORE_RANGES:
            raise ValueError(f"prompt_set: {str(item).strip()!r} is not an ASAP prompt; "
                             f"expected 'all' or comma-separated integers in 1-8")
        prompts.append(value)
    return tuple(sorted(set(prompts)))

