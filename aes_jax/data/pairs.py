"""Pair2Score's data layer: fold maps, runs, and the pair caches its Siamese LLaMA learns from.

Pair2Score (the PyTorch original) learns, for one ELLIPSE trait, which of two essays is the
better one. Users bring its files, so they are read and written exactly as it writes them:

* ``fold_map.json``: ``{text_id: "A".."E"}`` (read, written and made in ``fold_maps.py``,
  whose names this module re-exports).
* ``run{R}_{trait}.jsonl``: one pair per line, keys in this order::

      {"run": 1, "trait": "grammar", "split": "train", "index": 0, "a": "ID1", "b": "ID2",
       "y": 1, "da": 3.0, "db": 1.0, "d": 2.0}

  ``da``/``db``: the essays' trait scores (1.0-5.0); ``d = |da - db|``; ``y = 1`` when ``a``
  is the better essay, 0 when ``b`` is; ``index`` counts the pairs of a split from 0. The
  original (and :func:`build_pair_cache`) always puts the better essay first with y = 1;
  the reader accepts either order.
* ``run{R}_{trait}_meta.json`` (``indent=2``, no final newline): ``run``, ``trait``, ``seed``,
  ``target_usage``, ``min_score_gap``, ``splits: {train|val|test: [text_id, ...]}`` (each
  pool's essays, disjoint), the original's ``counts_requested``/``counts_actual``/
  ``usage_stats``, and ours: ``size``, ``held_out_fold``, ``pair_folds``, ``soft_cap`` and
  ``stats`` (per split: pairs, essays, usage mean/min/max, fallbacks, gap histogram).

A run (:data:`RUNS`) fixes the held-out fold and the seed together; the held-out fold is
never paired (the absolute-scoring stage tests on it). The builder's algorithm follows the
original's ``generate_pairs.py``; see :func:`build_pair_cache`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aes_jax.data.ell import EllEssay, read_ell, read_ell_dir
from aes_jax.data.fold_maps import (FOLDS, RUNS, fold_map_from_files, is_int,
                                     load_or_make_fold_map, make_fold_map, pair_folds,
                                     read_fold_map, run_setup, trait_scores, write_fold_map,
                                     write_text)
from aes_jax.data.pair_sampling import sample_pool
from aes_jax.data.read_report import DataFormatError, summary

__all__ = ["FOLDS", "RUNS", "SPLITS", "SIZES", "Pair", "PairCache", "read_fold_map",
           "write_fold_map", "make_fold_map", "fold_map_from_files", "load_or_make_fold_map",
           "run_setup", "pair_folds", "cache_paths", "write_pair_cache", "read_pair_cache",
           "build_pair_cache", "read_essays_for_pairs", "stats_lines"]

SPLITS = ("train", "val", "test")
SIZES = ("large", "small", "mini")
PAIR_KEYS = ("run", "trait", "split", "index", "a", "b", "y", "da", "db", "d")
META_KEYS = ("run", "trait", "seed", "target_usage", "min_score_gap", "splits")
VAL_FRACTION = TEST_FRACTION = 0.1  # of the training folds' essays; train gets the rest
SMALL_FRACTION = 0.5
D_TOLERANCE = 1e-6
_EPS = 1e-9


@dataclasses.dataclass(frozen=True)
class Pair:
    run: int
    trait: str
    split: str   # train | val | test
    index: int   # position within its split, from 0
    a: str       # text_id
    b: str
    y: int       # 1: a is better, 0: b is better
    da: float    # a's trait score, 1.0-5.0
    db: float
    d: float     # |da - db|


@dataclasses.dataclass
class PairCache:
    pairs: list[Pair]
    meta: dict[str, Any]

    def split(self, name: str) -> list[Pair]:
        if name not in SPLITS:
            raise ValueError(f"no split {name!r}; expected one of {', '.join(SPLITS)}")
        return [p for p in self.pairs if p.split == name]


# ----------------------------------------------------------------------------- cache files


def cache_paths(directory: str | os.PathLike, run: int, trait: str) -> tuple[Path, Path]:
    """``(run{R}_{trait}.jsonl, run{R}_{trait}_meta.json)`` in ``directory``."""
    directory = Path(directory)
    return directory / f"run{run}_{trait}.jsonl", directory / f"run{run}_{trait}_meta.json"


def write_pair_cache(out_dir: str | os.PathLike, cache: PairCache) -> tuple[Path, Path]:
    """Write the cache's two files as the original does; returns (jsonl, meta) paths."""
    jsonl, meta = cache_paths(out_dir, cache.meta["run"], cache.meta["trait"])
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    write_text(jsonl, "".join(json.dumps({k: getattr(p, k) for k in PAIR_KEYS}) + "\n"
                               for p in cache.pairs))
    write_text(meta, json.dumps(cache.meta, indent=2))
    return jsonl, meta


def read_pair_cache(path: str | os.PathLike) -> PairCache:
    """Read ``run{R}_{trait}.jsonl`` and the ``_meta.json`` beside it, checking every line.

    A line that is not a pair of the meta's run, trait and splits raises
    :class:`DataFormatError` naming ``file:line`` and what was expected.
    """
    path = Path(path)
    if not path.name.endswith(".jsonl"):
        raise DataFormatError(f"{path}: expected a pair file run{{R}}_{{trait}}.jsonl")
    meta_path = path.with_name(path.name[:-len(".jsonl")] + "_meta.json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no such file; the pair file {path.name} needs "
                                f"its meta file {meta_path.name} beside it")
    meta = _read_meta(meta_path)
    owner: dict[str, str] = {}
    for split in SPLITS:
        for text_id in meta["splits"][split]:
            if owner.get(text_id, split) != split:
                raise DataFormatError(f"{meta_path}: text_id {text_id} is in both the "
                                      f"{owner[text_id]} and {split} splits; expected "
                                      "disjoint splits")
            owner[text_id] = split
    with open(path, encoding="utf-8") as f:
        pairs = [_parse_pair(line, f"{path}:{n}", meta, owner, meta_path.name)
                 for n, line in enumerate(f, 1)]
    return PairCache(pairs=pairs, meta=meta)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}:{e.lineno}:{e.colno}: not JSON ({e.msg})") from None
    if not isinstance(meta, dict):
        raise DataFormatError(f"{path}: expected a JSON object with {', '.join(META_KEYS)}")
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise DataFormatError(f"{path}: missing {', '.join(missing)}; expected the keys "
                              f"{', '.join(META_KEYS)}")
    splits = meta["splits"]
    if (not isinstance(splits, dict) or set(splits) != set(SPLITS)
            or not all(isinstance(ids, list) and all(isinstance(t, str) for t in ids)
                       for ids in splits.values())):
        raise DataFormatError(f"{path}: splits: expected {{train: [text_id, ...], val: [...], "
                              "test: [...]}")
    return meta


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)
            and bool(np.isfinite(v)))


def _parse_pair(line: str, where: str, meta: dict[str, Any], owner: dict[str, str],
                meta_name: str) -> Pair:
    def bad(what: str) -> DataFormatError:
        return DataFormatError(f"{where}: {what}")

    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise bad(f"not JSON ({e.msg} at column {e.colno}); expected one pair object a "
                  "line") from None
    if not isinstance(rec, dict):
        raise bad(f"a JSON {type(rec).__name__}; expected a pair object")
    missing = [k for k in PAIR_KEYS if k not in rec]
    if missing:
        raise bad(f"missing {', '.join(missing)}; expected the keys {', '.join(PAIR_KEYS)}")
    if rec["split"] not in SPLITS:
        raise bad(f"split {rec['split']!r}; expected one of {', '.join(SPLITS)}")
    if rec["run"] != meta["run"] or rec["trait"] != meta["trait"]:
        raise bad(f"run {rec['run']!r}, trait {rec['trait']!r}; expected run {meta['run']!r}, "
                  f"trait {meta['trait']!r} as in {meta_name}")
    if not is_int(rec["index"]) or rec["index"] < 0:
        raise bad(f"index {rec['index']!r}; expected an integer >= 0")
    a, b = rec["a"], rec["b"]
    if not (isinstance(a, str) and a and isinstance(b, str) and b) or a == b:
        raise bad(f"a {a!r}, b {b!r}; expected two different text_ids")
    if not is_int(rec["y"]) or rec["y"] not in (0, 1):
        raise bad(f"y {rec['y']!r}; expected 1 (a is better) or 0 (b is better)")
    for key in ("da", "db", "d"):
        if not _is_number(rec[key]):
            raise bad(f"{key} {rec[key]!r}; expected a number")
    da, db, d, y = float(rec["da"]), float(rec["db"]), float(rec["d"]), rec["y"]
    if not (1.0 <= da <= 5.0 and 1.0 <= db <= 5.0):
        raise bad(f"da {da}, db {db}; expected trait scores in 1.0-5.0")
    if abs(d - abs(da - db)) > D_TOLERANCE:
        raise bad(f"d {d} but |da - db| = {abs(da - db)}; expected d == |da - db|")
    if da != db and y != int(da > db):
        raise bad(f"y {y} but da {da}, db {db}; expected y {int(da > db)} (1 when a is "
                  "better, 0 when b is)")
    for key, text_id in (("a", a), ("b", b)):
        if owner.get(text_id) != rec["split"]:
            place = (f"in the {owner[text_id]} split" if text_id in owner
                     else "in no split")
            raise bad(f"{key} {text_id} is {place} of {meta_name}; expected an essay of the "
                      f"{rec['split']} split")
    return Pair(run=rec["run"], trait=rec["trait"], split=rec["split"], index=rec["index"],
                a=a, b=b, y=y, da=da, db=db, d=d)


# ----------------------------------------------------------------------------- building


def _pools(ids: list[str], seed: int, halve: bool) -> dict[str, list[str]]:
    """The original's essay split, before pairing: val and test a seeded 10% each."""
    order = [ids[k] for k in np.random.default_rng([seed, 0x5B1]).permutation(len(ids))]
    n_val, n_test = round(len(ids) * VAL_FRACTION), round(len(ids) * TEST_FRACTION)
    pools = {"val": order[:n_val], "test": order[n_val:n_val + n_test],
             "train": order[n_val + n_test:]}
    if halve:  # the original keeps at least 2 essays of a pool, so it can still pair
        rng = np.random.default_rng([seed, 0x5A11])
        for split in SPLITS:
            group = pools[split]
            keep = min(len(group), max(2, round(len(group) * SMALL_FRACTION)))
            pools[split] = [group[k] for k in rng.permutation(len(group))[:keep]]
    return {split: sorted(pools[split]) for split in SPLITS}


def _pair_pool(ids: list[str], scores: Mapping[str, float], rng: np.random.Generator,
               min_gap: float, target: int, cap: int) -> tuple[list[tuple[str, str]], int]:
    """(better, worse) text_id pairs of one pool in the order chosen, and its fallbacks."""
    values = np.array([scores[t] for t in ids])
    chosen, fallbacks = sample_pool(values, rng, min_gap, target, cap)
    # The original's orientation: the better essay first (on a tie, the one paired).
    return [(ids[i], ids[j]) if values[i] >= values[j] else (ids[j], ids[i])
            for i, j in chosen], fallbacks


def build_pair_cache(essays: Sequence[EllEssay], fold_map: Mapping[str, str], trait: str,
                     run: int, size: str = "small", *, min_score_gap: float = 1.0,
                     target_usage: int = 5, soft_cap: int = 6,
                     mini_sizes: Sequence[int] = (100, 100, 200)) -> PairCache:
    """Pairs of one trait and run, by the original's algorithm.

    The held-out fold's essays are dropped; the rest are split 80/10/10 into train/val/test
    pools (seeded by the run's seed) before any pairing. ``size``: ``large`` pairs all of
    them, ``small`` a seeded half of each pool, ``mini`` the small pools' pairs subsampled
    to ``mini_sizes`` (train, val, test; fewer when fewer exist, said in the stats' notes).
    Per pool (:func:`~aes_jax.data.pair_sampling.sample_pool`), a coverage pass pairs
    every essay at least once, with a random low-usage partner at gap >= ``min_score_gap``
    (else the nearest nonzero gap: a counted fallback), then a fill pass samples unseen
    pairs by gap bucket (>= 3, [2, 3), [min gap, 2)) until each essay has
    ``target_usage`` pairs where the scores allow, never past ``soft_cap``. Each pair has
    the better essay first and y = 1. Deterministic in (essays, fold map, trait, run);
    the pools do not depend on the trait, so every trait of a run splits alike.
    """
    held_out, seed = run_setup(run)
    if size not in SIZES:
        raise ValueError(f"size {size!r}: expected one of {', '.join(SIZES)}")
    if not (is_int(target_usage) and is_int(soft_cap) and 1 <= target_usage <= soft_cap):
        raise ValueError(f"target_usage {target_usage!r}, soft_cap {soft_cap!r}: expected "
                         "integers with 1 <= target_usage <= soft_cap")
    if not 0 < min_score_gap <= 4:
        raise ValueError(f"min_score_gap {min_score_gap!r}: expected a gap in (0, 4]")
    if len(mini_sizes) != 3 or not all(is_int(k) and k >= 0 for k in mini_sizes):
        raise ValueError(f"mini_sizes {mini_sizes!r}: expected 3 pair counts (train, val, "
                         "test)")
    scores = trait_scores(essays, trait)
    unmapped = sorted(t for t in scores if t not in fold_map)
    if unmapped:
        raise DataFormatError(f"{len(unmapped)} of {len(scores)} essays have no fold in the "
                              f"fold map (e.g. {', '.join(unmapped[:3])}); expected every "
                              "essay of the input listed")
    training = sorted(t for t in scores if fold_map[t] != held_out)
    pools = _pools(training, seed, halve=size != "large")
    base = [seed, zlib.crc32(trait.encode())]
    pairs: list[Pair] = []
    fallbacks: dict[str, int] = {}
    for k, split in enumerate(SPLITS):
        found, fallbacks[split] = _pair_pool(pools[split], scores,
                                             np.random.default_rng(base + [k]),
                                             float(min_score_gap), target_usage, soft_cap)
        pairs += [Pair(run, trait, split, n, a, b, 1, scores[a], scores[b],
                       abs(scores[a] - scores[b])) for n, (a, b) in enumerate(found)]
    _check_built(pairs, pools, fold_map, held_out, float(min_score_gap), fallbacks)
    notes = []
    requested = {s: round(len(pools[s]) * target_usage / 2) for s in SPLITS}
    if size == "mini":
        pairs, notes = _subsample(pairs, dict(zip(SPLITS, mini_sizes)),
                                  np.random.default_rng(base + [0x313]))
        requested = dict(zip(SPLITS, mini_sizes))
    stats = _stats(pairs, pools, float(min_score_gap), target_usage)
    stats["notes"] = notes
    meta = {"run": run, "trait": trait, "seed": seed, "target_usage": target_usage,
            "min_score_gap": float(min_score_gap), "pair_folds": list(pair_folds(held_out)),
            "splits": pools, "counts_requested": requested,
            "counts_actual": {s: stats[s]["pairs"] for s in SPLITS},
            "usage_stats": {s: {"per_essay_limit": soft_cap, "max_usage": stats[s]["usage_max"],
                                "min_usage": stats[s]["usage_min"],
                                "mean_usage": stats[s]["usage_mean"]} for s in SPLITS},
            "size": size, "held_out_fold": held_out, "soft_cap": soft_cap, "stats": stats}
    return PairCache(pairs=pairs, meta=meta)


def _subsample(pairs: list[Pair], sizes: dict[str, int],
               rng: np.random.Generator) -> tuple[list[Pair], list[str]]:
    out, notes = [], []
    for split in SPLITS:
        group = [p for p in pairs if p.split == split]
        if len(group) <= sizes[split]:
            keep = range(len(group))
            if len(group) < sizes[split]:
                notes.append(f"mini: {split} has {len(group)} pairs, fewer than the "
                             f"{sizes[split]} asked; kept them all")
        else:
            keep = sorted(rng.choice(len(group), sizes[split], replace=False).tolist())
        out += [dataclasses.replace(group[k], index=n) for n, k in enumerate(keep)]
    return out, notes


def _check_built(pairs: list[Pair], pools: dict[str, list[str]], fold_map: Mapping[str, str],
                 held_out: str, min_gap: float, fallbacks: dict[str, int]) -> None:
    """What must never happen, checked on every build (not with ``assert``: -O drops it).
    The stats count fallbacks as pairs below the gap; that must be what the passes did."""
    owner = {t: s for s in SPLITS for t in pools[s]}
    for split in SPLITS:
        below = sum(p.d < min_gap - _EPS for p in pairs if p.split == split)
        if below != fallbacks[split]:
            raise AssertionError(f"{split}: {below} pairs below the gap, {fallbacks[split]} "
                                 "fallbacks")
    seen = set()
    for p in pairs:
        if fold_map[p.a] == held_out or fold_map[p.b] == held_out:
            raise AssertionError(f"pair {p.a}-{p.b} uses the held-out fold {held_out}")
        if owner[p.a] != p.split or owner[p.b] != p.split:
            raise AssertionError(f"pair {p.a}-{p.b} crosses pools ({p.split})")
        key = (p.split, min(p.a, p.b), max(p.a, p.b))
        if key in seen:
            raise AssertionError(f"pair {p.a}-{p.b} repeated in {p.split}")
        seen.add(key)


def _stats(pairs: Sequence[Pair], splits: Mapping[str, list[str]], min_gap: float,
           target: int) -> dict[str, Any]:
    """Per split: pairs, essays (in the pool) and essays paired, usage mean/min/max and how
    many are below the target, fallbacks (pairs at d < min_gap), gaps in 0.5 steps."""
    out: dict[str, Any] = {}
    for split in SPLITS:
        usage = dict.fromkeys(splits[split], 0)
        group = [p for p in pairs if p.split == split]
        for p in group:
            usage[p.a] = usage.get(p.a, 0) + 1
            usage[p.b] = usage.get(p.b, 0) + 1
        u = np.array(list(usage.values()), dtype=np.int64)
        gaps = Counter(round(p.d * 2) / 2 for p in group)
        out[split] = {
            "pairs": len(group), "essays": len(splits[split]),
            "essays_paired": int((u > 0).sum()),
            "usage_mean": round(float(u.mean()), 4) if u.size else 0.0,
            "usage_min": int(u.min()) if u.size else 0,
            "usage_max": int(u.max()) if u.size else 0,
            "below_target": int((u < target).sum()),
            "fallbacks": sum(p.d < min_gap - _EPS for p in group),
            "gap_histogram": {f"{g:.1f}": n for g, n in sorted(gaps.items())}}
    return out


# ----------------------------------------------------------------------------- input, report


def read_essays_for_pairs(input: str | os.PathLike) -> tuple[list[EllEssay], dict[str, Any]]:
    """Essays of a Kaggle ``train.csv`` or an ArTS ``fold_k.csv`` folder, and the read's
    :func:`~aes_jax.data.read_report.summary` (rows skipped per reason, with examples;
    ``layouts``) so skipped rows are reported, not dropped silently."""
    path = Path(input)
    if path.is_dir():
        result = read_ell_dir(path)
    elif path.is_file():
        result = read_ell(path)
    else:
        raise FileNotFoundError(f"{path}: no such file or folder; expected an ELLIPSE "
                                "train.csv or a folder of fold_k.csv files")
    if not result.essays:
        raise DataFormatError(f"{path}: no essay could be read; expected scored ELLIPSE rows")
    report = summary(result)
    report["layouts"] = result.layouts
    return list(result.essays), report


def stats_lines(cache: PairCache) -> list[str]:
    """A short human summary of a cache (stats recomputed when its meta has none)."""
    meta = cache.meta
    stats = meta.get("stats") or _stats(cache.pairs, meta["splits"],
                                        float(meta["min_score_gap"]), int(meta["target_usage"]))
    held = meta.get("held_out_fold", meta.get("heldout_fold", "?"))
    lines = [f"run {meta['run']} {meta['trait']} ({meta.get('size', 'size unknown')}): "
             f"held-out fold {held} never paired, seed {meta['seed']}, "
             f"min gap {meta['min_score_gap']}, target usage {meta['target_usage']}"
             + (f", soft cap {meta['soft_cap']}" if "soft_cap" in meta else "")]
    gaps: Counter = Counter()
    for split in SPLITS:
        s = stats[split]
        gaps.update(s["gap_histogram"])
        lines.append(f"  {split:>5}: {s['pairs']} pairs, {s['essays']} essays "
                     f"({s['essays_paired']} paired); usage mean {s['usage_mean']:.2f} "
                     f"min {s['usage_min']} max {s['usage_max']}, {s['below_target']} below "
                     f"target; fallbacks {s['fallbacks']}")
    lines.append("  gaps: " + ", ".join(f"{g} x{n}" for g, n in
                                        sorted(gaps.items(), key=lambda kv: float(kv[0]))))
    lines += [f"  note: {note}" for note in stats.get("notes", [])]
    return lines
