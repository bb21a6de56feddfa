"""Pair2Score Stage 2: the trait's absolute score (1.0-5.0) from the pooled state, with the
original's head Linear(H -> H/2), ReLU, Linear(-> 1) and an L1 loss (MSE as an option).

What trains and what is frozen, per variant (the Stage-1 adapter is read from the best
checkpoint of WORKDIR/relative, chosen on val pair accuracy):
  baseline           trainable {lora: fresh, head}          frozen {params}
  warm_start         trainable {lora: Stage 1, head}        frozen {params}
  warm_start_frozen  trainable {head}                       frozen {params, lora: Stage 1}
  stack              trainable {lora: fresh, head}          frozen {params: base + Stage 1 merged}
  fusion             trainable {lora: fresh, head (2H in)}  frozen {params, stage1_lora}
Fusion runs the backbone twice per batch (with each adapter); the Stage-1 embedding is
computed without dropout and under stop_gradient, then concatenated before the head.

Metrics (`summarize`): predictions clipped to 1.0-5.0; MAE and RMSE on the clipped values;
QWK on the 0.5 grid (`anchor_scoring.snap`, rounded, or floored as the original with
`qwk_binning=floor`) over the nine levels 1.0, 1.5, ..., 5.0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.data import pipeline
from aes_jax.eval import anchor_scoring, metrics
from aes_jax.interop import hf, peft
from aes_jax.interop.heads import save_head
from aes_jax.models import lora as lora_lib
from aes_jax.models import siamese
from aes_jax.parts.causal_lm import CausalLM
from aes_jax.tasks.pair2score_data import PairStageData
from aes_jax.tasks.pair2score_options import Pair2ScoreOptions
from aes_jax.tasks.pair2score_relative import pooled_states
from aes_jax.train.checkpoint import read_state_numpy

SCORE_RANGE = (1.0, 5.0)
GRID = 0.5


def score_metrics(gold: np.ndarray, pred: np.ndarray, binning: str) -> dict[str, float]:
    """MAE / RMSE on clipped predictions, QWK on the 0.5 grid (levels 2..10 as 2 x score)."""
    clipped = np.clip(np.asarray(pred, np.float64), *SCORE_RANGE)
    snapped = anchor_scoring.snap(clipped, *SCORE_RANGE, step=GRID, binning=binning)
    to_level = lambda s: np.rint(np.asarray(s) / GRID).astype(int)  # noqa: E731
    lo, hi = int(SCORE_RANGE[0] / GRID), int(SCORE_RANGE[1] / GRID)
    return {"qwk": metrics.qwk(to_level(gold), to_level(snapped), lo, hi),
            "mae": metrics.mae(gold, clipped), "rmse": metrics.rmse(gold, clipped),
            "n": float(len(gold))}


class AbsoluteTask:
    """Stage 2 as a loop task (see the module docstring for the parameter trees)."""

    def __init__(self, options: Pair2ScoreOptions, lm: CausalLM, data: PairStageData,
                 stage1_dir: Path | None):
        if options.needs_stage1 and stage1_dir is None:
            raise ValueError(f"variant {options.variant} needs the Stage-1 run directory")
        self.options, self.lm, self.data, self.stage1_dir = options, lm, data, stage1_dir
        self.variant = options.variant
        hidden = lm.cfg.hidden_size
        self.head = siamese.RegressionHead(width=hidden // 2)
        self.head_in = 2 * hidden if self.variant == "fusion" else hidden
        self.eval_split = options.data.eval_split

    # ------------------------------------------------------------------ parameters
    def stage1_lora(self) -> dict:
        """The Stage-1 adapter of its best checkpoint (else its last)."""
        _, state = read_state_numpy(self.stage1_dir)
        return jax.tree.map(jnp.asarray, state["trainable"]["lora"])

    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        lm_rng, head_rng = jax.random.split(rng)
        fresh, frozen = self.lm.init(lm_rng)  # {"lora"}, {"params"}
        head = siamese.init_regression_head(head_rng, self.head_in, self.head.width)
        if self.options.head_bias == "train_mean":
            mean = float(np.mean(self.data.scores[self.data.stage2_splits["train"]]))
            head["out"]["bias"] = jnp.full_like(head["out"]["bias"], mean)
        v = self.variant
        if v == "baseline":
            return {"lora": fresh["lora"], "head": head}, frozen
        stage1 = self.stage1_lora()
        if v == "warm_start":
            return {"lora": stage1, "head": head}, frozen
        if v == "warm_start_frozen":
            return {"head": head}, {**frozen, "lora": stage1}
        if v == "stack":
            merged = lora_lib.merge(frozen["params"], stage1, self.lm.cfg.lora)
            return {"lora": fresh["lora"], "head": head}, {"params": merged}
        return {"lora": fresh["lora"], "head": head}, {**frozen, "stage1_lora": stage1}

    def logical_axes(self) -> tuple[dict, dict]:
        lora_axes, frozen = self.lm.logical_axes()
        head = siamese.regression_head_axes()
        v = self.variant
        if v == "warm_start_frozen":
            return {"head": head}, {**frozen, "lora": lora_axes["lora"]}
        if v == "fusion":
            return {**lora_axes, "head": head}, {**frozen, "stage1_lora": lora_axes["lora"]}
        return {**lora_axes, "head": head}, frozen

    # ------------------------------------------------------------------ forward
    def features(self, trainable: Any, frozen: Any, ids: jax.Array, mask: jax.Array,
                 rng: jax.Array | None = None) -> jax.Array:
        """[B, head_in]: the pooled state (fusion: [Stage-1 pooled, Stage-2 pooled])."""
        lora = trainable["lora"] if "lora" in trainable else frozen["lora"]
        dropout = rng if "lora" in trainable else None  # a frozen adapter runs as inference
        pooled = pooled_states(self.lm, lora, frozen["params"], ids, mask, dropout)
        if self.variant != "fusion":
            return pooled
        stage1 = jax.lax.stop_gradient(
            pooled_states(self.lm, frozen["stage1_lora"], frozen["params"], ids, mask, None))
        return jnp.concatenate([stage1, pooled], axis=-1)

    def predict(self, trainable: Any, frozen: Any, ids: jax.Array, mask: jax.Array,
                rng: jax.Array | None = None) -> jax.Array:
        feats = self.features(trainable, frozen, ids, mask, rng)
        return self.head.apply({"params": trainable["head"]}, feats)

    def loss(self, trainable: Any, frozen: Any, batch: Any, rng: jax.Array, step: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        del step
        pred = self.predict(trainable, frozen, batch["ids"], batch["mask"], rng)
        err = pred - batch["score"]
        loss = jnp.mean(jnp.abs(err)) if self.options.loss == "l1" else jnp.mean(err ** 2)
        return loss, {"mae": jnp.mean(jnp.abs(err))}

    def eval_step(self, trainable: Any, frozen: Any, batch: Any) -> dict[str, jax.Array]:
        return {"pred": self.predict(trainable, frozen, batch["ids"], batch["mask"]),
                "score": batch["score"], "row": batch["row"], "weight": batch["weight"]}

    def summarize(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
        keep = np.concatenate([np.asarray(o["weight"]) for o in outputs]) > 0
        gold = np.concatenate([np.asarray(o["score"]) for o in outputs])[keep]
        pred = np.concatenate([np.asarray(o["pred"]) for o in outputs])[keep]
        return score_metrics(gold, pred, self.options.qwk_binning)

    # ------------------------------------------------------------------ data
    def train_iterator(self, global_batch_size: int, seed: int, process_index: int,
                       process_count: int):
        return pipeline.train_iterator(self.data.stage2_splits["train"],
                                       global_batch_size=global_batch_size, seed=seed,
                                       process_index=process_index,
                                       process_count=process_count,
                                       map_fn=self.data.essay_record)

    def split_batches(self, split: str, batch_size: int, process_index: int = 0,
                      process_count: int = 1):
        return pipeline.eval_batches(self.data.stage2_splits[split], batch_size=batch_size,
                                     process_index=process_index, process_count=process_count,
                                     map_fn=self.data.essay_record)

    def eval_batches(self, batch_size: int, process_index: int, process_count: int):
        return self.split_batches(self.eval_split, batch_size, process_index, process_count)

    def tokens_in_batch(self, batch: Any) -> int:
        return int(np.asarray(batch["mask"]).sum())

    def flops_per_token(self) -> float:
        passes = 2 if self.variant == "fusion" else 1  # fusion's Stage-1 pass: forward only
        return self.lm.flops_per_token(self.options.data.seq_len) * (1 + (passes - 1) / 3)

    # ------------------------------------------------------------------ reporting
    def describe(self) -> dict[str, Any]:
        s = self.data.stage2_splits
        start = {"baseline": "a fresh adapter", "warm_start": "the Stage-1 adapter (trained)",
                 "warm_start_frozen": "the Stage-1 adapter (frozen; only the head trains)",
                 "stack": "the Stage-1 adapter merged, a fresh adapter on top",
                 "fusion": "a fresh adapter + the frozen Stage-1 embedding"}[self.variant]
        return {"model": self.lm.describe(),
                "stage 2": f"{self.options.trait} ({self.options.loss} loss), {self.variant}: "
                           f"{start}; essays train {len(s['train'])}, val {len(s['val'])}, "
                           f"held-out {len(s['test'])}"}

    def headline_metrics(self) -> tuple[str, ...]:
        return ("qwk", "mae", "rmse")

    def best_metric(self) -> tuple[str, str]:
        return "eval_qwk", "max"

    # ------------------------------------------------------------------ export
    def export(self, trainable: Mapping, frozen: Mapping, out_dir: str | Path) -> list[Path]:
        """The Stage-2 adapter as PEFT (on the base it was trained on: for `stack` the
        Stage-1-merged base, written as `base/`), the merged HF model, the head as
        `head.safetensors` + `head_config.json`; fusion also writes the Stage-1 adapter."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cfg, lm = self.lm.cfg, self.lm
        written: list[Path] = []
        params = jax.tree.map(np.asarray, frozen["params"])
        lora = trainable["lora"] if "lora" in trainable else frozen["lora"]
        base_path = lm.path
        if base_path is None or self.variant == "stack":
            base_path = hf.save_llama(lm.base_cfg, params, out / "base",
                                      tokenizer_source=lm.tokenizer_dir)
            written.append(base_path)
        written.append(peft.save_peft_adapter(cfg, lora, out / "adapter",
                                              base_model_name_or_path=str(base_path)))
        if self.variant == "fusion":
            written.append(peft.save_peft_adapter(cfg, frozen["stage1_lora"],
                                                  out / "stage1_adapter",
                                                  base_model_name_or_path=str(base_path)))
        merged = lora_lib.merge(params, lora, cfg.lora)
        written.append(hf.save_llama(lm.base_cfg, merged, out / "merged",
                                     tokenizer_source=lm.tokenizer_dir))
        save_head(trainable["head"], out / "head.safetensors", "aes_jax.pair2score")
        (out / "head_config.json").write_text(json.dumps({
            "variant": self.variant, "trait": self.options.trait, "pooling": "masked_mean",
            "in_features": self.head_in, "width": self.head.width, "activation": "relu",
            "features": ("[stage1_adapter pooled, adapter pooled]" if self.variant == "fusion"
                         else "adapter pooled"),
            "score_range": list(SCORE_RANGE), "seq_len": self.options.data.seq_len},
            indent=2) + "\n")
        return written + [out / "head.safetensors", out / "head_config.json"]
