"""train/dev/test assignment of ASAP essays: stratified by score, from a split file, or
kept from the ASAP++ file names.

Shared by the TRM-AES records (:mod:`aes_jax.data.asap_records`) and the LLaMA-AES
instruction data (:mod:`aes_jax.data.mtl_dataset`), so both split the same essays alike.
"""

from __future__ import annotations

import collections
import csv
import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aes_jax.data.asap import SPLITS, AsapFormatError, Essay, parse_int

__all__ = ["DEFAULT_SPLIT", "parse_split_fractions", "stratified_split", "read_split_file",
           "assign_splits"]

DEFAULT_SPLIT = (0.6, 0.2, 0.2)


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
            essay_id = parse_int(cells[0])
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


def assign_splits(essays: Sequence[Essay], *,
                  fractions: Sequence[float] | None = None, seed: int = 0,
                  split_file: str | os.PathLike | None = None
                  ) -> tuple[dict[int, str], dict[str, Any]]:
    """essay_id -> split, and the rule used (for the manifest).

    ``split_file`` wins when given (essays it does not list are left out of the mapping).
    Otherwise, without ``fractions``, the essays keep the split of their ASAP++ file names
    (train/dev/test.tsv) when they all have one; else they are split stratified by score
    within each prompt, by ``fractions`` or :data:`DEFAULT_SPLIT`, seeded by ``seed``.
    """
    if split_file is not None:
        table = read_split_file(split_file)
        return ({e.essay_id: table[e.essay_id] for e in essays if e.essay_id in table},
                {"rule": "split_file", "path": str(split_file),
                 "sha256": hashlib.sha256(Path(split_file).read_bytes()).hexdigest()})
    given = {e.split for e in essays}
    if fractions is None and None not in given:
        return ({e.essay_id: e.split for e in essays},
                {"rule": "input files", "detail": "train/dev/test from the traits-layout "
                 "file names"})
    if fractions is None and given != {None}:
        files = sorted({e.source for e in essays if e.split is None})
        raise ValueError(f"some inputs carry a split in their name (train/dev/test.tsv) and "
                         f"others do not ({files[:3]}); pass split fractions or a split file")
    fractions = fractions or DEFAULT_SPLIT
    return (stratified_split(essays, fractions, seed),
            {"rule": "stratified", "fractions": list(fractions), "seed": int(seed),
             "strata": "score within prompt"})
