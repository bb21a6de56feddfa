"""RLearner's DPO stage: a LoRA policy learns from preference pairs against a frozen
reference, which is the same base with the policy adapter off (no second copy).

After SFT, the SFT adapter is merged into the frozen base first (`sft_adapter`), a fresh
DPO adapter trains on top, and the reference is that merged base without it, as the
original does. A fresh adapter starts equal to the reference, so step 1's loss is ln 2
for the sigmoid loss. Chosen and rejected go through one batched forward [chosen;
rejected]; with `precompute_reference` the reference log-probs are computed once in
`init` (one pass over the pairs, stored in WORKDIR/reference_logps.npz) and a step runs
two forwards instead of four.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.data import pipeline
from aes_jax.data.mcq import demo_mcqs, split_questions
from aes_jax.data.chat_rows import CutCounts
from aes_jax.data.preference_encoding import encode_pair, pair_arrays
from aes_jax.data.preferences import PreferencePair, pairs_from_ratings, read_preferences
from aes_jax.losses import preference
from aes_jax.losses.lm import masked_labels, sequence_sums
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec
from aes_jax.interop import hf, peft

log = logging.getLogger(__name__)

SIDES = ("chosen", "rejected")


@dataclasses.dataclass(frozen=True)
class DpoOptions:
    """The task's config fields (config.dpo.* and config.data.*), validated once."""

    pairs_file: str = ""  # preference JSONL; "" = demo pairs from the packaged bank's ratings
    eval_file: str = ""  # "" = hold out eval_fraction of the pairs (seeded)
    eval_fraction: float = 0.1
    demo_questions: int = 0  # demo: use the first N training questions (0 = all)
    demo_test_fraction: float = 0.2  # demo: questions held out for generation benchmarks
    split_seed: int = 0
    min_score_gap: float = 0.3
    max_prompt_tokens: int = 384
    max_completion_tokens: int = 128
    chat_template: bool = True
    beta: float = 0.1
    loss_type: str = "sigmoid"
    label_smoothing: float = 0.0
    sft_adapter: str = ""  # PEFT adapter dir merged into the base before DPO
    precompute_reference: bool = False

    def __post_init__(self):
        preference.check_options(self.beta, self.loss_type, self.label_smoothing)
        if not 0.0 < self.eval_fraction < 1.0 and not self.eval_file:
            raise ValueError(f"config.data.eval_fraction={self.eval_fraction}: expected (0, 1)")
        if self.max_prompt_tokens < 1 or self.max_completion_tokens < 1:
            raise ValueError("config.data.max_prompt_tokens and max_completion_tokens must "
                             "be >= 1")

    @property
    def seq_len(self) -> int:
        return self.max_prompt_tokens + self.max_completion_tokens - 1

    @property
    def average_logps(self) -> bool:
        """IPO compares length-normalised log-probs (as TRL); the others summed ones."""
        return self.loss_type == "ipo"

    @classmethod
    def from_config(cls, config: Any) -> "DpoOptions":
        values = {**dict(config.data), **dict(config.dpo)}
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls) if f.name in values})


def _split_pairs(pairs: list[PreferencePair], fraction: float, seed: int
                 ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    order = np.random.default_rng(seed).permutation(len(pairs))
    n_eval = max(1, round(len(pairs) * fraction))
    held = set(order[:n_eval].tolist())
    return ([p for i, p in enumerate(pairs) if i not in held],
            [p for i, p in enumerate(pairs) if i in held])


class DpoTask:
    def __init__(self, config: Any, workdir: str | Path):
        self.options = DpoOptions.from_config(config)
        self.lm = CausalLM(CausalLMSpec.from_config(config))
        if not self.lm.uses_lora:
            raise ValueError("the DPO task trains a LoRA policy (config.use_lora=True): its "
                             "reference is the frozen base without the adapter")
        self.workdir = Path(workdir)
        self.seed = int(config.seed)
        self.eval_batch_size = int(config.eval_batch_size)
        self.truncation = CutCounts()
        self._reference: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ data
    @functools.cached_property
    def pairs(self) -> dict[str, list[PreferencePair]]:
        o = self.options
        if o.pairs_file:
            pairs, what = read_preferences(o.pairs_file), o.pairs_file
        else:
            train_questions, _ = split_questions(demo_mcqs(), o.demo_test_fraction, o.split_seed)
            if o.demo_questions:
                train_questions = train_questions[:o.demo_questions]
            pairs, stats = pairs_from_ratings(train_questions, o.min_score_gap)
            what = f"the packaged demo bank's ratings: {stats.line()}"
        if o.eval_file:
            train, evals = pairs, read_preferences(o.eval_file)
        else:
            train, evals = _split_pairs(pairs, o.eval_fraction, o.split_seed)
        log.info("DPO pairs from %s -> %d train / %d eval", what, len(train), len(evals))
        return {"train": train, "eval": evals}

    @functools.cached_property
    def arrays(self) -> dict[str, list[dict[str, np.ndarray]]]:
        """Every pair tokenised once: {split: [pair_arrays]}."""
        o = self.options
        out = {}
        for split, pairs in self.pairs.items():
            out[split] = [pair_arrays(encode_pair(
                p, self.lm.tokenizer, max_prompt_tokens=o.max_prompt_tokens,
                max_completion_tokens=o.max_completion_tokens, chat_template=o.chat_template,
                counts=self.truncation), o.seq_len) for p in pairs]
        if self.truncation.any_cut:
            log.warning("DPO tokenisation: %s", self.truncation.line())
        return out

    def _records(self, split: str) -> list[dict[str, np.ndarray]]:
        rows = self.arrays[split]
        if self._reference is None:
            return rows
        ref = self._reference
        return [{**row, "ref_chosen_logps": ref[f"{split}_chosen"][i],
                 "ref_rejected_logps": ref[f"{split}_rejected"][i]}
                for i, row in enumerate(rows)]

    def train_iterator(self, global_batch_size: int, seed: int, process_index: int,
                       process_count: int):
        return pipeline.train_iterator(self._records("train"),
                                       global_batch_size=global_batch_size, seed=seed,
                                       process_index=process_index, process_count=process_count)

    def eval_batches(self, batch_size: int, process_index: int, process_count: int):
        return pipeline.eval_batches(self._records("eval"), batch_size=batch_size,
                                     process_index=process_index, process_count=process_count)

    # ------------------------------------------------------------------ model
    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        trainable, frozen = self.lm.init(rng)
        if self.options.sft_adapter:
            frozen = {"params": self.lm.merge_adapter(frozen["params"],
                                                      self.options.sft_adapter)}
        if self.options.precompute_reference:
            self._reference = self._reference_logps(frozen)
        return trainable, frozen

    def logical_axes(self) -> tuple[dict, dict]:
        return self.lm.logical_axes()

    def _logps(self, trainable: Any, frozen: Any, batch: Any, *, adapters: bool,
               rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """([B] chosen, [B] rejected) completion log-probs from one [2B, T] forward."""
        rows = {k: jnp.concatenate([batch[f"chosen_{k}"], batch[f"rejected_{k}"]])
                for k in ("input_ids", "targets", "loss_mask", "attention_mask")}
        nll = self.lm.token_nll(trainable, frozen, rows["input_ids"],
                                masked_labels(rows["targets"], rows["loss_mask"]),
                                attention_mask=rows["attention_mask"], adapters=adapters,
                                rng=rng)
        logps = sequence_sums(-nll, rows["loss_mask"], average=self.options.average_logps)
        half = batch["chosen_input_ids"].shape[0]
        return logps[:half], logps[half:]

    def _reference_of(self, trainable: Any, frozen: Any, batch: Any):
        if "ref_chosen_logps" in batch:
            return batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        rc, rr = self._logps(trainable, frozen, batch, adapters=False)
        return jax.lax.stop_gradient(rc), jax.lax.stop_gradient(rr)

    def loss(self, trainable, frozen, batch, rng, step):
        del step
        o = self.options
        pc, pr = self._logps(trainable, frozen, batch, adapters=True, rng=rng)
        rc, rr = self._reference_of(trainable, frozen, batch)
        return preference.dpo(pc, pr, rc, rr, beta=o.beta, loss_type=o.loss_type,
                              label_smoothing=o.label_smoothing)

    def eval_step(self, trainable, frozen, batch) -> dict[str, jax.Array]:
        o = self.options
        pc, pr = self._logps(trainable, frozen, batch, adapters=True)
        rc, rr = self._reference_of(trainable, frozen, batch)
        chosen, rejected = o.beta * (pc - rc), o.beta * (pr - rr)
        losses = preference.pair_losses((pc - rc) - (pr - rr), beta=o.beta,
                                        loss_type=o.loss_type,
                                        label_smoothing=o.label_smoothing)
        w = batch["weight"]
        return {"loss": jnp.sum(losses * w), "correct": jnp.sum((chosen > rejected) * w),
                "margin": jnp.sum((chosen - rejected) * w), "chosen": jnp.sum(chosen * w),
                "rejected": jnp.sum(rejected * w), "n": jnp.sum(w)}

    def summarize(self, outputs: list[dict]) -> dict[str, float]:
        total = {k: sum(float(o[k]) for o in outputs) for k in outputs[0]}
        n = max(total["n"], 1.0)
        return {"loss": total["loss"] / n, "rewards/accuracies": total["correct"] / n,
                "rewards/margins": total["margin"] / n, "rewards/chosen": total["chosen"] / n,
                "rewards/rejected": total["rejected"] / n, "pairs": total["n"]}

    # ------------------------------------------------------------------ reference pass
    def _fingerprint(self) -> str:
        h = hashlib.sha256(json.dumps({"spec": dataclasses.asdict(self.lm.spec),
                                       "options": dataclasses.asdict(self.options),
                                       "seed": self.seed}, sort_keys=True).encode())
        for split in ("train", "eval"):
            for row in self.arrays[split]:
                for key in sorted(row):
                    h.update(row[key].tobytes())
        return h.hexdigest()

    def _reference_logps(self, frozen: Any) -> dict[str, np.ndarray]:
        """{split_side: [N] float32} reference log-probs of every pair, cached on disk."""
        path = self.workdir / "reference_logps.npz"
        fingerprint = self._fingerprint()
        if path.exists():
            stored = np.load(path)
            if str(stored["fingerprint"]) == fingerprint:
                log.info("reference log-probs read from %s", path)
                return {k: stored[k] for k in stored.files if k != "fingerprint"}
        forward = jax.jit(lambda frozen, batch: self._logps({}, frozen, batch, adapters=False))
        out = {}
        for split in ("train", "eval"):
            sides = {side: [] for side in SIDES}
            for batch in pipeline.eval_batches(self.arrays[split], batch_size=self.eval_batch_size):
                n = int(np.asarray(batch["weight"]).sum())
                batch = {k: v for k, v in batch.items() if k != "weight"}
                for side, logps in zip(SIDES, forward(frozen, batch)):
                    sides[side].append(np.asarray(logps)[:n])
            for side in SIDES:
                out[f"{split}_{side}"] = np.concatenate(sides[side]).astype(np.float32)
        if jax.process_index() == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, fingerprint=np.asarray(fingerprint), **out)
        log.info("reference log-probs of %d + %d pairs computed once -> %s",
                 len(out["train_chosen"]), len(out["eval_chosen"]), path)
        return out

    # ------------------------------------------------------------------ engine accounting
    def tokens_in_batch(self, batch) -> int:
        return int(sum(np.asarray(batch[f"{s}_attention_mask"]).sum() for s in SIDES))

    def flops_per_token(self) -> float:
        # With the reference precomputed a step is the policy's forward + backward; without
        # it one more forward per token (the reference, no backward): 1 + 1/3 of that.
        per = self.lm.flops_per_token(self.options.seq_len)
        return per if self.options.precompute_reference else per * 4.0 / 3.0

    # ------------------------------------------------------------------ reporting
    def describe(self) -> dict[str, Any]:
        o = self.options
        pairs = self.pairs
        loss = o.loss_type + (f" (label smoothing {o.label_smoothing})" if o.label_smoothing
                              else "")
        return {"model": self.lm.describe(),
                "pairs": f"{len(pairs['train'])} train / {len(pairs['eval'])} eval "
                         f"({o.pairs_file or 'demo ratings'}), {o.seq_len} tokens per row",
                "dpo": f"{loss}, beta {o.beta}, reference "
                       f"{'precomputed' if o.precompute_reference else 'per step'}"
                       f"{', SFT adapter ' + o.sft_adapter + ' merged' if o.sft_adapter else ''}"}

    def headline_metrics(self) -> tuple[str, ...]:
        return ("loss", "rewards/accuracies", "rewards/margins")

    def best_metric(self) -> tuple[str, str]:
        return "eval_loss", "min"

    # ------------------------------------------------------------------ export
    def export(self, trainable: dict, frozen: dict, out_dir: str | Path) -> list[Path]:
        """The DPO adapter as PEFT, the policy merged into one HF model; after SFT the
        adapter's base is the SFT-merged model, written as `sft_base/`."""
        if not self.options.sft_adapter:
            return self.lm.export(trainable, frozen, out_dir)
        out = Path(out_dir)
        base_dir = hf.save_llama(self.lm.base_cfg, frozen["params"], out / "sft_base",
                                 tokenizer_source=self.lm.tokenizer_dir)
        adapter = peft.save_peft_adapter(self.lm.cfg, trainable["lora"], out / "adapter",
                                         base_model_name_or_path=str(base_dir))
        _, merged = self.lm.inference_params(trainable, frozen)
        merged_dir = hf.save_llama(self.lm.base_cfg, merged, out / "merged",
                                   tokenizer_source=self.lm.tokenizer_dir)
        return [base_dir, adapter, merged_dir]
