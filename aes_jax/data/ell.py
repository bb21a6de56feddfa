"""ELLIPSE (Feedback Prize - English Language Learning) essays: readers and fold splits.

Six analytic traits, each scored 1.0-5.0 in steps of 0.5. Two CSV layouts are read, told
apart by their header line:

* ``kaggle``: the competition's ``train.csv``: text_id, full_text, cohesion, syntax,
  vocabulary, phraseology, grammar, conventions, with the scores as written (``3.5``).
  The competition's ``test.csv`` (text_id, full_text, no scores) is layout
  ``kaggle_unscored`` and is read only when the caller says ``allow_unscored=True``, so a
  test file is never mistaken for training data.
* ``arts_fold``: the ArTS cross-validation files ``fold_k.csv``: (unnamed row index),
  index, text_id, content_text, cohesion, ..., conventions, essay_id, target. Their trait
  values are integers. Checked against the Kaggle ``train.csv`` (e.g. text_id 0016926B079C,
  cohesion 3.5 there, 7 here; 003885A45F42, conventions 5.0 there, 10 here) and against the
  values the files hold (2-10, never 1), the stored value is ``v = 2 * s``, so
  ``s = v / 2``. (Descriptions that say ``v = 2 * s - 1`` would put 10 at 5.5, off the
  scale.) A value outside 2-10 is a bad row.

Bad rows (no text, no text_id, a score that is missing, not a number, off the 0.5 grid or
outside 1.0-5.0, a wrong column count, a text_id read before) are never dropped silently:
each is counted per reason with a few ``file:line: detail`` examples, or raises
:class:`EllFormatError` naming the file and line when ``strict=True``. Line numbers are the
physical line where a record starts (essays span lines).

Files are decoded one physical line at a time (``encoding="auto"``: UTF-8, or cp1252 for
a line that is not UTF-8; see :mod:`aes_jax.data.tsv_records`), and each essay carries
the decoding of its own lines (``EllEssay.decoding``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from aes_jax.data.read_report import DataFormatError, FileStats, ReadResult, SkipCounter
from aes_jax.data.tsv_records import AUTO, LineDecoding, decode_lines

__all__ = [
    "ELL_TRAITS",
    "ELL_RANGE",
    "ELL_STEP",
    "EllFormatError",
    "EllEssay",
    "detect_layout",
    "is_ell_input",
    "read_ell",
    "read_ell_dir",
    "assign_folds",
    "split_ell",
    "read_ell_folds",
]

ELL_TRAITS = ("cohesion", "syntax", "vocabulary", "phraseology", "grammar", "conventions")
ELL_RANGE = (1.0, 5.0)
ELL_STEP = 0.5

KAGGLE, KAGGLE_UNSCORED, ARTS_FOLD = "kaggle", "kaggle_unscored", "arts_fold"
_FOLD_FILE = re.compile(r"^fold_(\d+)\.csv$", re.IGNORECASE)


class EllFormatError(DataFormatError):
    """A file that cannot be read as ELLIPSE data; the message names file and line."""


@dataclasses.dataclass(frozen=True)
class EllEssay:
    text_id: str
    text: str
    scores: dict[str, float]  # trait -> 1.0-5.0 in ELL_TRAITS order; empty when unscored
    source: str               # file the row came from
    line: int                 # 1-based physical line where the record starts
    fold: int | None = None   # cross-validation fold (fold_k.csv, or assign_folds)
    decoding: LineDecoding = LineDecoding()  # of the record's own physical lines


# ----------------------------------------------------------------------------- layouts


def detect_layout(header: Sequence[str], where: str = "<header>") -> str:
    """``"kaggle"``, ``"kaggle_unscored"`` or ``"arts_fold"`` from a CSV header; else raises."""
    names = [h.strip().lower() for h in header]
    has_traits = all(t in names for t in ELL_TRAITS)
    if "text_id" in names and "content_text" in names and has_traits:
        return ARTS_FOLD
    if "text_id" in names and "full_text" in names:
        if has_traits:
            return KAGGLE
        if not any(t in names for t in ELL_TRAITS):
            return KAGGLE_UNSCORED
    raise EllFormatError(
        f"{where}: unrecognised header {list(header)[:12]}: expected the Kaggle ELLIPSE "
        f"layout (text_id, full_text, {', '.join(ELL_TRAITS)}), its test.csv (text_id, "
        f"full_text) or the ArTS fold layout (, index, text_id, content_text, "
        f"{', '.join(ELL_TRAITS)}, essay_id, target), comma-separated")


def _first_line(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return f.readline()


def is_ell_input(path: str | os.PathLike) -> bool:
    """True for a folder holding ``fold_*.csv`` or a ``.csv`` file with an ELLIPSE header.

    Lets a command line take either corpus through one ``--input`` without a format flag.
    """
    path = Path(path)
    if path.is_dir():
        return any(_FOLD_FILE.match(p.name) for p in path.iterdir())
    if path.is_file() and path.suffix.lower() == ".csv":
        header = next(csv.reader([_first_line(path)]), [])
        try:
            detect_layout(header)
        except EllFormatError:
            return False
        return True
    return False


# ----------------------------------------------------------------------------- reading


def _kaggle_score(raw: str) -> tuple[float | None, str]:
    """A 1.0-5.0 half-step score as written in train.csv, or (None, why not)."""
    try:
        value = float(raw)
    except ValueError:
        return None, "not a number"
    return _on_grid(value)


def _arts_score(raw: str) -> tuple[float | None, str]:
    """An ArTS fold value ``v = 2 * s`` (integer 2-10) converted back to ``s``."""
    try:
        value = float(raw)
    except ValueError:
        return None, "not a number"
    if not math.isfinite(value) or not value.is_integer():
        return None, "not an integer (fold files hold v = 2 * s, integers 2-10)"
    if not 2 <= value <= 10:
        return None, "outside 2-10 (fold files hold v = 2 * s for s in 1.0-5.0)"
    return value / 2, ""


def _on_grid(value: float) -> tuple[float | None, str]:
    lo, hi = ELL_RANGE
    if not math.isfinite(value) or not lo <= value <= hi:
        return None, f"outside {lo}-{hi}"
    steps = (value - lo) / ELL_STEP
    if abs(steps - round(steps)) > 1e-6:
        return None, f"not a multiple of {ELL_STEP} (off the ELLIPSE grid)"
    return lo + round(steps) * ELL_STEP, ""


class _Columns:
    """Where each needed field sits in one file's rows."""

    def __init__(self, header: Sequence[str], layout: str):
        names = [h.strip().lower() for h in header]
        self.width = len(names)
        self.text_id = names.index("text_id")
        self.text = names.index("content_text" if layout == ARTS_FOLD else "full_text")
        self.traits = ({} if layout == KAGGLE_UNSCORED
                       else {t: names.index(t) for t in ELL_TRAITS})


def _row_essay(fields: list[str], cols: _Columns, layout: str, where: str, line: int,
               path: Path, fold: int | None, skips: SkipCounter,
               stats: FileStats, decoding: LineDecoding) -> EllEssay | None:
    if len(fields) != cols.width:
        skips.skip(where, "wrong number of columns",
                   f"{len(fields)} comma-separated fields, expected {cols.width}", stats)
        return None
    text_id = fields[cols.text_id].strip()
    if not text_id:
        skips.skip(where, "missing text_id", "the text_id field is empty", stats)
        return None
    text = fields[cols.text].strip()
    if not text:
        skips.skip(where, "empty essay", f"essay {text_id} has no text", stats)
        return None
    convert = _arts_score if layout == ARTS_FOLD else _kaggle_score
    scores: dict[str, float] = {}
    for trait, col in cols.traits.items():
        raw = fields[col].strip()
        if raw.lower() in ("", "na", "nan", "none", "null"):
            skips.skip(where, "missing score", f"essay {text_id} has no {trait} score", stats)
            return None
        value, why = convert(raw)
        if value is None:
            skips.skip(where, "bad score", f"essay {text_id}: {trait} {raw!r} is {why}",
                       stats)
            return None
        scores[trait] = value
    return EllEssay(text_id=text_id, text=text, scores=scores, source=str(path), line=line,
                    fold=fold, decoding=decoding)


def _read_one(path: Path, fold: int | None, skips: SkipCounter, allow_unscored: bool,
              encoding: str) -> tuple[list[EllEssay], FileStats]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"no such ELLIPSE file: {path}") from None
    stats = FileStats(path=str(path), sha256=hashlib.sha256(data).hexdigest(), format="")
    # The \r of \r\n stays, so a quoted field keeps its own line breaks as written.
    decoded = decode_lines(data, encoding, keep_cr=True)
    stats.set_decoding(decoded.encoding, decoded.counts())
    reader = csv.reader((line + "\n" for line in decoded.lines), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise EllFormatError(f"{path}:1: empty file; expected a header") from None
    except csv.Error as e:
        raise EllFormatError(f"{path}:1: unreadable header: {e}") from None
    layout = detect_layout(header, f"{path}:1")
    if layout == KAGGLE_UNSCORED and not allow_unscored:
        raise EllFormatError(f"{path}:1: header {header} has no trait scores (the Kaggle "
                             "test.csv layout); pass allow_unscored=True to read it anyway")
    stats.format = layout
    cols = _Columns(header, layout)
    essays: list[EllEssay] = []
    line = reader.line_num + 1  # physical line where the next record starts
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise EllFormatError(f"{path}:{line}: malformed CSV record: {e}") from None
        if not fields or not "".join(fields).strip():
            stats.blank_lines += 1
        else:
            stats.rows += 1
            essay = _row_essay(fields, cols, layout, f"{path}:{line}", line, path, fold, skips,
                               stats, decoded.counts(line - 1, reader.line_num))
            if essay is not None:
                essays.append(essay)
        line = reader.line_num + 1
    stats.essays = len(essays)
    return essays, stats


def _dedupe(essays: Iterable[EllEssay], files: Sequence[FileStats],
            skips: SkipCounter) -> list[EllEssay]:
    """Drop (count) a text_id read before: a repeat would leak an essay across splits."""
    by_path = {f.path: f for f in files}
    seen: dict[str, str] = {}
    out = []
    for essay in essays:
        where = f"{essay.source}:{essay.line}"
        if essay.text_id in seen:
            stats = by_path[essay.source]
            skips.skip(where, "duplicate text_id",
                       f"essay {essay.text_id} was already read at {seen[essay.text_id]}", stats)
            stats.essays -= 1
            continue
        seen[essay.text_id] = where
        out.append(essay)
    return out


def read_ell(path: str | os.PathLike, fold: int | None = None, *, strict: bool = False,
             allow_unscored: bool = False, encoding: str = AUTO) -> ReadResult:
    """Read one ELLIPSE CSV (layout detected from its header); ``fold`` tags its essays."""
    skips = SkipCounter(strict, EllFormatError)
    essays, stats = _read_one(Path(path), fold, skips, allow_unscored, encoding)
    essays = _dedupe(essays, [stats], skips)
    return ReadResult(essays=essays, files=[stats], skipped=skips.counts,
                      skip_examples=skips.examples)


def fold_files(folder: str | os.PathLike) -> dict[int, Path]:
    """fold number -> ``fold_k.csv`` in ``folder`` (at least one, else raises)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory of fold_k.csv files")
    found = {int(m.group(1)): p for p in sorted(folder.iterdir())
             if (m := _FOLD_FILE.match(p.name))}
    if not found:
        raise FileNotFoundError(f"{folder} holds no fold_k.csv file")
    return dict(sorted(found.items()))


def read_ell_dir(folder: str | os.PathLike, *, strict: bool = False,
                 encoding: str = AUTO) -> ReadResult:
    """Read every ``fold_k.csv`` of ``folder``, tagging each essay with its fold ``k``.

    A text_id in two fold files is a counted skip (or an error when strict).
    """
    skips = SkipCounter(strict, EllFormatError)
    essays: list[EllEssay] = []
    files: list[FileStats] = []
    for k, path in fold_files(folder).items():
        part, stats = _read_one(path, k, skips, False, encoding)
        essays += part
        files.append(stats)
    essays = _dedupe(essays, files, skips)
    return ReadResult(essays=essays, files=files, skipped=skips.counts,
                      skip_examples=skips.examples)


# ----------------------------------------------------------------------------- splits


def assign_folds(essays: Sequence[EllEssay], num_folds: int = 5,
                 seed: int = 0) -> list[EllEssay]:
    """Copies of ``essays`` with a seeded fold 0..num_folds-1 each (for a plain train.csv).

    Depends only on the set of text_ids and ``seed``, not the input order; fold sizes
    differ by at most one.
    """
    if num_folds < 2:
        raise ValueError(f"num_folds must be at least 2, got {num_folds}")
    ids = sorted(e.text_id for e in essays)
    order = np.random.default_rng([int(seed), 0xE11]).permutation(len(ids))
    fold_of = {ids[j]: rank % num_folds for rank, j in enumerate(order)}
    return [dataclasses.replace(e, fold=fold_of[e.text_id]) for e in essays]


def split_ell(essays: Sequence[EllEssay], test_fold: int = 0, dev_fraction: float = 0.1,
              seed: int = 0) -> dict[str, list[EllEssay]]:
    """train/dev/test: test = fold ``test_fold``, dev = a seeded ``dev_fraction`` of the
    other folds, train = the rest. Every essay lands in exactly one split.

    Deterministic in (the set of essays, ``seed``); each split is in text_id order.
    """
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must lie in [0, 1), got {dev_fraction}")
    folds = {e.fold for e in essays}
    if None in folds:
        raise ValueError("split_ell needs every essay's fold; call assign_folds first")
    if test_fold not in folds:
        raise ValueError(f"test_fold {test_fold} is not among the folds {sorted(folds)}")
    test = sorted((e for e in essays if e.fold == test_fold), key=lambda e: e.text_id)
    rest = sorted((e for e in essays if e.fold != test_fold), key=lambda e: e.text_id)
    rng = np.random.default_rng([int(seed), int(test_fold), 0xDE5])
    n_dev = int(round(dev_fraction * len(rest)))
    dev_rows = set(rng.permutation(len(rest))[:n_dev].tolist())
    splits = {"train": [e for k, e in enumerate(rest) if k not in dev_rows],
              "dev": [e for k, e in enumerate(rest) if k in dev_rows],
              "test": test}
    _check_disjoint(splits, len(essays))
    return splits


def _check_disjoint(splits: dict[str, list[EllEssay]], total: int) -> None:
    owner: dict[str, str] = {}
    for name, group in splits.items():
        for essay in group:
            if essay.text_id in owner:
                raise ValueError(f"text_id {essay.text_id} is in both {owner[essay.text_id]} "
                                 f"and {name} ({essay.source}:{essay.line}); remove the "
                                 "duplicate")
            owner[essay.text_id] = name
    if len(owner) != total:
        raise ValueError(f"the splits hold {len(owner)} essays but {total} were given")


def read_ell_folds(folder: str | os.PathLike, test_fold: int = 0, dev_fraction: float = 0.1,
                   seed: int = 0, *, strict: bool = False) -> dict[str, list[EllEssay]]:
    """Read ``folder``'s fold files and split them (see :func:`split_ell`).

    Use :func:`read_ell_dir` + :func:`split_ell` when the skip counts are wanted too.
    """
    return split_ell(read_ell_dir(folder, strict=strict).essays, test_fold, dev_fraction,
                     seed)
