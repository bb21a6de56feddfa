"""Pair2Score options, read from the config and validated once (the flags keep their
names: --config.variant, --config.trait, --config.relative.epochs, --config.data.input ...).

Two stages, each trained by the one loop with the shared engine settings of the config
updated by its own block (`relative` = Stage 1, pairs; `absolute` = Stage 2, scores):

* ``epochs`` / ``evals_per_epoch``: the stage's length and evaluation cadence in passes
  over its training records (pairs, or essays in the in-batch mode and in Stage 2);
  ``total_steps`` > 0 overrides the epochs. A checkpoint is written at every evaluation.
* ``early_stop_patience``: evaluations without a new best (Stage 1: val pair accuracy;
  Stage 2: val QWK) before the stage stops, as the original's patience.
* ``global_batch_size``: pairs per step (both essays of a pair go through one batched
  forward, so 2x essays), or essays per step in the in-batch mode and in Stage 2.

Variants (what Stage 2 starts from):
  baseline           no Stage 1; a fresh LoRA adapter + head.
  warm_start         the Stage-1 adapter keeps training, with a fresh head.
  warm_start_frozen  the Stage-1 adapter frozen, only the head trains (what the original
                     does: PEFT loads an adapter with is_trainable=False by default).
  stack              the Stage-1 adapter merged into the base, a fresh adapter on top.
  fusion             the frozen Stage-1 pooled embedding concatenated with the Stage-2 one
                     before the head.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from aes_jax.data.ell import ELL_TRAITS

VARIANTS = ("baseline", "warm_start", "warm_start_frozen", "stack", "fusion")
SIZES = ("large", "small", "mini")
PAIR_MODES = ("cached", "in_batch")
STAGE_ENGINE_KEYS = ("total_steps", "global_batch_size", "eval_batch_size", "log_every",
                     "keep_checkpoints", "early_stop_patience", "grad_accum_steps")


@dataclasses.dataclass(frozen=True)
class PairData:
    input: str = ""  # Kaggle ELLIPSE train.csv or a fold_k.csv folder; "" = the demo corpus
    fold_map: str = ""  # the original's fold_map.json; "" = written beside the pair cache
    fold_map_seed: int = 0  # for a fold map written here (stratified by the trait score)
    demo_essays: int = 300
    seq_len: int = 512  # tokens per essay (longer essays are cut, counted)
    eval_split: str = "val"  # Stage 2's split for evaluations: val | test (the held-out fold)

    def __post_init__(self):
        if self.seq_len < 8:
            raise ValueError(f"config.data.seq_len={self.seq_len}: expected >= 8")
        if self.eval_split not in ("val", "test"):
            raise ValueError(f"config.data.eval_split={self.eval_split!r}: expected val "
                             "(the Stage-1 val pool) or test (the held-out fold)")

    @property
    def demo(self) -> bool:
        return not self.input


@dataclasses.dataclass(frozen=True)
class StageOptions:
    """One stage's length, cadence and optimizer (merged into the engine settings)."""

    epochs: float = 1.0
    evals_per_epoch: int = 1
    total_steps: int = 0  # > 0: this many steps, whatever the epochs
    global_batch_size: int = 8
    eval_batch_size: int = 16
    log_every: int = 10
    keep_checkpoints: int = 1
    early_stop_patience: int = 0
    grad_accum_steps: int = 1
    optimizer: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.total_steps <= 0 and not self.epochs > 0:
            raise ValueError(f"epochs={self.epochs}: expected > 0 (or total_steps > 0)")
        if self.evals_per_epoch < 1:
            raise ValueError(f"evals_per_epoch={self.evals_per_epoch}: expected >= 1")

    def engine(self, shared: Mapping[str, Any], records: int) -> dict[str, Any]:
        """The engine settings of this stage for `records` training records per epoch."""
        steps_per_epoch = max(1, records // self.global_batch_size)
        total = self.total_steps or max(1, math.ceil(self.epochs * steps_per_epoch))
        every = max(1, min(total, steps_per_epoch // self.evals_per_epoch))
        values = {**shared, **{k: getattr(self, k) for k in STAGE_ENGINE_KEYS}}
        values.update(total_steps=total, eval_every=every, checkpoint_every=every,
                      log_every=max(1, min(self.log_every, every)),
                      optimizer={**dict(shared.get("optimizer", {})), **dict(self.optimizer)})
        return values


@dataclasses.dataclass(frozen=True)
class Pair2ScoreOptions:
    trait: str = "grammar"
    run: int = 1  # 1..5: held-out fold E, A, B, C, D with seeds 36, 42, 48, 54, 60
    variant: str = "warm_start"
    size: str = "small"  # pair cache size: large | small | mini
    pair_mode: str = "cached"  # cached (the pair cache) | in_batch (every pair in a batch)
    pairs_file: str = ""  # an existing run{R}_{trait}.jsonl; "" = built into WORKDIR/pairs
    min_score_gap: float = 1.0
    target_usage: int = 5
    soft_cap: int = 6
    loss: str = "l1"  # Stage 2: l1 (the original) | mse
    qwk_binning: str = "round"  # predictions onto the 0.5 grid: round | floor (the original)
    head_bias: str = "torch"  # Stage-2 head output bias: torch (nn.Linear init, the original)
    #                           | train_mean (the Stage-2 train essays' mean score)
    data: PairData = PairData()
    relative: StageOptions = StageOptions()
    absolute: StageOptions = StageOptions()

    def __post_init__(self):
        checks = [("trait", self.trait, ELL_TRAITS), ("variant", self.variant, VARIANTS),
                  ("size", self.size, SIZES), ("pair_mode", self.pair_mode, PAIR_MODES),
                  ("loss", self.loss, ("l1", "mse")),
                  ("qwk_binning", self.qwk_binning, ("round", "floor")),
                  ("head_bias", self.head_bias, ("torch", "train_mean"))]
        for name, value, allowed in checks:
            if value not in allowed:
                raise ValueError(f"config.{name}={value!r}: expected one of {', '.join(allowed)}")
        if self.run not in range(1, 6):
            raise ValueError(f"config.run={self.run}: expected 1-5 (held-out fold E, A, B, C, "
                             "D)")
        if self.min_score_gap <= 0:
            raise ValueError(f"config.min_score_gap={self.min_score_gap}: expected > 0")

    @property
    def needs_stage1(self) -> bool:
        return self.variant != "baseline"

    @classmethod
    def from_config(cls, config: Any) -> "Pair2ScoreOptions":
        names = {f.name for f in dataclasses.fields(cls)} - {"data", "relative", "absolute"}
        values = {k: config[k] for k in names if k in config}
        if "data" in config:
            values["data"] = PairData(**_known(PairData, config["data"], "data"))
        for stage in ("relative", "absolute"):
            if stage in config:
                block = _known(StageOptions, config[stage], stage)
                if "optimizer" in block:
                    block["optimizer"] = dict(block["optimizer"])
                try:
                    values[stage] = StageOptions(**block)
                except ValueError as e:
                    raise ValueError(f"config.{stage}: {e}") from None
        return cls(**values)


def _known(cls: type, block: Any, name: str) -> dict[str, Any]:
    fields = {f.name for f in dataclasses.fields(cls)}
    values = dict(block)
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"config.{name}: unknown fields {unknown} (known: {sorted(fields)})")
    return values
