"""StepER's student: a LLaMA (+ LoRA, or full fine-tuning) trained on stepwise records,
one batch stream mixing the three step types (each row carries its type).

The loss is the CE on each row's output tokens, averaged over the tokens of each step
type in the batch (L_init, L_exp, L_agg), combined by difficulty-aware weighting,

    sum_j 0.5 exp(-s_j) L_j + 0.5 s_j     with learnable s_j = log sigma_j^2

(`losses.weighting.uncertainty`; a log variance cannot go non-positive, a raw sigma
can), or fixed weights (`weighting="fixed"`, e.g. 1, 1, 1). A type absent from a batch
adds nothing and its s_j gets no gradient. Logged: each type's loss and sigma_j.

Without `data.records_dir` the demo records are built first (`prepare_data`: the
project-written multi-hop corpus, oracle teacher) into WORKDIR/data.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.data import pipeline
from aes_jax.data import stepwise as sw
from aes_jax.data.chat_rows import CutCounts, completion_rows, encode_completion, encode_prompt
from aes_jax.data.stepwise_dataset import BuildOptions, build_stepwise
from aes_jax.losses import weighting
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec

log = logging.getLogger(__name__)

WEIGHTINGS = ("uncertainty", "fixed")
N_TYPES = len(sw.STEP_TYPES)


@dataclasses.dataclass(frozen=True)
class SteperOptions:
    """config.data.* and config.steper.*, validated once."""

    records_dir: str = ""  # a launch.build_stepwise output; "" = demo records in WORKDIR/data
    train_split: str = "train"
    eval_split: str = "dev"
    demo_limit: int = 0  # demo: questions per split (0 = all)
    k: int = 4  # demo: BM25 passages per step
    max_prompt_tokens: int = 640
    max_completion_tokens: int = 48
    chat_template: bool = True
    weighting: str = "uncertainty"
    fixed_weights: tuple[float, ...] = (1.0, 1.0, 1.0)  # init, exp, agg

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"config.steper.weighting={self.weighting!r}: expected "
                             f"{' or '.join(WEIGHTINGS)}")
        if len(self.fixed_weights) != N_TYPES or min(self.fixed_weights) < 0:
            raise ValueError(f"config.steper.fixed_weights={self.fixed_weights}: expected "
                             f"{N_TYPES} weights >= 0 (init, exp, agg)")

    @property
    def seq_len(self) -> int:
        return self.max_prompt_tokens + self.max_completion_tokens - 1

    @classmethod
    def from_config(cls, config: Any) -> "SteperOptions":
        values = {**dict(config.data), **dict(config.get("steper", {}))}
        if "fixed_weights" in values:
            values["fixed_weights"] = tuple(float(w) for w in values["fixed_weights"])
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def type_losses(nll: jax.Array, mask: jax.Array, step_type: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
    """([types] mean token NLL of each step type's rows, [types] bool: present in the batch).
    nll / mask [B, T], step_type [B] int."""
    onehot = jax.nn.one_hot(step_type, N_TYPES, dtype=jnp.float32)  # [B, types]
    tokens = jnp.sum(mask, axis=1).astype(jnp.float32)  # [B]
    sums = onehot.T @ jnp.sum(nll * mask, axis=1)
    counts = onehot.T @ tokens
    return sums / jnp.maximum(counts, 1.0), counts > 0


def combine(losses: jax.Array, present: jax.Array, log_vars: jax.Array | None,
            fixed: tuple[float, ...]) -> jax.Array:
    """The step-type losses as one: uncertainty-weighted (log_vars given) or fixed."""
    p = present.astype(jnp.float32)
    if log_vars is None:
        return jnp.sum(jnp.asarray(fixed, jnp.float32) * losses * p)
    return weighting.uncertainty(losses * p, log_vars * p)


class SteperTask:
    def __init__(self, config: Any, workdir: str | Path):
        self.options = SteperOptions.from_config(config)
        self.lm = CausalLM(CausalLMSpec.from_config(config))
        self.workdir = Path(workdir)
        self.counts = CutCounts()

    @property
    def records_dir(self) -> Path:
        return Path(self.options.records_dir) if self.options.records_dir else (
            self.workdir / "data")

    def prepare_data(self) -> None:
        """The demo records (oracle teacher on the project-written corpus), once."""
        if self.options.records_dir or (self.records_dir / "manifest.json").is_file():
            return
        o = self.options
        manifest = build_stepwise([], self.records_dir, BuildOptions(k=o.k, limit=o.demo_limit))
        for name, split in manifest["splits"].items():
            log.info("demo %s: %d records from %d questions", name, split["records"],
                     split["questions"])

    # ------------------------------------------------------------------ data
    @functools.cached_property
    def records(self) -> dict[str, list[sw.StepwiseRecord]]:
        o = self.options
        out = {}
        for split, name in (("train", o.train_split), ("eval", o.eval_split)):
            path = self.records_dir / f"{name}.jsonl"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no stepwise records (write them with "
                                        "python -m launch.build_stepwise)")
            out[split] = sw.read_records(path)
        return out

    def _row(self, step: sw.Step) -> dict[str, np.ndarray]:
        o, tok = self.options, self.lm.tokenizer
        prompt, prompt_cut = encode_prompt(step.input, tok, o.max_prompt_tokens, o.chat_template)
        completion, completion_cut = encode_completion(step.output, tok, o.max_completion_tokens)
        self.counts.add(prompt_cut, completion_cut)
        row = completion_rows(prompt, completion, o.seq_len)
        row["step_type"] = np.int32(sw.STEP_TYPES.index(step.type))
        return row

    @functools.cached_property
    def rows(self) -> dict[str, list[dict[str, np.ndarray]]]:
        out = {split: [self._row(s) for r in records for s in r.steps]
               for split, records in self.records.items()}
        if self.counts.any_cut:
            log.warning("StepER tokenisation: %s", self.counts.line())
        return out

    def train_iterator(self, global_batch_size: int, seed: int, process_index: int,
                       process_count: int):
        return pipeline.train_iterator(self.rows["train"], global_batch_size=global_batch_size,
                                       seed=seed, process_index=process_index,
                                       process_count=process_count)

    def eval_batches(self, batch_size: int, process_index: int, process_count: int):
        return pipeline.eval_batches(self.rows["eval"], batch_size=batch_size,
                                     process_index=process_index, process_count=process_count)

    # ------------------------------------------------------------------ model
    @property
    def learns_weights(self) -> bool:
        return self.options.weighting == "uncertainty"

    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        trainable, frozen = self.lm.init(rng)
        if self.learns_weights:
            trainable["log_vars"] = weighting.init_log_vars(N_TYPES)
        return trainable, frozen

    def logical_axes(self) -> tuple[dict, dict]:
        from jax.sharding import PartitionSpec as P

        trainable, frozen = self.lm.logical_axes()
        if self.learns_weights:
            trainable["log_vars"] = P(None)
        return trainable, frozen

    def model_part(self, trainable: dict) -> dict:
        """The LM's trainable tree (without the step-type log variances)."""
        return {k: v for k, v in trainable.items() if k != "log_vars"}

    def _type_losses(self, trainable, frozen, batch, rng=None):
        nll = self.lm.token_nll(self.model_part(trainable), frozen, batch["input_ids"],
                                jnp.where(batch["loss_mask"], batch["targets"], 0),
                                attention_mask=batch["attention_mask"], rng=rng)
        mask = batch["loss_mask"].astype(jnp.float32)
        if "weight" in batch:
            mask = mask * batch["weight"][:, None]
        return nll, mask

    def loss(self, trainable, frozen, batch, rng, step):
        del step
        nll, mask = self._type_losses(trainable, frozen, batch, rng)
        losses, present = type_losses(nll, mask, batch["step_type"])
        log_vars = trainable.get("log_vars")
        total = combine(losses, present, log_vars, self.options.fixed_weights)
        metrics = {}
        for j, name in enumerate(sw.STEP_TYPES):
            metrics[f"loss_{name}"] = losses[j]
            if log_vars is not None:
                metrics[f"sigma_{name}"] = jnp.exp(0.5 * log_vars[j])
        return total, metrics

    def eval_step(self, trainable, frozen, batch) -> dict[str, jax.Array]:
        nll, mask = self._type_losses(trainable, frozen, batch)
        onehot = jax.nn.one_hot(batch["step_type"], N_TYPES, dtype=jnp.float32)
        return {"nll": onehot.T @ jnp.sum(nll * mask, axis=1),
                "tokens": onehot.T @ jnp.sum(mask, axis=1)}

    def summarize(self, outputs: list[dict]) -> dict[str, float]:
        nll = sum(np.asarray(o["nll"], np.float64) for o in outputs)
        tokens = sum(np.asarray(o["tokens"], np.float64) for o in outputs)
        out = {f"loss_{name}": float(nll[j] / max(tokens[j], 1.0))
               for j, name in enumerate(sw.STEP_TYPES)}
        out["loss"] = float(nll.sum() / max(tokens.sum(), 1.0))
        out["perplexity"] = float(np.exp(out["loss"]))
        return out

    # ------------------------------------------------------------------ engine accounting
    def tokens_in_batch(self, batch) -> int:
        return int(np.asarray(batch["attention_mask"]).sum())

    def flops_per_token(self) -> float:
        return self.lm.flops_per_token(self.options.seq_len)

    # ------------------------------------------------------------------ reporting
    def describe(self) -> dict[str, Any]:
        o = self.options
        rows = self.rows
        by_type = {name: sum(int(r["step_type"]) == j for r in rows["train"])
                   for j, name in enumerate(sw.STEP_TYPES)}
        weights = ("difficulty-aware (learned log sigma^2 per step type)"
                   if self.learns_weights else f"fixed {o.fixed_weights}")
        return {"model": self.lm.describe(),
                "steps": f"{len(rows['train'])} train rows {by_type} / {len(rows['eval'])} "
                         f"eval rows, from {self.records_dir}",
                "weighting": weights}

    def headline_metrics(self) -> tuple[str, ...]:
        return ("loss", "loss_init", "loss_exp", "loss_agg")

    def best_metric(self) -> tuple[str, str]:
        return "eval_loss", "min"

    def export(self, trainable: dict, frozen: dict, out_dir: str | Path) -> list[Path]:
        return self.lm.export(self.model_part(trainable), frozen, out_dir)
