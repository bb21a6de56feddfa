"""Pair2Score Stage 1: a Siamese LLaMA + LoRA with a bias-free utility s(h) = w . h on the
masked mean of the last hidden states learns which essay of a pair is better on a trait.

Both essays of every pair go through the same weights in one batched forward ([a; b]),
Δ(a, b) = s(a) - s(b), loss BCE with logits on Δ (`losses.ranking.pair_logistic`). The
cached pairs hold the better essay first with y = 1; each step swaps a seeded half of the
pairs (y flipped) so the head sees both orders. (With a bias-free antisymmetric Δ the swap
leaves the loss unchanged but for LoRA dropout; it is kept so a head with a bias, or any
order-dependent change, cannot learn "the first essay wins".)

`pair_mode=in_batch`: a batch holds B essays of the train pool instead, and every ordered
pair inside it whose score gap is at least `min_score_gap` is a training pair
(`losses.ranking.all_pairs`, RankNet over up to B(B-1)/2 pairs from B forwards).
Evaluation is always on the cached val pairs: pair accuracy (a tie counts half) and loss.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.data import pipeline
from aes_jax.losses import ranking
from aes_jax.models import siamese
from aes_jax.parts.causal_lm import CausalLM
from aes_jax.tasks.pair2score_data import PairStageData
from aes_jax.tasks.pair2score_options import Pair2ScoreOptions


def pooled_states(lm: CausalLM, lora: Any, params: Any, ids: jax.Array, mask: jax.Array,
                  rng: jax.Array | None) -> jax.Array:
    """[B, H] masked mean of the final hidden states; `rng` = LoRA dropout on."""
    hidden = lm.hidden({"lora": lora}, {"params": params}, ids, attention_mask=mask, rng=rng)
    return siamese.masked_mean_pool(hidden, mask)


def pair_rows(batch: Any) -> tuple[jax.Array, jax.Array]:
    """[B, 2, T] pair arrays -> [2B, T]: the a essays, then the b essays."""
    ids, mask = batch["ids"], batch["mask"]
    return (jnp.concatenate([ids[:, 0], ids[:, 1]]),
            jnp.concatenate([mask[:, 0], mask[:, 1]]))


class RelativeTask:
    """Stage 1 as a loop task: trainable {"lora", "utility"}, frozen {"params"}."""

    def __init__(self, options: Pair2ScoreOptions, lm: CausalLM, data: PairStageData):
        self.options, self.lm, self.data = options, lm, data

    @property
    def in_batch(self) -> bool:
        return self.options.pair_mode == "in_batch"

    # ------------------------------------------------------------------ parameters
    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        lm_rng, head_rng = jax.random.split(rng)
        trainable, frozen = self.lm.init(lm_rng)
        trainable["utility"] = siamese.init_utility(head_rng, self.lm.cfg.hidden_size)
        return trainable, frozen

    def logical_axes(self) -> tuple[dict, dict]:
        trainable, frozen = self.lm.logical_axes()
        trainable["utility"] = siamese.utility_axes()
        return trainable, frozen

    def utilities(self, trainable: Any, frozen: Any, ids: jax.Array, mask: jax.Array,
                  rng: jax.Array | None = None) -> jax.Array:
        pooled = pooled_states(self.lm, trainable["lora"], frozen["params"], ids, mask, rng)
        return siamese.utility(trainable["utility"]["w"], pooled)

    # ------------------------------------------------------------------ losses
    def loss(self, trainable: Any, frozen: Any, batch: Any, rng: jax.Array, step: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        del step
        swap_rng, dropout_rng = jax.random.split(rng)
        if self.in_batch:
            u = self.utilities(trainable, frozen, batch["ids"], batch["mask"], dropout_rng)
            valid = jnp.ones(u.shape, bool)
            loss, num_pairs = ranking.all_pairs(u, batch["score"], valid,
                                                self.options.min_score_gap)
            return loss, {"pairs_in_batch": num_pairs.astype(jnp.float32)}
        swap = jax.random.bernoulli(swap_rng, 0.5, batch["y"].shape)
        ids = jnp.where(swap[:, None, None], batch["ids"][:, ::-1], batch["ids"])
        mask = jnp.where(swap[:, None, None], batch["mask"][:, ::-1], batch["mask"])
        y = jnp.where(swap, 1.0 - batch["y"], batch["y"])
        rows, row_mask = pair_rows({"ids": ids, "mask": mask})
        delta = siamese.pair_delta(self.utilities(trainable, frozen, rows, row_mask,
                                                  dropout_rng))
        loss = ranking.pair_logistic(delta, y)
        return loss, {"pair_accuracy": ranking.pair_accuracy(delta, y),
                      "pairs_in_batch": jnp.float32(y.shape[0])}

    def eval_step(self, trainable: Any, frozen: Any, batch: Any) -> dict[str, jax.Array]:
        rows, row_mask = pair_rows(batch)
        delta = siamese.pair_delta(self.utilities(trainable, frozen, rows, row_mask))
        y, weight = batch["y"], batch["weight"]
        correct = jnp.where(delta == 0, 0.5, (delta > 0) == (y > 0.5))
        bce = jax.nn.softplus(jnp.where(y > 0.5, -delta, delta))
        return {"correct": jnp.sum(correct * weight), "bce": jnp.sum(bce * weight),
                "n": jnp.sum(weight)}

    def summarize(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
        n = max(sum(float(o["n"]) for o in outputs), 1.0)
        return {"pair_accuracy": sum(float(o["correct"]) for o in outputs) / n,
                "loss": sum(float(o["bce"]) for o in outputs) / n,
                "pairs": n}

    # ------------------------------------------------------------------ data
    def train_records(self) -> list[Any]:
        if self.in_batch:
            return self.data.stage1_pool("train")
        return self.data.pair_split("train")

    def train_iterator(self, global_batch_size: int, seed: int, process_index: int,
                       process_count: int):
        map_fn = self.data.essay_record if self.in_batch else self.data.pair_record
        return pipeline.train_iterator(self.train_records(), global_batch_size=global_batch_size,
                                       seed=seed, process_index=process_index,
                                       process_count=process_count, map_fn=map_fn)

    def pair_batches(self, split: str, batch_size: int, process_index: int = 0,
                     process_count: int = 1):
        return pipeline.eval_batches(self.data.pair_split(split), batch_size=batch_size,
                                     process_index=process_index, process_count=process_count,
                                     map_fn=self.data.pair_record)

    def eval_batches(self, batch_size: int, process_index: int, process_count: int):
        return self.pair_batches("val", batch_size, process_index, process_count)

    def tokens_in_batch(self, batch: Any) -> int:
        return int(np.asarray(batch["mask"]).sum())

    def flops_per_token(self) -> float:
        return self.lm.flops_per_token(self.options.data.seq_len)

    # ------------------------------------------------------------------ reporting
    def describe(self) -> dict[str, Any]:
        o, d = self.options, self.data
        if self.in_batch:
            what = (f"in-batch all pairs over {len(d.stage1_pool('train'))} train-pool essays "
                    f"(gap >= {o.min_score_gap})")
        else:
            what = f"{len(d.pair_split('train'))} cached train pairs ({d.pairs_path})"
        return {"model": self.lm.describe(),
                "stage 1": f"{o.trait}, run {o.run} (held-out fold {d.held_out}), {what}; "
                           f"val {len(d.pair_split('val'))} pairs"}

    def headline_metrics(self) -> tuple[str, ...]:
        return ("pair_accuracy", "loss")

    def best_metric(self) -> tuple[str, str]:
        return "eval_pair_accuracy", "max"
