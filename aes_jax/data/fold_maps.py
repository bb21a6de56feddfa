"""Pair2Score's folds and runs: the original's ``fold_map.json`` (``{text_id: "A".."E"}``,
keys sorted, ``indent=2``, no final newline), read, written and made (seeded, stratified by
the trait score, or from the fold files), and the runs that co-rotate the held-out fold
with the seed. The pair caches built on them: ``pairs.py``."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aes_jax.data.ell import ELL_TRAITS, EllEssay
from aes_jax.data.read_report import DataFormatError

FOLDS = "ABCDE"
RUNS = {1: ("E", 36), 2: ("A", 42), 3: ("B", 48), 4: ("C", 54), 5: ("D", 60)}


# ----------------------------------------------------------------------------- fold maps


def read_fold_map(path: str | os.PathLike) -> dict[str, str]:
    """``{text_id: fold}`` from a ``fold_map.json``; a bad file raises naming the entry."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")

    def no_repeats(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                raise DataFormatError(f"{path}: text_id {key!r} is listed twice; expected "
                                      "each essay once")
            seen[key] = value
        return seen

    try:
        raw = json.loads(text, object_pairs_hook=no_repeats)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}:{e.lineno}:{e.colno}: not JSON ({e.msg}); expected "
                              'a fold map {"text_id": "A", ...}') from None
    if not isinstance(raw, dict):
        raise DataFormatError(f"{path}: a JSON {type(raw).__name__}; expected an object "
                              '{"text_id": "A", ...} mapping each essay to a fold A-E')
    if not raw:
        raise DataFormatError(f"{path}: an empty fold map; expected one entry per essay")
    for key, value in raw.items():
        _check_fold_entry(key, value, str(path))
    return dict(raw)


def _check_fold_entry(key: Any, value: Any, where: str) -> None:
    if not isinstance(key, str) or not key.strip():
        raise DataFormatError(f"{where}: entry {key!r}: expected a non-empty text_id")
    if not isinstance(value, str) or value not in FOLDS:
        raise DataFormatError(f"{where}: entry {key!r}: {value!r} is not a fold; expected "
                              f"one of {', '.join(FOLDS)}")


def write_fold_map(path: str | os.PathLike, fold_map: Mapping[str, str]) -> Path:
    """Write ``fold_map`` as the original does (sorted keys, indent 2); returns the path."""
    path = Path(path)
    for key, value in fold_map.items():
        _check_fold_entry(key, value, "fold map")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(dict(sorted(fold_map.items())), indent=2))
    return path


def make_fold_map(essays: Sequence[EllEssay], trait: str, seed: int,
                  folds: str = FOLDS) -> dict[str, str]:
    """A seeded fold per essay, stratified by its ``trait`` score.

    Essays are sorted by (score, text_id); within each score level a seeded permutation
    deals them to the folds round-robin, the deal continuing across levels, so fold sizes
    differ by at most one and every level with >= len(folds) essays is in every fold.
    """
    scores = trait_scores(essays, trait)
    rng = np.random.default_rng([checked_seed(seed), 0xF01D])
    ordered = sorted(scores, key=lambda t: (scores[t], t))
    out: dict[str, str] = {}
    dealt = 0
    for _, level in itertools.groupby(ordered, key=scores.__getitem__):
        level = list(level)
        for j in rng.permutation(len(level)):
            out[level[j]] = folds[dealt % len(folds)]
            dealt += 1
    return dict(sorted(out.items()))


def fold_map_from_files(essays: Sequence[EllEssay]) -> dict[str, str]:
    """The ArTS fold layout's folds as a fold map: ``fold_k.csv`` -> ``FOLDS[k]``."""
    out = {}
    for e in essays:
        if e.fold is None or not 0 <= e.fold < len(FOLDS):
            raise DataFormatError(f"{e.source}:{e.line}: essay {e.text_id} has fold {e.fold}; "
                                  f"expected fold_0.csv .. fold_{len(FOLDS) - 1}.csv")
        out[e.text_id] = FOLDS[e.fold]
    return dict(sorted(out.items()))


def load_or_make_fold_map(path: str | os.PathLike, essays: Sequence[EllEssay], trait: str,
                          seed: int = 0) -> tuple[dict[str, str], str]:
    """Read ``path`` when it exists; else make a fold map (from the fold files when every
    essay came from one, else :func:`make_fold_map`) and write it there. Returns the map
    and a line saying which happened."""
    path = Path(path)
    if path.exists():
        fold_map = read_fold_map(path)
        return fold_map, f"fold map: read {path} ({len(fold_map)} essays)"
    if essays and all(e.fold is not None for e in essays):
        fold_map, how = fold_map_from_files(essays), "fold_k.csv -> " + FOLDS
    else:
        fold_map, how = make_fold_map(essays, trait, seed), f"stratified by {trait}, seed {seed}"
    write_fold_map(path, fold_map)
    return fold_map, f"fold map: {path} did not exist; wrote it ({len(fold_map)} essays, {how})"


# ----------------------------------------------------------------------------- runs


def run_setup(run: int) -> tuple[str, int]:
    """``(held_out_fold, seed)`` of run 1-5; the other four folds are paired."""
    if isinstance(run, bool) or run not in RUNS:
        raise ValueError(f"run {run!r}: expected one of {', '.join(map(str, RUNS))} (run -> "
                         "held-out fold, seed: " + ", ".join(
                             f"{r} -> {f}, {s}" for r, (f, s) in RUNS.items()) + ")")
    return RUNS[run]


def pair_folds(held_out: str) -> tuple[str, ...]:
    """The paired folds in the original's rotation order (E held out -> A B C D)."""
    k = FOLDS.index(held_out)
    return tuple(FOLDS[(k + 1 + j) % len(FOLDS)] for j in range(len(FOLDS) - 1))


def write_text(path: Path, text: str) -> None:
    """As the original writes its files: UTF-8, LF line ends, nothing appended."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def checked_seed(seed: int) -> int:
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed {seed!r}: expected an integer >= 0")
    return seed


def trait_scores(essays: Sequence[EllEssay], trait: str) -> dict[str, float]:
    if trait not in ELL_TRAITS:
        raise ValueError(f"trait {trait!r}: expected one of {', '.join(ELL_TRAITS)}")
    scores: dict[str, float] = {}
    for e in essays:
        if trait not in e.scores:
            raise DataFormatError(f"{e.source}:{e.line}: essay {e.text_id} has no {trait} "
                                  "score; expected scored essays")
        if e.text_id in scores:
            raise DataFormatError(f"{e.source}:{e.line}: text_id {e.text_id} given twice")
        scores[e.text_id] = float(e.scores[trait])
    return scores
