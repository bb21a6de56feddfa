"""ASAP / ASAP++ essays: readers, score ranges, normalisation, and the tokenised dataset.

Two input layouts are read, told apart by their header line:

* ``official``: the Kaggle release ``training_set_rel3.tsv`` (28 tab-separated columns,
  essay_id, essay_set, essay, rater1_domain1, ..., domain1_score, ..., rater3_trait6). The
  holistic score is ``domain1_score``; the rater columns are not used.
* ``traits``: the ASAP++ combined layout (robert1ridley/cross-prompt-trait-scoring):
  essay_id, essay_set, essay, score, <trait values>. Its published header is defective for
  prompts 2-6: it lists the trait names of every earlier prompt as well, while each row
  holds only its own prompt's traits. The true trait columns are the prompt's own names,
  which are the *last* names of such a header.

Rows are read one physical line at a time with the csv module (tab dialect, ``"``-quoting
with doubled inner quotes). The published files also contain essays that merely *begin*
with a quote character the exporter never escaped; a quote-aware parser would swallow the
following rows into them, so when the quote-aware parse gives the wrong number of columns
and the plain tab split gives the right one, the tab split wins. A quoted field left open
at the end of a line may continue on the next lines (multi-paragraph essays), unless the
next line is itself a well-formed row.

Bad rows are never dropped silently: each is counted under a reason (``ReadResult.skipped``)
with a few ``file:line: detail`` examples, or raises :class:`AsapFormatError` naming the
file and line when ``strict=True``. An ``essay_set`` outside the score table always raises.

``build_dataset`` tokenises (BERT uncased WordPiece: ``[CLS] prompt [SEP] essay [SEP]``),
splits and writes one ArrayRecord file per split plus ``manifest.json``;
:class:`AsapDataSource` reads a split back with random access for grain.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AsapFormatError",
    "Essay",
    "ReadResult",
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
    "parse_prompt_set",
    "parse_split_fractions",
    "stratified_split",
    "read_split_file",
    "WordPieceTokenizer",
    "load_tokenizer",
    "assemble_ids",
    "BuildOptions",
    "build_dataset",
    "analyze_lengths",
    "load_manifest",
    "AsapDataSource",
]

MANIFEST_VERSION = "aes_jax.asap/1"
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


class AsapFormatError(ValueError):
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


def denormalize(x: Any, prompt: Any, trait: str | None = None, round_: bool = True) -> Any:
    """Inverse of :func:`normalize`: back to the score scale, clipped to the range.

    ``round_=True`` rounds half up to the nearest integer score (int / int64 array), which
    makes ``denormalize(normalize(s, p), p) == s`` exact for every valid integer ``s``;
    ``round_=False`` returns the clipped float (e.g. for RMSE on the score scale).
    """
    lo, hi = _bounds(prompt, trait)
    value = np.clip(np.asarray(x, dtype=np.float64) * (hi - lo) + lo, lo, hi)
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


@dataclasses.dataclass
class FileStats:
    path: str
    sha256: str
    format: str
    rows: int = 0                # data rows seen (after the header, blank lines excluded)
    essays: int = 0              # rows read into essays
    blank_lines: int = 0
    lines_with_replacement: int = 0  # lines whose undecodable bytes became U+FFFD
    replacement_chars: int = 0
    split: str | None = None
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class ReadResult:
    essays: list[Essay]
    files: list[FileStats]
    skipped: collections.Counter   # reason -> rows skipped
    skip_examples: list[str]       # "file:line: detail", the first few of each reason
    notes: collections.Counter     # things kept but worth reporting (e.g. ignored values)

    @property
    def replacement_chars(self) -> int:
        return sum(f.replacement_chars for f in self.files)


_EXAMPLES_PER_REASON = 5


class _Skips:
    """Skip bookkeeping for one read: counts per reason, examples, or raise when strict.
    Shared by the corpus readers; `error` is the reader's own format error."""

    def __init__(self, strict: bool, error: type[ValueError] = AsapFormatError):
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
        if self.counts[reason] <= _EXAMPLES_PER_REASON:
            self.examples.append(message)

    def absorb(self, other: "_Skips") -> None:
        self.counts.update(other.counts)
        self.examples.extend(other.examples)


def _split_name(path: Path) -> str | None:
    stem = path.stem.lower()
    return stem if stem in SPLITS else None


def _decode_lines(data: bytes, encoding: str) -> tuple[list[str], int, int]:
    """Physical lines (``\\n``/``\\r\\n``), lines with replaced bytes, replacement chars."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines, damaged, replaced = [], 0, 0
    # Decode line by line (newline bytes never occur inside a UTF-8 sequence) so a damaged
    # line is counted, and one bad byte can't cost more than its own character.
    for raw in data.split(b"\n"):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            lines.append(raw.decode(encoding))
        except UnicodeDecodeError:
            text = raw.decode(encoding, errors="replace")
            damaged += 1
            replaced += text.count("\ufffd") - raw.decode(encoding, errors="ignore").count(
                "\ufffd")
            lines.append(text)
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline, not a blank line
    return lines, damaged, replaced


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


_TSV = {"delimiter": "\t", "quotechar": '"', "doublequote": True, "strict": True}
_MAX_CONTINUATION_LINES = 200


def _csv_fields(lines: Sequence[str]) -> tuple[list[str] | None, str | None]:
    """(fields, None) or (None, error) for one record made of ``lines``."""
    try:
        rows = list(csv.reader([line + "\n" for line in lines], **_TSV))
    except csv.Error as e:
        return None, str(e)
    if len(rows) != 1:
        return None, f"{len(rows)} records"
    return rows[0], None


def _is_int(text: str) -> bool:
    return text.strip().lstrip("-").isdigit()


def _next_record(lines: Sequence[str], i: int, acceptable: Callable[[list[str]], bool]
                 ) -> tuple[list[str], int, bool]:
    """(fields, physical lines spanned, whether the plain tab split was used) at line ``i``.

    The quote-aware parse is preferred; see the module docstring for why the plain tab
    split is the fallback. When neither gives an acceptable column count, the quote-aware
    (or else the tab) fields are returned so the caller reports the count.
    """
    line = lines[i]
    quoted, error = _csv_fields([line])
    if quoted is not None and acceptable(quoted):
        return quoted, 1, False
    tab = line.split("\t")
    if acceptable(tab):
        return tab, 1, True
    if error is not None and "unexpected end of data" in error:
        # A quoted field still open at the end of the line: a multi-line essay, as long as
        # no following line is a complete row of its own (that would be a stray quote).
        for j in range(i + 1, min(len(lines), i + _MAX_CONTINUATION_LINES)):
            nxt = lines[j].split("\t")
            if len(nxt) > 2 and _is_int(nxt[0]) and _is_int(nxt[1]) and acceptable(nxt):
                break
            fields, err = _csv_fields(lines[i:j + 1])
            if fields is not None:
                if acceptable(fields):
                    return fields, j - i + 1, False
                break
            if "unexpected end of data" not in err:
                break
    return (quoted if quoted is not None else tab), 1, False


def _repair_quotes(text: str, notes: collections.Counter) -> str:
    """The essay field of a row the quote-aware parse could not read.

    In the published ASAP++ files such fields are either wrapped in quotes whose inner
    quotes were never doubled (the wrapping is the exporter's, so it goes), or begin with
    a quote the student opened and never closed (the student's, so it stays).
    """
    if len(text) > 1 and text.startswith('"') and text.endswith('"'):
        notes["quoted essay with undoubled inner quotes: wrapping quotes removed"] += 1
        return text[1:-1]
    if text.startswith('"'):
        notes["essay opening a quote it never closes: quote kept as text"] += 1
    return text


def _parse_int(text: str) -> int | None:
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
    prompt = _parse_int(raw)
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
                 skips: _Skips, notes: collections.Counter):
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
        prompt = _parse_int(fields[1]) if len(fields) > 1 else None
        if prompt in TRAIT_NAMES:
            n = 4 + len(TRAIT_NAMES[prompt])
            return n, n
        return 4, max(4, len(self.header))  # no trait table: extra values are ignored

    def acceptable(self, fields: list[str]) -> bool:
        lo, hi = self.expected_columns(fields)
        return lo <= len(fields) <= hi

    def row(self, fields: list[str], line: int, tab_split: bool = False) -> Essay | None:
        where = f"{self.path}:{line}"
        lo, hi = self.expected_columns(fields)
        if len(fields) < lo:
            # A row too short to hold its essay_set can't be checked against the table.
            if len(fields) > 1 and _is_int(fields[1]):
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
        essay_id = _parse_int(fields[0])
        if essay_id is None:
            self.skips.skip(where, "bad essay_id", f"{fields[0]!r} is not an integer",
                            self.stats)
            return None
        text = _repair_quotes(fields[2], self.notes) if tab_split else fields[2]
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
                     source=str(self.path), line=line, split=self.stats.split)

    def _score(self, raw: str, prompt: int, trait: str | None, where: str,
               essay_id: int) -> int | None:
        what = "score" if trait is None else f"trait {trait!r}"
        if raw.strip().lower() in _MISSING:
            reason = "missing score" if trait is None else "missing trait score"
            self.skips.skip(where, reason, f"essay {essay_id} has no {what}", self.stats)
            return None
        value = _parse_int(raw)
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
             encoding: str = "utf-8") -> ReadResult:
    """Read one ASAP file (official or traits layout, detected from its header)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such ASAP file: {path}") from None
    stats = FileStats(path=str(path), sha256=hashlib.sha256(data).hexdigest(), format="")
    lines, stats.lines_with_replacement, stats.replacement_chars = _decode_lines(data, encoding)
    if not lines or not lines[0].strip():
        raise AsapFormatError(f"{path}:1: empty file or blank first line; expected a header")
    header = lines[0].split("\t")
    stats.format = detect_format(header, f"{path}:1")
    if stats.format == TRAITS:
        stats.split = _split_name(path)
    skips, notes = _Skips(strict), collections.Counter()
    reader = _FileReader(path, header, stats.format, stats, skips, notes)
    essays: list[Essay] = []
    i = 1
    while i < len(lines):
        if not lines[i].strip():
            stats.blank_lines += 1
            i += 1
            continue
        fields, span, tab_split = _next_record(lines, i, reader.acceptable)
        stats.rows += 1
        essay = reader.row(fields, i + 1, tab_split)
        if essay is not None:
            essays.append(essay)
        i += span
    stats.essays = len(essays)
    return ReadResult(essays=essays, files=[stats], skipped=skips.counts,
                      skip_examples=skips.examples, notes=notes)


def read_asap(paths: Iterable[str | os.PathLike], *, strict: bool = False,
              encoding: str = "utf-8") -> ReadResult:
    """Read several files; an essay_id seen before is a counted skip (or an error if strict).

    ASAP essay ids are unique across prompts, so a repeat means the same essay was passed
    twice (e.g. the official file and an ASAP++ file): keeping both would duplicate it, or
    leak it from one split into another.
    """
    essays: list[Essay] = []
    files: list[FileStats] = []
    skips = _Skips(strict)
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
        value = _parse_int(str(item))
        if value is None or value not in SCORE_RANGES:
            raise ValueError(f"prompt_set: {str(item).strip()!r} is not an ASAP prompt; "
                             f"expected 'all' or comma-separated integers in 1-8")
        prompts.append(value)
    return tuple(sorted(set(prompts)))


def parse_split_fractions(spec: str | Sequence[float]) -> tuple[float, float, float]:
    """``"0.6,0.2,0.2"`` -> (train, dev, test) fractions, non-negative, summing to 1."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    try:
        fractions = tuple(float(x) for x in items)
    except ValueError:
        raise ValueError(f"split: {spec!r} must be three comma-separated numbers "
                         "(train,dev,test), e.g. 0.6,0.2,0.2") from None
    if (len(fractions) != 3 or any(not math.isfinite(f) or f < 0 for f in fractions)
            or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0):
        raise ValueError(f"split: {spec!r} must be three non-negative fractions train,dev,test "
                         "summing to 1 with train > 0")
    return fractions  # type: ignore[return-value]


# ----------------------------------------------------------------------------- splits


def _balanced_labels(n: int, fractions: Sequence[float]) -> list[int]:
    """Label sequence where every prefix's counts stay within 1 of ``fractions * length``.

    Each position goes to the split furthest behind its quota. Applied along essays sorted
    by score, any run of equal scores (a stratum) gets near-proportional shares too.
    """
    counts = [0] * len(fractions)
    labels = []
    for k in range(1, n + 1):
        deficit = [f * k - c for f, c in zip(fractions, counts)]
        s = int(np.argmax(deficit))
        counts[s] += 1
        labels.append(s)
    return labels


def stratified_split(essays: Sequence[Essay], fractions: Sequence[float],
                     seed: int) -> dict[int, str]:
    """essay_id -> split, stratified by score within each prompt, deterministic in ``seed``.

    Only the set of essays matters, not their input order: each prompt's essays are put in
    essay_id order, shuffled by a generator seeded with (seed, prompt), stably sorted by
    score, and labelled along the balanced sequence from a random offset (so the first
    essay of a small stratum is not always train).
    """
    by_prompt: dict[int, list[Essay]] = collections.defaultdict(list)
    for essay in essays:
        by_prompt[essay.prompt].append(essay)
    out: dict[int, str] = {}
    for prompt, group in sorted(by_prompt.items()):
        rng = np.random.default_rng([int(seed), prompt])
        group = sorted(group, key=lambda e: e.essay_id)
        order = rng.permutation(len(group))
        ranked = sorted((group[k] for k in order), key=lambda e: e.score)
        offset = int(rng.integers(0, len(ranked)))
        labels = _balanced_labels(offset + len(ranked), fractions)[offset:]
        for essay, label in zip(ranked, labels):
            out[essay.essay_id] = SPLITS[label]
    return out


def read_split_file(path: str | os.PathLike) -> dict[int, str]:
    """A CSV of ``essay_id,split`` (header optional) -> essay_id -> train/dev/test."""
    path = Path(path)
    out: dict[int, str] = {}
    first_line: dict[int, int] = {}
    with open(path, newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.reader(f), start=1):
            if not row or not "".join(row).strip():
                continue
            cells = [c.strip() for c in row]
            if line == 1 and [c.lower() for c in cells[:2]] == ["essay_id", "split"]:
                continue
            essay_id = _parse_int(cells[0])
            if len(cells) != 2 or essay_id is None or cells[1].lower() not in SPLITS:
                raise AsapFormatError(f"{path}:{line}: expected 'essay_id,split' with an "
                                      f"integer id and split one of {list(SPLITS)}, got {row}")
            split = cells[1].lower()
            if essay_id in out and out[essay_id] != split:
                raise AsapFormatError(f"{path}:{line}: essay {essay_id} is assigned to "
                                      f"{split!r} here but to {out[essay_id]!r} on line "
                                      f"{first_line[essay_id]}")
            out[essay_id] = split
            first_line.setdefault(essay_id, line)
    if not out:
        raise AsapFormatError(f"{path}: no 'essay_id,split' rows")
    return out


# ----------------------------------------------------------------------------- tokenising


@dataclasses.dataclass
class WordPieceTokenizer:
    """A BERT uncased WordPiece tokenizer (``tokenizers``) with padding/truncation off."""

    tokenizer: Any
    model_dir: str
    cls_id: int
    sep_id: int
    pad_id: int
    vocab_size: int

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids of each text, without special tokens (batched, in Rust)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts),
                                                           add_special_tokens=False)]


def load_tokenizer(model_dir: str | os.PathLike | None = None) -> WordPieceTokenizer:
    """From a local HF dir: ``tokenizer.json`` if present, else ``vocab.txt`` (uncased)."""
    from tokenizers import Tokenizer

    if model_dir is None:
        from aes_jax.interop import assets
        model_dir = assets.minilm_dir()
    model_dir = Path(model_dir)
    if (model_dir / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    elif (model_dir / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer
        tok = BertWordPieceTokenizer(str(model_dir / "vocab.txt"), lowercase=True)
    else:
        raise FileNotFoundError(f"{model_dir}: no tokenizer.json or vocab.txt (expected a "
                                "BERT WordPiece HF tokenizer directory)")
    # The packaged tokenizer.json pads and truncates to 128; we assemble and cut ourselves.
    tok.no_padding()
    tok.no_truncation()
    ids = {name: tok.token_to_id(name) for name in ("[CLS]", "[SEP]", "[PAD]")}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"{model_dir}: the tokenizer has no {missing} token; expected a BERT "
                         "WordPiece vocabulary")
    return WordPieceTokenizer(tokenizer=tok, model_dir=str(model_dir), cls_id=ids["[CLS]"],
                              sep_id=ids["[SEP]"], pad_id=ids["[PAD]"],
                              vocab_size=tok.get_vocab_size())


def assemble_ids(essay_ids: Sequence[int], cls_id: int, sep_id: int,
                 prompt_ids: Sequence[int] | None = None,
                 max_tokens: int | None = None) -> tuple[list[int], int]:
    """``[CLS] prompt [SEP] essay [SEP]`` (``[CLS] essay [SEP]`` without a prompt).

    Returns (ids, full length before truncation). With ``max_tokens`` the *essay* is cut so
    the sequence fits, keeping the prompt and the closing ``[SEP]``.
    """
    head = [cls_id] + ([*prompt_ids, sep_id] if prompt_ids else [])
    full = len(head) + len(essay_ids) + 1
    room = len(essay_ids) if max_tokens is None else max_tokens - len(head) - 1
    if room < 1:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for the essay after "
                         f"{len(head) + 1} prompt and special tokens")
    return head + list(essay_ids[:room]) + [sep_id], full


# ----------------------------------------------------------------------------- building


@dataclasses.dataclass
class BuildOptions:
    inputs: Sequence[str | os.PathLike]
    output_dir: str | os.PathLike
    prompts: tuple[int, ...] | None = None      # None: every prompt in the inputs
    max_tokens: int = 512
    overlength: str = "truncate"                # or "drop"
    limit_train_essays: int | None = None
    split: tuple[float, float, float] | None = None  # None: file splits, else 0.6/0.2/0.2
    split_file: str | os.PathLike | None = None
    seed: int = 0
    tokenizer_dir: str | os.PathLike | None = None
    prompt_texts: Mapping[int, str] | None = None
    strict: bool = False
    encoding: str = "utf-8"
    overwrite: bool = False


DEFAULT_SPLIT = (0.6, 0.2, 0.2)


def _check_options(opts: BuildOptions) -> None:
    if opts.max_tokens < 4:
        raise ValueError(f"max_tokens must be at least 4, got {opts.max_tokens}")
    if opts.overlength not in ("truncate", "drop"):
        raise ValueError(f"overlength must be 'truncate' or 'drop', got {opts.overlength!r}")
    if opts.limit_train_essays is not None and opts.limit_train_essays < 1:
        raise ValueError(f"limit_train_essays must be >= 1, got {opts.limit_train_essays}")
    if opts.split is not None and opts.split_file is not None:
        raise ValueError("give either split fractions or a split file, not both")


def _read_selected(opts: BuildOptions) -> tuple[ReadResult, list[Essay], dict[int, int]]:
    """Read the inputs and keep the selected prompts (others counted per prompt)."""
    result = read_asap(expand_inputs(opts.inputs), strict=opts.strict, encoding=opts.encoding)
    keep = set(opts.prompts) if opts.prompts else None
    essays = [e for e in result.essays if keep is None or e.prompt in keep]
    filtered = collections.Counter(e.prompt for e in result.essays
                                   if keep is not None and e.prompt not in keep)
    if not essays:
        wanted = "any prompt" if keep is None else f"prompts {sorted(keep)}"
        raise ValueError(f"no essays of {wanted} in {[f.path for f in result.files]} "
                         f"(skipped: {dict(result.skipped)})")
    return result, essays, dict(sorted(filtered.items()))


def assign_splits(essays: Sequence[Essay], opts: BuildOptions) -> tuple[dict[int, str], dict]:
    """essay_id -> split, and the rule used (for the manifest)."""
    if opts.split_file is not None:
        table = read_split_file(opts.split_file)
        return ({e.essay_id: table[e.essay_id] for e in essays if e.essay_id in table},
                {"rule": "split_file", "path": str(opts.split_file),
                 "sha256": hashlib.sha256(Path(opts.split_file).read_bytes()).hexdigest()})
    given = {e.split for e in essays}
    if opts.split is None and None not in given:
        return ({e.essay_id: e.split for e in essays},
                {"rule": "input files", "detail": "train/dev/test from the traits-layout "
                 "file names"})
    if opts.split is None and given != {None}:
        files = sorted({e.source for e in essays if e.split is None})
        raise ValueError(f"some inputs carry a split in their name (train/dev/test.tsv) and "
                         f"others do not ({files[:3]}); pass split fractions or a split file")
    fractions = opts.split or DEFAULT_SPLIT
    return (stratified_split(essays, fractions, opts.seed),
            {"rule": "stratified", "fractions": list(fractions), "seed": int(opts.seed),
             "strata": "score within prompt"})


def _limit_train(split_of: dict[int, str], limit: int | None, seed: int) -> int:
    """Keep a seeded random ``limit`` of the train essays (in place); returns how many left."""
    train = sorted(i for i, s in split_of.items() if s == "train")
    if limit is None or len(train) <= limit:
        return 0
    rng = np.random.default_rng([int(seed), 0x11A1])
    dropped = [train[k] for k in rng.permutation(len(train))[limit:]]
    for essay_id in dropped:
        del split_of[essay_id]
    return len(dropped)


def _prompt_token_ids(tok: WordPieceTokenizer, texts: Mapping[int, str] | None,
                      prompts: Iterable[int]) -> dict[int, list[int]]:
    if not texts:
        return {}
    texts = {int(k): v for k, v in texts.items()}
    return {p: tok.encode_many([texts[p]])[0] for p in prompts if texts.get(p, "").strip()}


def _nested_counts(rows: Iterable[tuple[str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split, prompt in rows:
        inner = out.setdefault(split, {})
        inner[str(prompt)] = inner.get(str(prompt), 0) + 1
    order = {s: k for k, s in enumerate(SPLITS)}
    return {s: dict(sorted(v.items(), key=lambda kv: int(kv[0])))
            for s, v in sorted(out.items(), key=lambda kv: order.get(kv[0], len(order)))}


def make_record(essay: Essay, input_ids: Sequence[int], num_tokens: int) -> dict[str, Any]:
    """The serialised example: raw and normalised scores, both holistic and per trait."""
    return {
        "essay_id": essay.essay_id,
        "prompt": essay.prompt,
        "input_ids": [int(i) for i in input_ids],
        "num_tokens": int(num_tokens),  # before truncation
        "truncated": len(input_ids) < num_tokens,
        "score": essay.score,
        "target": normalize(essay.score, essay.prompt),
        "traits": dict(essay.traits),
        "trait_targets": {t: normalize(v, essay.prompt, t) for t, v in essay.traits.items()},
    }


def _serialize(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode("utf-8")


def refuse_existing(output_dir: Path, overwrite: bool,
                    names: Sequence[str] = ("manifest.json",)) -> None:
    """FileExistsError when `output_dir` holds any of a dataset's files and not `overwrite`."""
    existing = [n for n in names if (output_dir / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds a dataset ({existing[0]}); pass "
                              "overwrite=True (--overwrite) to replace it")


def _write_array_record(path: Path, payloads: Iterable[bytes]) -> int:
    from array_record.python.array_record_module import ArrayRecordWriter

    tmp = path.with_name(path.name + ".tmp")
    # group_size:1 makes every record its own chunk: random access then decodes one
    # record, not a group of them, which is the access pattern of a shuffled grain source.
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    n = 0
    try:
        for payload in payloads:
            writer.write(payload)
            n += 1
    finally:
        writer.close()
    os.replace(tmp, path)
    return n


def _file_entries(result: ReadResult) -> list[dict[str, Any]]:
    return [dataclasses.asdict(f) for f in result.files]


def build_dataset(opts: BuildOptions) -> dict[str, Any]:
    """Read, split, tokenise and write the dataset; returns the manifest it wrote.

    ``manifest.json`` is written last, so a directory holding one is complete.
    """
    _check_options(opts)
    output_dir = Path(opts.output_dir)
    refuse_existing(output_dir, opts.overwrite)  # before the slow part, not after it
    result, essays, filtered = _read_selected(opts)
    split_of, split_rule = assign_splits(essays, opts)
    skipped = collections.Counter(result.skipped)
    unlisted = [e for e in essays if e.essay_id not in split_of]
    if unlisted:
        skipped["not in split file"] += len(unlisted)
    essays = [e for e in essays if e.essay_id in split_of]
    if not essays:
        raise ValueError(f"no essay of the selected prompts is listed in {opts.split_file}")

    tok = load_tokenizer(opts.tokenizer_dir)
    prompts = sorted({e.prompt for e in essays})
    prompt_ids = _prompt_token_ids(tok, opts.prompt_texts, prompts)
    encoded = tok.encode_many([e.text for e in essays])
    over_rows, records = [], []
    dropped_overlength = []
    for essay, ids in zip(essays, encoded):
        split = split_of[essay.essay_id]
        seq, full = assemble_ids(ids, tok.cls_id, tok.sep_id, prompt_ids.get(essay.prompt),
                                 opts.max_tokens)
        if full > opts.max_tokens:
            over_rows.append((split, essay.prompt))
            if opts.overlength == "drop":
                dropped_overlength.append((split, essay.prompt))
                del split_of[essay.essay_id]
                continue
        records.append((essay, seq, full))
    limited = _limit_train(split_of, opts.limit_train_essays, opts.seed)
    records = [r for r in records if r[0].essay_id in split_of]
    records.sort(key=lambda r: (r[0].prompt, r[0].essay_id))

    # From here on the directory is being rewritten: drop the old completeness marker first.
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "manifest.json").unlink(missing_ok=True)
    counts = {}
    for split in SPLITS:
        rows = [r for r in records if split_of[r[0].essay_id] == split]
        counts[split] = _write_array_record(
            output_dir / f"{split}.array_record",
            (_serialize(make_record(e, seq, full)) for e, seq, full in rows))

    trait_names = _union_traits(e.traits for e, _, _ in records)
    with_traits = sorted({e.prompt for e, _, _ in records if e.traits})
    manifest = {
        "format": MANIFEST_VERSION,
        "sources": _file_entries(result),
        "prompts": prompts,
        "prompts_filtered_out": {str(p): n for p, n in filtered.items()},
        "prompts_requested_but_absent": sorted(set(opts.prompts or ()) - set(prompts)),
        "splits": {s: counts[s] for s in SPLITS},
        "counts": _nested_counts((split_of[e.essay_id], e.prompt) for e, _, _ in records),
        "skipped": dict(sorted(skipped.items())),
        "skip_examples": result.skip_examples,
        "notes": dict(result.notes),
        "replacement_chars": result.replacement_chars,
        "score_ranges": {str(p): list(SCORE_RANGES[p]) for p in prompts},
        "trait_ranges": {str(p): {t: list(r) for t, r in TRAIT_RANGES[p].items()}
                         for p in with_traits},
        "trait_names": trait_names,
        "tokenizer": {"dir": tok.model_dir, "vocab_size": tok.vocab_size, "cls_id": tok.cls_id,
                      "sep_id": tok.sep_id, "pad_id": tok.pad_id,
                      "layout": "[CLS] prompt [SEP] essay [SEP]" if prompt_ids
                      else "[CLS] essay [SEP]"},
        "prompt_texts": {str(p): opts.prompt_texts[p] for p in prompt_ids} if prompt_ids else {},
        "max_tokens": opts.max_tokens,
        "overlength": {"policy": opts.overlength,
                       "over_limit": _nested_counts(over_rows),
                       "dropped": _nested_counts(dropped_overlength),
                       "truncated": (_nested_counts(over_rows)
                                     if opts.overlength == "truncate" else {})},
        "split": {**split_rule, "limit_train_essays": opts.limit_train_essays,
                  "train_essays_removed_by_limit": limited},
        "record": {"serialization": "json utf-8, one example per ArrayRecord record",
                   "fields": ["essay_id", "prompt", "input_ids", "num_tokens", "truncated",
                              "score", "target", "traits", "trait_targets"]},
    }
    tmp = output_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, output_dir / "manifest.json")
    return manifest


def _union_traits(trait_dicts: Iterable[Mapping[str, int]]) -> list[str]:
    """Every trait name present, once, in the order of the score tables (prompt 1 first)."""
    present = {t for d in trait_dicts for t in d}
    order = [t for p in sorted(TRAIT_NAMES) for t in TRAIT_NAMES[p]]
    return sorted(present, key=order.index)


# ----------------------------------------------------------------------------- lengths


def length_stats(lengths: Sequence[int], max_tokens: int) -> dict[str, float]:
    arr = np.asarray(lengths, dtype=np.float64)
    over = int((arr > max_tokens).sum())
    return {"count": int(arr.size), "mean": round(float(arr.mean()), 1),
            "p50": round(float(np.percentile(arr, 50)), 1),
            "p90": round(float(np.percentile(arr, 90)), 1),
            "p99": round(float(np.percentile(arr, 99)), 1), "max": int(arr.max()),
            "over_limit": over, "share_over_limit": round(over / arr.size, 4)}


def analyze_lengths(opts: BuildOptions, png_name: str = "token_lengths.png"
                    ) -> dict[str, Any]:
    """Per-prompt token-length report (full sequence with special/prompt tokens) + PNG.

    Writes ``token_lengths.png`` and ``token_lengths.json`` into ``output_dir`` and no
    dataset; splits are not needed, so no split option is consulted.
    """
    _check_options(opts)
    result, essays, _ = _read_selected(opts)
    tok = load_tokenizer(opts.tokenizer_dir)
    prompt_ids = _prompt_token_ids(tok, opts.prompt_texts, {e.prompt for e in essays})
    lengths: dict[int, list[int]] = collections.defaultdict(list)
    for essay, ids in zip(essays, tok.encode_many([e.text for e in essays])):
        _, full = assemble_ids(ids, tok.cls_id, tok.sep_id, prompt_ids.get(essay.prompt))
        lengths[essay.prompt].append(full)
    report = {
        "max_tokens": opts.max_tokens, "tokenizer": tok.model_dir,
        "prompts": {str(p): length_stats(v, opts.max_tokens) for p, v in sorted(lengths.items())},
        "all": length_stats([n for v in lengths.values() for n in v], opts.max_tokens),
        "skipped": dict(result.skipped),
    }
    output_dir = Path(opts.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _plot_lengths(lengths, opts.max_tokens, output_dir / png_name)
    (output_dir / "token_lengths.json").write_text(json.dumps(report, indent=2) + "\n")
    report["png"] = str(output_dir / png_name)
    return report


def _plot_lengths(lengths: Mapping[int, Sequence[int]], max_tokens: int, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    prompts = sorted(lengths)
    cols = min(3, len(prompts))
    rows = math.ceil(len(prompts) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, p in zip(axes.flat, prompts):
        ax.hist(lengths[p], bins=40, color="#4477aa")
        ax.axvline(max_tokens, color="#cc3311", linestyle="--", label=f"max_tokens={max_tokens}")
        ax.set_title(f"prompt {p} (n={len(lengths[p])})")
        ax.set_xlabel("tokens")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(prompts):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_length_report(report: Mapping[str, Any]) -> str:
    lines = [f"token lengths ([CLS] ... [SEP], tokenizer {report['tokenizer']}), "
             f"max_tokens={report['max_tokens']}",
             f"{'prompt':>6} {'count':>6} {'mean':>7} {'p50':>7} {'p90':>7} {'p99':>7} "
             f"{'max':>6} {'over':>7}"]
    rows = list(report["prompts"].items()) + [("all", report["all"])]
    for name, s in rows:
        lines.append(f"{name:>6} {s['count']:>6} {s['mean']:>7} {s['p50']:>7} {s['p90']:>7} "
                     f"{s['p99']:>7} {s['max']:>6} {100 * s['share_over_limit']:>6.1f}%")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- reading back


def load_manifest(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(dataset_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{dataset_dir}: no manifest.json, so not a (complete) ASAP "
                                "dataset; build one with python -m launch.build_dataset")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_VERSION:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected "
                         f"{MANIFEST_VERSION!r}; rebuild the dataset")
    return manifest


class AsapDataSource:
    """Random-access grain source over one split of a built dataset.

    ``source[i]`` is a dict of numpy values: ``essay_id`` (int64), ``prompt`` (int32),
    ``input_ids`` (int32, variable length), ``score`` (int32, raw), ``target`` (float32 in
    [0, 1]), and fixed-size trait arrays over the manifest's ``trait_names`` so batches
    mixing prompts stack: ``trait_scores`` (int32, -1 where the prompt lacks the trait),
    ``trait_targets`` (float32, 0 there) and ``trait_mask`` (bool). ``record(i)`` gives
    the stored JSON dict (traits by name).
    """

    def __init__(self, dataset_dir: str | os.PathLike, split: str):
        import grain

        self.dataset_dir = Path(dataset_dir)
        self.manifest = load_manifest(self.dataset_dir)
        if split not in self.manifest["splits"]:
            raise ValueError(f"{dataset_dir}: no split {split!r}; it has "
                             f"{list(self.manifest['splits'])}")
        self.split = split
        path = self.dataset_dir / f"{split}.array_record"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (the manifest lists split {split!r})")
        self._source = grain.sources.ArrayRecordDataSource([str(path)])
        expected = self.manifest["splits"][split]
        if len(self._source) != expected:
            raise ValueError(f"{path}: {len(self._source)} records but the manifest says "
                             f"{expected}; the dataset is damaged, rebuild it")
        self.trait_names: list[str] = list(self.manifest["trait_names"])
        self._trait_index = {t: k for k, t in enumerate(self.trait_names)}

    def __len__(self) -> int:
        return len(self._source)

    def record(self, index: int) -> dict[str, Any]:
        return json.loads(self._source[index])

    def _to_arrays(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        n = len(self.trait_names)
        scores = np.full(n, -1, dtype=np.int32)
        targets = np.zeros(n, dtype=np.float32)
        for name, value in rec["traits"].items():
            k = self._trait_index[name]
            scores[k] = value
            targets[k] = rec["trait_targets"][name]
        return {
            "essay_id": np.int64(rec["essay_id"]),
            "prompt": np.int32(rec["prompt"]),
            "input_ids": np.asarray(rec["input_ids"], dtype=np.int32),
            "score": np.int32(rec["score"]),
            "target": np.float32(rec["target"]),
            "trait_scores": scores,
            "trait_targets": targets,
            "trait_mask": scores >= 0,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._to_arrays(self.record(int(index)))

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self._to_arrays(json.loads(b))
                for b in self._source.__getitems__([int(i) for i in indices])]

    def __repr__(self) -> str:
        return (f"AsapDataSource({str(self.dataset_dir)!r}, {self.split!r}: {len(self)} essays, "
                f"prompts {self.manifest['prompts']})")
