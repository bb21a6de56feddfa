"""LoRA adapters in their own `lora` collection, so the base params stay frozen.

`Llama(cfg.replace(lora=LoraConfig(...)))` creates, at init, a pair (a, b) for every
projection whose module path matches `targets`. At apply time the adapters are used
when the `lora` collection is passed and ignored otherwise, so the frozen base (e.g. the
DPO reference model) is the same apply without `"lora"`:

    logits = Llama(cfg).apply({"params": base, "lora": adapters}, ids)
    ref    = Llama(cfg).apply({"params": base}, ids)

Shapes keep the head structure of the kernel: a [*in, r], b [r, *out]; PEFT's
lora_A.weight [r, in] and lora_B.weight [out, r] are reshapes/transposes of them.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from aes_jax.models import linear

Array = jax.Array

ATTENTION_TARGETS = r"self_attn/(q|k|v|o)_proj$"
ALL_LINEAR_TARGETS = r"(self_attn/(q|k|v|o)_proj|mlp/(gate|up|down)_proj)$"
LORA_RANK_AXIS = "lora_rank"


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: str = ATTENTION_TARGETS  # regex searched in "layers/self_attn/q_proj"-style paths
    use_rslora: bool = False  # scale alpha / sqrt(r) instead of alpha / r (Kalajdzievski 2023)

    def __post_init__(self):
        if self.rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        re.compile(self.targets)

    @property
    def scale(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    def matches(self, module_path: tuple[str, ...]) -> bool:
        return re.search(self.targets, "/".join(module_path)) is not None


def kaiming_uniform_a(fan_in: int):
    """PEFT's default for lora_A: kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def adapter_delta(module: nn.Module, cfg: LoraConfig | None, x: Array,
                  in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                  in_axes: tuple[str, ...], out_axes: tuple[str, ...],
                  param_dtype: Any, dtype: Any,
                  project: Callable[..., Array] = linear.project) -> Array | None:
    """Called inside a projection: the LoRA term for input x [..., *in_shape], or None when
    this module has no adapter (not targeted, or the `lora` collection was not passed)."""
    if cfg is None or not cfg.matches(module.path):
        return None
    if not (module.is_initializing() or module.has_variable("lora", "a")):
        return None
    a = module.variable("lora", "a", nn.with_logical_partitioning(
        kaiming_uniform_a(math.prod(in_shape)), in_axes + (LORA_RANK_AXIS,)),
        module.make_rng("params") if module.is_initializing() else None,
        in_shape + (cfg.rank,), param_dtype).value
    b = module.variable("lora", "b", nn.with_logical_partitioning(
        nn.initializers.zeros, (LORA_RANK_AXIS,) + out_axes),
        None, (cfg.rank,) + out_shape, param_dtype).value
    if cfg.dropout > 0 and module.has_rng("dropout"):
        # Dropout only when the caller passes a dropout rng, i.e. in training steps.
        keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - cfg.dropout, x.shape)
        x = jnp.where(keep, x / (1.0 - cfg.dropout), 0).astype(x.dtype)
    xa = project(x.astype(dtype), a.astype(dtype), len(in_shape))
    return project(xa, b.astype(dtype)) * cfg.scale


def _merge_one(kernel: Array, a: Array, b: Array, scale: float, sign: float) -> Array:
    # a: [*lead, *in, r], b: [*lead, r, *out], kernel: [*lead, *in, *out]
    n_lead = a.ndim + b.ndim - 2 - kernel.ndim
    lead = kernel.shape[:n_lead]
    r = a.shape[-1]
    a2 = a.reshape(lead + (-1, r)).astype(jnp.float32)
    b2 = b.reshape(lead + (r, -1)).astype(jnp.float32)
    delta = jnp.matmul(a2, b2).reshape(kernel.shape) * scale
    return (kernel.astype(jnp.float32) + sign * delta).astype(kernel.dtype)


def _walk(params: dict, lora: dict, scale: float, sign: float) -> dict:
    out = dict(params)
    for name, sub in lora.items():
        if set(sub) == {"a", "b"}:
            out[name] = dict(params[name])
            out[name]["kernel"] = _merge_one(params[name]["kernel"], sub["a"], sub["b"], scale, sign)
        else:
            out[name] = _walk(params[name], sub, scale, sign)
    return out


def merge(params: dict, lora: dict, cfg: LoraConfig) -> dict:
    """Base params with the adapters folded into their kernels (for export)."""
    return _walk(params, lora, cfg.scale, +1.0)


def unmerge(params: dict, lora: dict, cfg: LoraConfig) -> dict:
    """Inverse of `merge` (up to float rounding)."""
    return _walk(params, lora, cfg.scale, -1.0)


def count_params(tree: Any) -> int:
    return sum(x.size for x in jax.tree.leaves(tree))


def _pad_rank(x: Array, axis: int, rank: int) -> Array:
    shape = list(x.shape)
    shape[axis] = rank
    return jnp.zeros(shape, x.dtype)


def _concat_walk(t1: dict | None, t2: dict | None, r1: int, r2: int, s1: float, s2: float,
                 b_axis: int) -> dict:
    out = {}
    for name in sorted(set(t1 or {}) | set(t2 or {})):
        x1, x2 = (t1 or {}).get(name), (t2 or {}).get(name)
        probe = x1 if x1 is not None else x2
        if set(probe) != {"a", "b"}:
            out[name] = _concat_walk(x1, x2, r1, r2, s1, s2, b_axis)
            continue
        a1 = x1["a"] if x1 is not None else _pad_rank(x2["a"], -1, r1)
        a2 = x2["a"] if x2 is not None else _pad_rank(x1["a"], -1, r2)
        b1 = x1["b"] * s1 if x1 is not None else _pad_rank(x2["b"], b_axis, r1)
        b2 = x2["b"] * s2 if x2 is not None else _pad_rank(x1["b"], b_axis, r2)
        out[name] = {"a": jnp.concatenate([a1, a2], axis=-1),
                     "b": jnp.concatenate([b1, b2], axis=b_axis).astype(probe["b"].dtype)}
    return out


def concat(first: tuple[LoraConfig, dict], second: tuple[LoraConfig, dict], *,
           scan_layers: bool) -> tuple[LoraConfig, dict]:
    """Two adapters on one base as one adapter of rank r1 + r2 whose delta is the sum of
    theirs (the scales folded into b, scale 1): an SFT adapter and the DPO adapter trained
    on top of it run on the unmerged base, which other adapters share. A module only one of
    them adapts gets zeros in the other's half."""
    (c1, t1), (c2, t2) = first, second
    rank = c1.rank + c2.rank
    targets = c1.targets if c1.targets == c2.targets else f"({c1.targets})|({c2.targets})"
    cfg = LoraConfig(rank=rank, alpha=float(rank), dropout=0.0, targets=targets)
    return cfg, _concat_walk(t1, t2, c1.rank, c2.rank, c1.scale, c2.scale,
                             1 if scan_layers else 0)
