"""A LLaMA causal LM with optional LoRA, as a part that LLaMA-based tasks hold.

The part owns what every such task needs: loading (a tiny random model with byte tokens,
a local HF dir, a .gguf file, or the packaged SmolLM2 by default), the trainable/frozen
split (LoRA: adapters train, the base is frozen; full fine-tuning: everything trains),
logical axes, logits with or without the adapters (without = the frozen base, DPO's and
PPO's reference model), final hidden states for pooling heads, the LM head, FLOPs per
token and the Hugging Face export (PEFT adapter + merged model).

Base weights are read in `init`, not when the part is built, so a task can be built
(to read its config, tokenizer or score format) without loading a model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping

import jax

from aes_jax.data.tokenizers import ByteTokenizer, HFTokenizer
from aes_jax.interop import assets, hf, peft
from aes_jax.losses.blockwise import blockwise_map, token_nll_of_block
from aes_jax.models import lora as lora_lib
from aes_jax.models.llama import (Llama, LlamaConfig, flops_per_token, init_lora,
                                  init_params, logical_axes, output_embedding)


@dataclasses.dataclass(frozen=True)
class CausalLMSpec:
    """The config fields that choose and shape the model (flags keep their names:
    --config.model, --config.use_lora, --config.lora.rank, --config.dtype, ...)."""

    model: str = ""  # "" = packaged SmolLM2-135M-Instruct; "tiny"; an HF dir or .gguf
    tiny_model: Mapping[str, int] = dataclasses.field(default_factory=dict)
    use_lora: bool = True
    lora: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dtype: str = "float32"  # compute dtype
    param_dtype: str = "float32"
    scan_layers: bool = True
    remat: bool | str = False  # or a jax.checkpoint_policies name (models.llama.REMAT_POLICIES)
    attention: str = "auto"  # models.attention.IMPLEMENTATIONS
    attention_block: int = 256  # tile of the chunked implementation
    # Tokens per block of the blockwise loss (losses.blockwise); 0 = full logits.
    loss_block_tokens: int = 1024

    @classmethod
    def from_config(cls, config: Any) -> "CausalLMSpec":
        names = [f.name for f in dataclasses.fields(cls)]
        values = {k: config[k] for k in names if k in config}
        for key in ("tiny_model", "lora"):
            if key in values:
                values[key] = dict(values[key])
        return cls(**values)


class CausalLM:
    """`CausalLM(spec)`: config and tokenizer now, weights in `init`."""

    def __init__(self, spec: CausalLMSpec):
        self.spec = spec
        runtime = dict(dtype=spec.dtype, scan_layers=spec.scan_layers, remat=spec.remat,
                       attention=spec.attention, attention_block=spec.attention_block)
        self._gguf_params = None
        if spec.model == "tiny":
            self.path = None
            self.tokenizer = ByteTokenizer()
            tok = self.tokenizer
            base = LlamaConfig(vocab_size=tok.vocab_size, max_position_embeddings=4096,
                               rms_norm_eps=1e-5, eos_token_id=tok.eos_id,
                               pad_token_id=tok.pad_id, bos_token_id=tok.bos_id,
                               param_dtype=spec.param_dtype, **dict(spec.tiny_model), **runtime)
        else:
            self.path = Path(spec.model) if spec.model else assets.smollm2_dir()
            self.tokenizer = HFTokenizer(self.tokenizer_dir)
            if self.path.is_file():  # a .gguf holds config and weights in one file
                base, self._gguf_params = hf.load_llama(self.path, param_dtype=spec.param_dtype,
                                                        **runtime)
            else:
                base = hf.read_hf_config(self.path, **runtime).replace(
                    param_dtype=spec.param_dtype)
        self.cfg = (base.replace(lora=lora_lib.LoraConfig(**dict(spec.lora)))
                    if spec.use_lora else base)
        self.module = Llama(self.cfg)

    @property
    def tokenizer_dir(self) -> Path | None:
        if self.path is None:
            return None
        return self.path.parent if self.path.is_file() else self.path

    def describe(self) -> str:
        """One line for the training header: which model, its shape, how it is tuned."""
        c = self.cfg
        name = "tiny random LLaMA" if self.path is None else str(self.path)
        tuning = (f"LoRA rank {c.lora.rank} on {c.lora.targets}" if self.uses_lora
                  else "full fine-tuning")
        return (f"{name} ({c.num_hidden_layers} layers, hidden {c.hidden_size}, "
                f"{self.spec.dtype}), {tuning}")

    @property
    def base_cfg(self) -> LlamaConfig:
        return self.cfg.replace(lora=None)

    @property
    def uses_lora(self) -> bool:
        return self.cfg.lora is not None

    # ------------------------------------------------------------------ parameters
    def load_base_params(self, rng: jax.Array) -> dict:
        """The pretrained weights (read now), or random ones for the tiny model."""
        if self.path is None:
            return init_params(self.base_cfg, rng)
        if self._gguf_params is not None:
            return self._gguf_params
        _, params = hf.load_llama(self.path, param_dtype=self.spec.param_dtype,
                                  dtype=self.spec.dtype, scan_layers=self.spec.scan_layers,
                                  remat=self.spec.remat, attention=self.spec.attention,
                                  attention_block=self.spec.attention_block)
        return params

    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        """-> (trainable, frozen): LoRA ({"lora"}, {"params"}); full ({"params"}, {})."""
        base_rng, lora_rng = jax.random.split(rng)
        params = self.load_base_params(base_rng)
        if not self.uses_lora:
            return {"params": params}, {}
        return {"lora": init_lora(self.cfg, lora_rng)}, {"params": params}

    def logical_axes(self) -> tuple[dict, dict]:
        params = logical_axes(self.cfg)
        if not self.uses_lora:
            return {"params": params}, {}
        return {"lora": logical_axes(self.cfg, "lora")}, {"params": params}

    def base_params(self, trainable: Mapping, frozen: Mapping) -> dict:
        return frozen["params"] if self.uses_lora else trainable["params"]

    # ------------------------------------------------------------------ forward passes
    def _apply(self, trainable: Mapping, frozen: Mapping, input_ids: jax.Array, *,
               adapters: bool, rng: jax.Array | None, **kwargs):
        rngs = {"dropout": rng} if rng is not None else {}
        if adapters:
            return self.module.apply({**frozen, **trainable}, input_ids, rngs=rngs, **kwargs)
        if not self.uses_lora:
            raise ValueError("adapters=False is the frozen base of a LoRA model; under full "
                             "fine-tuning keep a reference copy of the weights in `frozen`")
        return Llama(self.base_cfg).apply({"params": frozen["params"]}, input_ids, rngs=rngs,
                                          **kwargs)

    def logits(self, trainable: Mapping, frozen: Mapping, input_ids: jax.Array, *,
               attention_mask: jax.Array | None = None, adapters: bool = True,
               rng: jax.Array | None = None) -> jax.Array:
        """[B, T, vocab] float32. `rng` turns LoRA dropout on (training)."""
        return self._apply(trainable, frozen, input_ids, adapters=adapters, rng=rng,
                           attention_mask=attention_mask)

    def hidden(self, trainable: Mapping, frozen: Mapping, input_ids: jax.Array, *,
               attention_mask: jax.Array | None = None, adapters: bool = True,
               rng: jax.Array | None = None) -> jax.Array:
        """[B, T, hidden] final-norm hidden states (no LM head), for pooled scorers."""
        out = self._apply(trainable, frozen, input_ids, adapters=adapters, rng=rng,
                          attention_mask=attention_mask, return_hidden=True,
                          compute_logits=False)
        return out.hidden

    def token_nll(self, trainable: Mapping, frozen: Mapping, input_ids: jax.Array,
                  labels: jax.Array, *, attention_mask: jax.Array | None = None,
                  adapters: bool = True, rng: jax.Array | None = None) -> jax.Array:
        """[B, T] -log p(labels | prefix), labels valid ids (mask ignore ids first).
        Blockwise over tokens (spec.loss_block_tokens) so training never holds the
        [B, T, vocab] float32 logits; 0 computes them whole."""
        return self.per_token(trainable, frozen, input_ids, labels, token_nll_of_block,
                              attention_mask=attention_mask, adapters=adapters, rng=rng)

    def per_token(self, trainable: Mapping, frozen: Mapping, input_ids: jax.Array,
                  labels: jax.Array, fn: Callable[[jax.Array, jax.Array], Any], *,
                  attention_mask: jax.Array | None = None, adapters: bool = True,
                  rng: jax.Array | None = None) -> Any:
        """`fn(logits [..., V] float32, labels [...])` -> a pytree of per-token values,
        evaluated a block of tokens at a time (`losses.blockwise.blockwise_map`) or on
        the whole [B, T, V] logits when spec.loss_block_tokens is 0; leaves [B, T, ...]."""
        if not self.spec.loss_block_tokens:
            return fn(self.logits(trainable, frozen, input_ids, attention_mask=attention_mask,
                                  adapters=adapters, rng=rng), labels)
        hidden = self.hidden(trainable, frozen, input_ids, attention_mask=attention_mask,
                             adapters=adapters, rng=rng)
        return blockwise_map(hidden, self.lm_head(trainable, frozen), labels, fn,
                             self.spec.loss_block_tokens)

    def lm_head(self, trainable: Mapping, frozen: Mapping) -> jax.Array:
        """[vocab, hidden] output embedding rows (EMO's cost embedding)."""
        return output_embedding(self.cfg, self.base_params(trainable, frozen))

    def flops_per_token(self, seq_len: int) -> float:
        return flops_per_token(self.cfg, seq_len)

    def load_adapter(self, adapter_dir: str | Path) -> tuple[lora_lib.LoraConfig, dict]:
        """A PEFT LoRA adapter dir trained on this base -> (its LoraConfig, its lora tree)."""
        cfg, lora = peft.load_peft_adapter(adapter_dir, self.base_cfg)
        return cfg.lora, lora

    def merge_adapter(self, params: Mapping, adapter_dir: str | Path) -> dict:
        """Base params with a PEFT adapter merged in: the frozen base a second adapter
        trains on (DPO after SFT), or what a sampler runs."""
        lora_cfg, lora = self.load_adapter(adapter_dir)
        return lora_lib.merge(dict(params), lora, lora_cfg)

    def inference_params(self, trainable: Mapping, frozen: Mapping) -> tuple[LlamaConfig, dict]:
        """(config without LoRA, params with the adapters merged in): what samplers run."""
        if not self.uses_lora:
            return self.cfg, trainable["params"]
        return self.base_cfg, lora_lib.merge(frozen["params"], trainable["lora"], self.cfg.lora)

    # ------------------------------------------------------------------ export
    def export(self, trainable: Mapping, frozen: Mapping, out_dir: str | Path,
               adapter: tuple[lora_lib.LoraConfig, Mapping] | None = None) -> list[Path]:
        """HF formats: a PEFT adapter dir plus the merged model for LoRA, the full model for
        full fine-tuning. Tokenizer files come from the base model dir; a random tiny base
        is exported too (as `base/`), so the adapter has something to load onto.
        `adapter`: (its LoraConfig, its tree) to export instead of trainable["lora"] (e.g.
        an SFT adapter concatenated with the one trained on top of it)."""
        out = Path(out_dir)
        if not self.uses_lora:
            return [hf.save_llama(self.base_cfg, trainable["params"], out / "model",
                                  tokenizer_source=self.tokenizer_dir)]
        lora_cfg, lora = adapter if adapter is not None else (self.cfg.lora, trainable["lora"])
        written = []
        base_path = self.path
        if base_path is None:
            base_path = hf.save_llama(self.base_cfg, frozen["params"], out / "base")
            written.append(base_path)
        written.append(peft.save_peft_adapter(self.base_cfg.replace(lora=lora_cfg), lora,
                                              out / "adapter",
                                              base_model_name_or_path=str(base_path)))
        merged = lora_lib.merge(frozen["params"], lora, lora_cfg)
        written.append(hf.save_llama(self.base_cfg, merged, out / "merged",
                                     tokenizer_source=self.tokenizer_dir))
        return written
