"""Causal-LM fine-tuning (LoRA or full) on a text file: the engine's end-to-end task, a
composition of the `CausalLM` part with packed text data."""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any, Iterator

import jax
import numpy as np

from aes_jax.data import pipeline
from aes_jax.data.demo_text import write_demo_corpus
from aes_jax.eval.metrics import lm_summary
from aes_jax.losses.lm import masked_labels, summed_nll
from aes_jax.losses.reduce import masked_mean
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TextData:
    """config.data of lm_lora, validated once."""

    train_file: str = ""  # "" = the synthetic demo corpus in WORKDIR/data/
    eval_file: str = ""  # "" = hold out the last eval_fraction of the train tokens
    eval_fraction: float = 0.1
    seq_len: int = 256

    def __post_init__(self):
        if not 0.0 < self.eval_fraction < 1.0 and not self.eval_file:
            raise ValueError(f"config.data.eval_fraction={self.eval_fraction}: expected (0, 1)")
        if self.seq_len < 2:
            raise ValueError(f"config.data.seq_len={self.seq_len}: expected >= 2")

    @classmethod
    def from_config(cls, data: Any) -> "TextData":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


class LMLoraTask:
    def __init__(self, config: Any, workdir: str | Path):
        self.data = TextData.from_config(config.data)
        self.lm = CausalLM(CausalLMSpec.from_config(config))
        self.demo_file = Path(workdir) / "data" / "demo_corpus.txt"

    @property
    def tokenizer(self):
        return self.lm.tokenizer

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> None:
        if not self.data.train_file:
            write_demo_corpus(self.demo_file)

    def _tokenize_file(self, path: Path) -> tuple[np.ndarray, pipeline.TextLinesSource]:
        lines = pipeline.TextLinesSource(path)
        docs = [self.tokenizer.encode(lines[i]) for i in range(len(lines))]
        return pipeline.pack_documents(docs, self.tokenizer.eos_id), lines

    @functools.cached_property
    def sources(self) -> tuple[pipeline.PackedTokenSource, pipeline.PackedTokenSource]:
        """(train, eval), tokenised on first use."""
        d = self.data
        train_file = Path(d.train_file) if d.train_file else self.demo_file
        stream, lines = self._tokenize_file(train_file)
        if d.eval_file:
            eval_stream, _ = self._tokenize_file(Path(d.eval_file))
        else:
            cut = int(len(stream) * (1.0 - d.eval_fraction))
            stream, eval_stream = stream[:cut], stream[cut:]
        train = pipeline.PackedTokenSource(stream, d.seq_len)
        evals = pipeline.PackedTokenSource(eval_stream, d.seq_len)
        log.info("%s: %d lines (%d blank skipped, %d with undecodable bytes) -> %d train / %d eval "
                 "sequences of %d tokens (%d + %d tail tokens unused)", train_file, len(lines),
                 lines.num_blank_skipped, lines.num_replaced, len(train), len(evals), d.seq_len,
                 train.num_dropped_tokens, evals.num_dropped_tokens)
        return train, evals

    def train_iterator(self, global_batch_size: int, seed: int, process_index: int,
                       process_count: int):
        return pipeline.train_iterator(self.sources[0], global_batch_size=global_batch_size,
                                       seed=seed, process_index=process_index,
                                       process_count=process_count)

    def eval_batches(self, batch_size: int, process_index: int, process_count: int) -> Iterator:
        return pipeline.eval_batches(self.sources[1], batch_size=batch_size,
                                     process_index=process_index, process_count=process_count)

    # ------------------------------------------------------------------ model
    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        return self.lm.init(rng)

    def logical_axes(self) -> tuple[dict, dict]:
        return self.lm.logical_axes()

    def loss(self, trainable, frozen, batch, rng, step):
        nll = self.lm.token_nll(trainable, frozen, batch["input_ids"],
                                masked_labels(batch["targets"], batch["loss_mask"]), rng=rng)
        return masked_mean(nll, batch["loss_mask"]), {}

    def eval_step(self, trainable, frozen, batch) -> dict[str, jax.Array]:
        nll = self.lm.token_nll(trainable, frozen, batch["input_ids"],
                                masked_labels(batch["targets"], batch["loss_mask"]))
        return summed_nll(nll, batch["loss_mask"], batch["weight"])

    def summarize(self, outputs: list[dict]) -> dict[str, float]:
        return lm_summary(outputs)

    # ------------------------------------------------------------------ console
    def describe(self) -> dict[str, str]:
        train, evals = self.sources
        d = self.data
        return {"model": self.lm.describe(),
                "data": f"{d.train_file or self.demo_file}: {len(train)} train / {len(evals)} "
                        f"eval sequences of {d.seq_len} tokens"}

    def headline_metrics(self) -> tuple[str, ...]:
        return ("loss", "perplexity")

    def best_metric(self) -> tuple[str, str]:
        return "eval_loss", "min"

    def tokens_in_batch(self, batch) -> int:
        return int(np.asarray(batch["loss_mask"]).sum())

    def flops_per_token(self) -> float:
        return self.lm.flops_per_token(self.data.seq_len)

    # ------------------------------------------------------------------ export
    def export(self, trainable: dict, frozen: dict, out_dir: str | Path) -> list[Path]:
        return self.lm.export(trainable, frozen, out_dir)
