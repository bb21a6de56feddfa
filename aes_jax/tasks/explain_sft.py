"""RLearner's generator: LoRA SFT of a LLaMA on explanation records (the original's JSON),
the prompt in the chat template, the loss on the explanation tokens (and the end id) only.

Dev metrics: the explanation tokens' mean NLL and perplexity. The export (PEFT adapter +
merged model) is what `launch.build_preferences` samples from and what DPO merges into its
base (`--config.dpo.sft_adapter=EXPORT/adapter`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np

from aes_jax.data import pipeline
from aes_jax.data import explanations as ex
from aes_jax.data.chat_rows import completion_rows
from aes_jax.eval.metrics import lm_summary
from aes_jax.losses.lm import masked_labels, summed_nll
from aes_jax.losses.reduce import masked_mean
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec
from aes_jax.data.chat_rows import CutCounts
from aes_jax.tasks.explain_data import ExplanationData, encode_record, load_records

log = logging.getLogger(__name__)


class ExplainSftTask:
    def __init__(self, config: Any, workdir: str | Path):
        self.data = ExplanationData.from_config(config.data)
        self.lm = CausalLM(CausalLMSpec.from_config(config))
        self.workdir = Path(workdir)
        self.counts = CutCounts()

    @property
    def seq_len(self) -> int:
        return self.data.max_prompt_tokens + self.data.max_completion_tokens - 1

    # ------------------------------------------------------------------ data
    @functools.cached_property
    def records(self) -> dict[str, list[ex.ExplanationRecord]]:
        d = self.data

        def from_bank(questions):
            return ex.sft_records(questions, min_rating=d.min_rating, min_words=d.min_words,
                                  include_candidates=d.include_candidates)

        return load_records(d, from_bank, min_words=d.min_words,
                            out_dir=self.workdir / "data", name="sft")

    @functools.cached_property
    def rows(self) -> dict[str, list[dict[str, np.ndarray]]]:
        out = {split: [completion_rows(*encode_record(r, self.lm.tokenizer, self.data,
                                                      self.counts), self.seq_len)
                       for r in records] for split, records in self.records.items()}
        if self.counts.any_cut:
            log.warning("SFT tokenisation: %s", self.counts.line())
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
    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        return self.lm.init(rng)

    def logical_axes(self) -> tuple[dict, dict]:
        return self.lm.logical_axes()

    def loss(self, trainable, frozen, batch, rng, step):
        del step
        return masked_mean(self._nll(trainable, frozen, batch, rng), batch["loss_mask"]), {}

    def eval_step(self, trainable, frozen, batch) -> dict[str, jax.Array]:
        return summed_nll(self._nll(trainable, frozen, batch), batch["loss_mask"],
                          batch["weight"])

    def _nll(self, trainable, frozen, batch, rng=None):
        return self.lm.token_nll(trainable, frozen, batch["input_ids"],
                                 masked_labels(batch["targets"], batch["loss_mask"]),
                                 attention_mask=batch["attention_mask"], rng=rng)

    def summarize(self, outputs: list[dict]) -> dict[str, float]:
        return lm_summary(outputs)

    # ------------------------------------------------------------------ engine accounting
    def tokens_in_batch(self, batch) -> int:
        return int(np.asarray(batch["attention_mask"]).sum())

    def flops_per_token(self) -> float:
        return self.lm.flops_per_token(self.seq_len)

    # ------------------------------------------------------------------ reporting
    def describe(self) -> dict[str, Any]:
        records = self.records
        return {"model": self.lm.describe(),
                "explanations": f"{len(records['train'])} train / {len(records['eval'])} eval "
                                f"({self.data.train_file or 'demo bank'}), {self.seq_len} "
                                "tokens per row, loss on the explanation only"}

    def headline_metrics(self) -> tuple[str, ...]:
        return ("loss", "perplexity")

    def best_metric(self) -> tuple[str, str]:
        return "eval_loss", "min"

    def export(self, trainable: dict, frozen: dict, out_dir: str | Path) -> list[Path]:
        return self.lm.export(trainable, frozen, out_dir)
