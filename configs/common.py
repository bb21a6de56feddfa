"""What every config shares: the engine settings (defined once, in
`aes_jax.train.engine_config.EngineConfig`), the LLaMA model block of LLaMA-based tasks,
and `parse_arg` for the `:variant` part of `--config=configs/X.py:ARG`."""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from aes_jax.models.lora import ATTENTION_TARGETS
from aes_jax.train.engine_config import EngineConfig


def engine(**overrides: Any) -> ml_collections.ConfigDict:
    """A config holding the engine settings (seed, steps, batch, cadence, optimizer, EMA,
    mesh, sharding rules) at their defaults, then `overrides`. `optimizer` overrides are
    merged key by key into the default optimizer block."""
    values = dataclasses.asdict(EngineConfig())
    unknown = set(overrides) - set(values)
    if unknown:
        raise KeyError(f"not engine settings: {sorted(unknown)} (set them on the config)")
    optimizer = {**values["optimizer"], **overrides.pop("optimizer", {})}
    values.update(overrides, optimizer=optimizer)
    values["sharding_rules"] = [list(rule) for rule in values["sharding_rules"]]
    return ml_collections.ConfigDict(values)


TINY_LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16)


def add_causal_lm(c: ml_collections.ConfigDict, *, tiny: bool, lora_rank: int = 8,
                  lora_alpha: float = 16.0, lora_targets: str = ATTENTION_TARGETS) -> None:
    """The fields `aes_jax.parts.causal_lm.CausalLMSpec` reads, at the top level of `c`
    (so the flags are --config.model, --config.use_lora, --config.lora.rank, ...)."""
    # "" = the packaged SmolLM2-135M-Instruct; "tiny" = a tiny random LLaMA (byte tokenizer);
    # otherwise a local HF LLaMA directory or .gguf file.
    c.model = "tiny" if tiny else ""
    c.tiny_model = ml_collections.ConfigDict(TINY_LLAMA)
    c.use_lora = True  # False = full fine-tuning of every parameter
    c.lora = ml_collections.ConfigDict(dict(rank=lora_rank, alpha=lora_alpha, dropout=0.05,
                                            targets=lora_targets, use_rslora=False))
    c.dtype = "float32"  # compute dtype; "bfloat16" keeps float32 master weights
    c.param_dtype = "float32"
    c.scan_layers = True
    # "" = keep activations; "full" = recompute each layer in backward; or a policy that
    # saves some of them: "dots_saveable", "dots_with_no_batch_dims_saveable", ...
    c.remat = ""
    # "auto" (cuDNN flash on GPU in bf16; elsewhere chunked for inputs longer than one
    # tile, else XLA), einsum, xla, cudnn, chunked
    c.attention = "auto"
    c.attention_block = 256  # tile of the chunked attention
    c.loss_block_tokens = 1024  # tokens per blockwise-loss block; 0 = full [B, T, V] logits


def _convert(text: str, default: Any, name: str) -> Any:
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", ""):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"config arg {name}={text!r}: expected true/false")
    try:
        return type(default)(text) if default is not None else text
    except ValueError:
        raise ValueError(f"config arg {name}={text!r}: expected a "
                         f"{type(default).__name__}") from None


def parse_arg(arg: str | None, **spec: Any) -> ml_collections.ConfigDict:
    """"tiny" or "variant=fusion,trait=grammar,smoke" -> ConfigDict of `spec`'s keys.

    `spec` gives each option's default (its type converts the string). A bare word sets
    a boolean option of that name to True, or else the `variant` option (so the
    historical `:tiny`, `:demo`, `:cpu`, `:paper` keep working). Unknown names are refused."""
    values = dict(spec)
    for token in filter(None, (t.strip() for t in (arg or "").split(","))):
        name, sep, text = token.partition("=")
        if not sep:
            if isinstance(spec.get(name), bool):
                values[name] = True
                continue
            if "variant" not in spec:
                raise ValueError(f"config arg {token!r}: expected name=value (options: "
                                 f"{sorted(spec)})")
            name, text = "variant", token
        if name not in spec:
            raise ValueError(f"config arg {name!r}: unknown (options: {sorted(spec)})")
        values[name] = _convert(text, spec[name], name)
    return ml_collections.ConfigDict(values)
