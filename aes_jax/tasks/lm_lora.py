"""Causal-LM fine-tuning (LoRA or full) on a text file: the engine's end-to-end task."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.data import pipeline
from aes_jax.data.demo_text import write_demo_corpus
from aes_jax.data.tokenizers import ByteTokenizer, HFTokenizer
from aes_jax.interop import assets, hf, peft
from aes_jax.losses.lm import masked_cross_entropy, token_nll
from aes_jax.models import lora as lora_lib
from aes_jax.models.llama import Llama, LlamaConfig, init_lora, init_params, logical_axes
from aes_jax.tasks.base import mean_from_sums

log = logging.getLogger(__name__)


def model_path(config) -> Path | None:
    if config.model == "tiny":
        return None
    return Path(config.model) if config.model else assets.smollm2_dir()


def load_model(config) -> tuple[LlamaConfig, dict | None, Any]:
    """-> (LlamaConfig, pretrained params or None for a random tiny model, tokenizer)."""
    runtime = dict(dtype=config.dtype, scan_layers=config.scan_layers, remat=config.remat)
    if config.model == "tiny":
        tok = ByteTokenizer()
        cfg = LlamaConfig(vocab_size=tok.vocab_size, max_position_embeddings=4096,
                          rms_norm_eps=1e-5, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id,
                          bos_token_id=tok.bos_id, param_dtype=config.param_dtype,
                          **dict(config.tiny_model), **runtime)
        return cfg, None, tok
    path = model_path(config)
    cfg, params = hf.load_llama(path, param_dtype=config.param_dtype, **runtime)
    tok_dir = path.parent if path.is_file() else path
    return cfg, params, HFTokenizer(tok_dir)


class LMLoraTask:
    def __init__(self, config, workdir: str | Path):
        self.config = config
        cfg, self._pretrained, self.tokenizer = load_model(config)
        if config.use_lora:
            cfg = cfg.replace(lora=lora_lib.LoraConfig(**dict(config.lora)))
        self.model_cfg = cfg
        self.model = Llama(cfg)
        self.train_source, self.eval_source = self._sources(Path(workdir))

    # ------------------------------------------------------------------ data
    def _tokenize_file(self, path: Path) -> tuple[np.ndarray, pipeline.TextLinesSource]:
        lines = pipeline.TextLinesSource(path)
        docs = [self.tokenizer.encode(lines[i]) for i in range(len(lines))]
        return pipeline.pack_documents(docs, self.tokenizer.eos_id), lines

    def _sources(self, workdir: Path):
        d = self.config.data
        train_file = Path(d.train_file) if d.train_file else write_demo_corpus(
            workdir / "data" / "demo_corpus.txt")
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
        return pipeline.train_iterator(self.train_source, global_batch_size=global_batch_size,
                                       seed=seed, process_index=process_index,
                                       process_count=process_count, map_fn=self.record_fn())

    def eval_batches(self, batch_size: int, process_index: int, process_count: int) -> Iterator:
        return pipeline.eval_batches(self.eval_source, batch_size=batch_size,
                                     process_index=process_index, process_count=process_count,
                                     map_fn=self.record_fn())

    def record_fn(self):
        """Per-record map from source item to batch row (None: the source yields rows)."""
        return None

    # ------------------------------------------------------------------ model
    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        base_rng, lora_rng = jax.random.split(rng)
        params = self._pretrained
        if params is None:
            params = init_params(self.model_cfg.replace(lora=None), base_rng)
        if self.model_cfg.lora is None:
            return {"params": params}, {}
        return {"lora": init_lora(self.model_cfg, lora_rng)}, {"params": params}

    def logical_axes(self) -> tuple[dict, dict]:
        params = logical_axes(self.model_cfg)
        if self.model_cfg.lora is None:
            return {"params": params}, {}
        return {"lora": logical_axes(self.model_cfg, "lora")}, {"params": params}

    def _logits(self, trainable, frozen, batch, rng=None):
        rngs = {"dropout": rng} if rng is not None else {}
        return self.model.apply({**frozen, **trainable}, batch["input_ids"], rngs=rngs)

    def loss(self, trainable, frozen, batch, rng):
        logits = self._logits(trainable, frozen, batch, rng)
        return masked_cross_entropy(logits, batch["targets"], batch["loss_mask"]), {}

    def eval_step(self, trainable, frozen, batch) -> dict[str, jax.Array]:
        logits = self._logits(trainable, frozen, batch)
        mask = batch["loss_mask"].astype(jnp.float32) * batch["weight"][:, None]
        return {"loss_sum": jnp.sum(token_nll(logits, batch["targets"]) * mask),
                "loss_count": jnp.sum(mask)}

    def summarize(self, outputs: list[dict]) -> dict[str, float]:
        metrics = mean_from_sums(outputs)
        metrics["perplexity"] = float(np.exp(min(metrics["loss"], 50.0)))
        return metrics

    def tokens_in_batch(self, batch) -> int:
        return int(np.asarray(batch["loss_mask"]).sum())

    def flops_per_token(self) -> float:
        """6 N (matmul params, fwd + bwd) + attention scores, as in the PaLM MFU convention."""
        c = self.model_cfg
        per_layer = (c.hidden_size * c.head_dim * (2 * c.num_attention_heads
                                                  + 2 * c.num_key_value_heads)
                     + 3 * c.hidden_size * c.intermediate_size)
        n = c.num_hidden_layers * per_layer + c.vocab_size * c.hidden_size
        attention = 12 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * self.config.data.seq_len
        return 6.0 * n + attention

    # ------------------------------------------------------------------ export
    def export(self, trainable: dict, frozen: dict, out_dir: str | Path) -> list[Path]:
        """HF formats: a PEFT adapter dir plus the merged model for LoRA runs, the full
        model for full fine-tuning. Tokenizer files come from the base model dir."""
        out = Path(out_dir)
        path = model_path(self.config)
        tokenizer_dir = None if path is None else (path.parent if path.is_file() else path)
        base_cfg = self.model_cfg.replace(lora=None)
        if self.model_cfg.lora is None:
            return [hf.save_llama(base_cfg, trainable["params"], out / "model",
                                  tokenizer_source=tokenizer_dir)]
        written = []
        if path is None:  # a random base exists only here: export it so the adapter is usable
            path = hf.save_llama(base_cfg, frozen["params"], out / "base")
            written.append(path)
        written.append(peft.save_peft_adapter(self.model_cfg, trainable["lora"], out / "adapter",
                                              base_model_name_or_path=str(path)))
        merged = lora_lib.merge(frozen["params"], trainable["lora"], self.model_cfg.lora)
        written.append(hf.save_llama(base_cfg, merged, out / "merged",
                                     tokenizer_source=tokenizer_dir))
        return written
