"""What both Pair2Score stages read: the essays, the fold map, the pair cache and the essays'
token arrays, and the records the loop batches.

Splits of a run (held-out fold and seed from `pairs.run_setup(run)`):
  Stage 1   the pair cache's train / val / test pairs (pools of the training folds split
            80/10/10 before pairing; `size` subsamples them).
  Stage 2   train = every essay of the four training folds outside the Stage-1 val pool
            (all of them, whatever the pair cache's size), val = the Stage-1 val pool,
            test = the held-out fold (the figures of `absolute_metrics.json`).
Every essay is tokenised once (`tokens`) and cut to `data.seq_len` tokens (counted);
records index into that table, so a pair record costs two row lookups.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aes_jax.data import mtl_demo, pairs
from aes_jax.data.ell import EllEssay
from aes_jax.tasks.pair2score_options import Pair2ScoreOptions

log = logging.getLogger(__name__)

DEMO_CSV = "demo_ell_train.csv"


@dataclasses.dataclass(frozen=True)
class EssayTokens:
    ids: np.ndarray  # [N, T] int32, right-padded
    mask: np.ndarray  # [N, T] bool
    truncated: int  # essays longer than T tokens, cut at T


def tokenize(texts: Sequence[str], tokenizer: Any, seq_len: int) -> EssayTokens:
    ids = np.full((len(texts), seq_len), tokenizer.pad_id, np.int32)
    mask = np.zeros((len(texts), seq_len), bool)
    truncated = 0
    for row, text in enumerate(texts):
        tokens = tokenizer.encode(text)
        truncated += len(tokens) > seq_len
        tokens = tokens[:seq_len]
        ids[row, :len(tokens)] = tokens
        mask[row, :len(tokens)] = True
    return EssayTokens(ids, mask, truncated)


class PairStageData:
    """Built cheaply (paths only); files are read on first use."""

    def __init__(self, options: Pair2ScoreOptions, workdir: str | Path, tokenizer: Any):
        self.options = options
        self.tokenizer = tokenizer
        self.dir = Path(workdir) / "pairs"
        d = options.data
        self.input = Path(d.input) if d.input else self.dir / DEMO_CSV
        self.fold_map_path = Path(d.fold_map) if d.fold_map else self.dir / "fold_map.json"
        self.held_out, self.seed = pairs.run_setup(options.run)
        if options.pairs_file:
            self.pairs_path = Path(options.pairs_file)
        else:
            self.pairs_path = pairs.cache_paths(self.dir, options.run, options.trait)[0]

    # ------------------------------------------------------------------ files
    def prepare(self) -> list[str]:
        """Writes what the config leaves to us (demo corpus, fold map, pair cache) unless it
        is there already; returns lines saying what was written."""
        o, said = self.options, []
        if o.data.demo and not self.input.is_file():
            mtl_demo.write_demo_ell_csv(self.input, o.data.demo_essays, seed=0)
            said.append(f"wrote the SYNTHETIC demo corpus {self.input} "
                        f"({o.data.demo_essays} essays in the Kaggle ELLIPSE layout)")
        if not self.fold_map_path.is_file():
            fold_map = (pairs.fold_map_from_files(self.essays) if self.input.is_dir()
                        else pairs.make_fold_map(self.essays, o.trait, o.data.fold_map_seed))
            pairs.write_fold_map(self.fold_map_path, fold_map)
            said.append(f"wrote the fold map {self.fold_map_path}")
        if not self.pairs_path.is_file():
            if o.pairs_file:
                raise FileNotFoundError(f"config.pairs_file={o.pairs_file}: no such file")
            cache = pairs.build_pair_cache(self.essays, self.fold_map, o.trait, o.run, o.size,
                                           min_score_gap=o.min_score_gap,
                                           target_usage=o.target_usage, soft_cap=o.soft_cap)
            written = pairs.write_pair_cache(self.dir, cache)
            said += pairs.stats_lines(cache)
            said.append(f"wrote the pair cache {written[0]} (+ {written[1].name})")
        return said

    @functools.cached_property
    def essays(self) -> list[EllEssay]:
        if not self.input.exists():
            raise FileNotFoundError(f"config.data.input={self.input}: no such file or folder")
        essays, report = pairs.read_essays_for_pairs(self.input)
        skipped = report.get("skipped") or {}
        if skipped:  # counted and shown, never dropped silently
            log.warning("%s: skipped rows %s", self.input, skipped)
        return essays

    @functools.cached_property
    def fold_map(self) -> dict[str, str]:
        return pairs.read_fold_map(self.fold_map_path)

    @functools.cached_property
    def cache(self) -> pairs.PairCache:
        cache = pairs.read_pair_cache(self.pairs_path)
        o, meta = self.options, cache.meta
        if (meta.get("run"), meta.get("trait")) != (o.run, o.trait):
            raise ValueError(f"{self.pairs_path}: a pair cache of run {meta.get('run')} trait "
                             f"{meta.get('trait')!r}, but the config trains run {o.run} trait "
                             f"{o.trait!r}")
        unknown = sorted({i for p in cache.pairs for i in (p.a, p.b)} - set(self.row_of))
        if unknown:
            raise ValueError(f"{self.pairs_path}: {len(unknown)} essay ids not in "
                             f"{self.input} (e.g. {unknown[:3]})")
        held = sorted({i for p in cache.pairs for i in (p.a, p.b)
                       if self.fold_map.get(i) == self.held_out})
        if held:
            raise ValueError(f"{self.pairs_path}: pairs use {len(held)} essays of the held-out "
                             f"fold {self.held_out} of run {o.run} (e.g. {held[:3]}): the "
                             "cache does not belong to this fold map")
        return cache

    @functools.cached_property
    def row_of(self) -> dict[str, int]:
        return {e.text_id: k for k, e in enumerate(self.essays)}

    @functools.cached_property
    def scores(self) -> np.ndarray:
        return np.asarray([e.scores[self.options.trait] for e in self.essays], np.float32)

    @functools.cached_property
    def tokens(self) -> EssayTokens:
        tokens = tokenize([e.text for e in self.essays], self.tokenizer,
                          self.options.data.seq_len)
        if tokens.truncated:
            log.warning("%d of %d essays cut to seq_len=%d tokens", tokens.truncated,
                        len(self.essays), self.options.data.seq_len)
        return tokens

    # ------------------------------------------------------------------ splits
    def pair_split(self, split: str) -> list[pairs.Pair]:
        return self.cache.split(split)

    def stage1_pool(self, split: str) -> list[int]:
        """Rows of a Stage-1 pool's essays (the in-batch mode trains on the train pool)."""
        return [self.row_of[i] for i in self.cache.meta["splits"][split]]

    @functools.cached_property
    def stage2_splits(self) -> dict[str, list[int]]:
        missing = sorted(set(self.row_of) - set(self.fold_map))
        if missing:
            raise ValueError(f"{self.fold_map_path}: no fold for {len(missing)} essays of "
                             f"{self.input} (e.g. {missing[:3]})")
        val = set(self.cache.meta["splits"]["val"])
        out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
        for row, essay in enumerate(self.essays):
            if self.fold_map[essay.text_id] == self.held_out:
                out["test"].append(row)
            else:
                out["val" if essay.text_id in val else "train"].append(row)
        return out

    # ------------------------------------------------------------------ records
    def pair_record(self, pair: pairs.Pair) -> dict[str, np.ndarray]:
        """Both essays of a pair: ids / mask [2, T] (a first), y = 1 when a is better."""
        rows = [self.row_of[pair.a], self.row_of[pair.b]]
        return {"ids": self.tokens.ids[rows], "mask": self.tokens.mask[rows],
                "y": np.float32(pair.y)}

    def essay_record(self, row: int) -> dict[str, np.ndarray]:
        return {"ids": self.tokens.ids[row], "mask": self.tokens.mask[row],
                "score": self.scores[row], "row": np.int32(row)}
