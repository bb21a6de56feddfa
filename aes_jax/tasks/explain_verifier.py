"""RLearner's verifier: a LLaMA + LoRA reads question, options and an explanation (the
original's "way 2" input) and predicts its average student rating (0-5) with a regression
head on the masked mean of the last hidden states (Linear(H -> H/2), ReLU, Linear(-> 1)).

Its adapter and the generator's live on one frozen base: scoring swaps the `lora` tree
(`aes_jax.eval.explainer`), never the base. Dev metrics: MAE, RMSE, Pearson r, and the
within-question pair accuracy (does it order two explanations of one question as the
students did?), which is what choosing chosen/rejected needs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.data import pipeline
from aes_jax.data import explanations as ex
from aes_jax.data.chat_rows import CutCounts, encode_prompt
from aes_jax.eval import metrics
from aes_jax.interop.heads import save_head
from aes_jax.models import siamese
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec
from aes_jax.tasks.explain_data import ExplanationData, load_records, question_key

log = logging.getLogger(__name__)

LOSSES = ("mse", "l1")
HEAD_FORMAT = "aes_jax.rlearner_verifier"


def prompt_row(prompt_ids: np.ndarray, length: int) -> dict[str, np.ndarray]:
    """A right-padded scoring row: input_ids, attention_mask."""
    ids = np.zeros(length, np.int32)
    mask = np.zeros(length, bool)
    ids[:len(prompt_ids)] = prompt_ids
    mask[:len(prompt_ids)] = True
    return {"input_ids": ids, "attention_mask": mask}


def rate_hidden(hidden: jax.Array, mask: jax.Array, head: Any) -> jax.Array:
    """[B] ratings from final hidden states [B, T, H]: masked mean pool, then the head."""
    width = head["hidden"]["kernel"].shape[-1]
    pooled = siamese.masked_mean_pool(hidden, mask)
    return siamese.RegressionHead(width=width).apply({"params": head}, pooled)


class ExplainVerifierTask:
    def __init__(self, config: Any, workdir: str | Path):
        self.data = ExplanationData.from_config(config.data)
        self.lm = CausalLM(CausalLMSpec.from_config(config))
        if not self.lm.uses_lora:
            raise ValueError("the verifier trains a LoRA adapter (config.use_lora=True), so "
                             "it can share the generator's base")
        self.loss_name = str(config.verifier.loss)
        if self.loss_name not in LOSSES:
            raise ValueError(f"config.verifier.loss={self.loss_name!r}: expected one of "
                             f"{', '.join(LOSSES)}")
        self.workdir = Path(workdir)
        self.counts = CutCounts()

    @property
    def seq_len(self) -> int:
        return self.data.max_prompt_tokens

    # ------------------------------------------------------------------ data
    @functools.cached_property
    def records(self) -> dict[str, list[ex.ExplanationRecord]]:
        return load_records(self.data, lambda qs: ex.verifier_records(qs), min_words=0,
                            out_dir=self.workdir / "data", name="verifier")

    def _row(self, record: ex.ExplanationRecord, index: int, group: int, where: str
             ) -> dict[str, np.ndarray]:
        ids, cut = encode_prompt(record.prompt, self.lm.tokenizer, self.data.max_prompt_tokens,
                                 self.data.chat_template)
        self.counts.add(cut, False)
        return {**prompt_row(ids, self.seq_len),
                "rating": np.float32(ex.parse_rating(record.output, f"{where} record {index}")),
                "group": np.int32(group)}

    @functools.cached_property
    def rows(self) -> dict[str, list[dict[str, np.ndarray]]]:
        out = {}
        for split, records in self.records.items():
            # Explanations of one question share a group (for the pair accuracy).
            groups: dict[str, int] = {}
            out[split] = [self._row(r, i, groups.setdefault(question_key(r), len(groups)),
                                    split) for i, r in enumerate(records)]
        if self.counts.prompts_cut:
            log.warning("verifier tokenisation: %s", self.counts.line())
        return out

    @functools.cached_property
    def train_mean(self) -> float:
        return float(np.mean([r["rating"] for r in self.rows["train"]]))

    def train_iterator(self, global_batch_size: int, seed: int, process_index: int,
                       process_count: int):
        return pipeline.train_iterator(self.rows["train"], global_batch_size=global_batch_size,
                                       seed=seed, process_index=process_index,
                                       process_count=process_count)

    def eval_batches(self, batch_size: int, process_index: int, process_count: int):
        return pipeline.eval_batches(self.rows["eval"], batch_size=batch_size,
                                     process_index=process_index, process_count=process_count)

    # ------------------------------------------------------------------ model
    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        # The base from `rng` itself, as the generator's tasks draw it: a tiny random base
        # is then the same for a generator and a verifier of one seed (shared at inference).
        trainable, frozen = self.lm.init(rng)
        head_rng = jax.random.fold_in(rng, 1)
        hidden = self.lm.cfg.hidden_size
        head = siamese.init_regression_head(head_rng, hidden, hidden // 2)
        # Start at the mean rating, so the first steps are not spent moving the output into 0-5.
        head["out"]["bias"] = jnp.full_like(head["out"]["bias"], self.train_mean)
        return {**trainable, "head": head}, frozen

    def logical_axes(self) -> tuple[dict, dict]:
        trainable, frozen = self.lm.logical_axes()
        return {**trainable, "head": siamese.regression_head_axes()}, frozen

    def predict(self, trainable: Any, frozen: Any, batch: Any, rng: jax.Array | None = None):
        mask = batch["attention_mask"]
        hidden = self.lm.hidden({"lora": trainable["lora"]}, frozen, batch["input_ids"],
                                attention_mask=mask, rng=rng)
        return rate_hidden(hidden, mask, trainable["head"])

    def loss(self, trainable, frozen, batch, rng, step):
        del step
        error = self.predict(trainable, frozen, batch, rng) - batch["rating"]
        loss = jnp.mean(error ** 2) if self.loss_name == "mse" else jnp.mean(jnp.abs(error))
        return loss, {"mae": jnp.mean(jnp.abs(error))}

    def eval_step(self, trainable, frozen, batch) -> dict[str, jax.Array]:
        return {"prediction": self.predict(trainable, frozen, batch), "rating": batch["rating"],
                "group": batch["group"], "weight": batch["weight"]}

    def summarize(self, outputs: list[dict]) -> dict[str, float]:
        cat = {k: np.concatenate([np.asarray(o[k]) for o in outputs]) for k in outputs[0]}
        keep = cat["weight"] > 0
        pred, true, group = cat["prediction"][keep], cat["rating"][keep], cat["group"][keep]
        clipped = np.clip(pred, 0.0, ex.MAX_RATING)
        accuracy, n_pairs = metrics.grouped_pair_accuracy(group, true, pred)
        return {"loss": float(np.mean((pred - true) ** 2) if self.loss_name == "mse"
                              else np.mean(np.abs(pred - true))),
                "mae": metrics.mae(true, clipped), "rmse": metrics.rmse(true, clipped),
                "pearson": metrics.pearson(true, pred), "pair_accuracy": accuracy,
                "pairs": float(n_pairs), "explanations": float(keep.sum())}

    # ------------------------------------------------------------------ engine accounting
    def tokens_in_batch(self, batch) -> int:
        return int(np.asarray(batch["attention_mask"]).sum())

    def flops_per_token(self) -> float:
        return self.lm.flops_per_token(self.seq_len)

    # ------------------------------------------------------------------ reporting
    def describe(self) -> dict[str, Any]:
        records = self.records
        return {"model": self.lm.describe(),
                "verifier": f"{len(records['train'])} train / {len(records['eval'])} eval "
                            f"rated explanations ({self.data.train_file or 'demo bank'}), "
                            f"{self.loss_name} on the 0-5 rating, head starts at "
                            f"{self.train_mean:.2f}"}

    def headline_metrics(self) -> tuple[str, ...]:
        return ("mae", "pearson", "pair_accuracy")

    def best_metric(self) -> tuple[str, str]:
        return "eval_mae", "min"

    def export(self, trainable: dict, frozen: dict, out_dir: str | Path) -> list[Path]:
        """PEFT adapter + merged model (`CausalLM.export`), the head as safetensors and
        `verifier.json` (how to build its input and read its output)."""
        out = Path(out_dir)
        written = self.lm.export({"lora": trainable["lora"]}, frozen, out)
        written.append(save_head(trainable["head"], out / "head.safetensors", HEAD_FORMAT))
        info = {"pooling": "masked_mean", "in_features": self.lm.cfg.hidden_size,
                "width": self.lm.cfg.hidden_size // 2, "activation": "relu",
                "instruction": ex.VERIFIER_INSTRUCTION, "input": "question_input + "
                f"{ex.EXPLANATION_MARKER!r} + explanation", "output": "rating 0-5",
                **{k: v for k, v in dataclasses.asdict(self.data).items()
                   if k in ("max_prompt_tokens", "chat_template")}}
        (out / "verifier.json").write_text(json.dumps(info, indent=1) + "\n")
        return written + [out / "verifier.json"]
