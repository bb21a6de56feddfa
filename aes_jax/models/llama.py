"""LLaMA-3 decoder in functional Flax Linen, numerically matched to transformers.

Layout choices follow Hugging Face so that conversion is transpose/reshape only:
half-split RoPE ("rotate_half"), float32 RMSNorm statistics, float32 softmax.
Every parameter carries logical axis names; `aes_jax.train.sharding` maps them
onto a device mesh.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.models import attention as attention_lib
from aes_jax.models import linear
from aes_jax.models import lora as lora_lib
from aes_jax.models import norm_act
from aes_jax.models.dtypes import compute_dtype

Array = jax.Array

# Logical axis names used by the parameters below. Sharding rules map these.
EMBED, VOCAB, HEADS, KV_HEADS, HEAD_DIM, MLP, NORM, LAYERS = (
    "embed", "vocab", "heads", "kv_heads", "head_dim", "mlp", "norm", "layers")

# Activation axes: constrained only when a logical-axis-rules context is active (training);
# elsewhere the constraints are no-ops.
ACT_BATCH, ACT_LENGTH, ACT_EMBED, ACT_VOCAB = (
    "activation_batch", "activation_length", "activation_embed", "activation_vocab")
RESIDUAL_AXES = (ACT_BATCH, ACT_LENGTH, ACT_EMBED)

_SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


class ConfigError(ValueError):
    """A config.json that does not describe a model this code can run."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling as in HF `rope_scaling` / `rope_parameters`."""

    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def to_hf_dict(self) -> dict[str, Any]:
        if self.rope_type == "linear":
            return {"rope_type": "linear", "factor": self.factor}
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture (from HF config.json) plus how to run it (dtype, scan, remat)."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    # The dtype the checkpoint stores its weights in ("float32", "bfloat16", ...).
    torch_dtype: str = "float32"
    # How to run it; not part of config.json.
    dtype: str = "float32"  # activation / matmul dtype
    param_dtype: str = "float32"  # dtype of freshly initialised params
    scan_layers: bool = True
    remat: bool | str = False  # True / "full" (save nothing) or a REMAT_POLICIES name
    # attention.IMPLEMENTATIONS; "auto" = cuDNN flash on GPU in 16 bits, elsewhere the
    # chunked one for inputs longer than a tile, else XLA's.
    attention: str = "auto"
    attention_block: int = 256  # query / key tile of the chunked implementation
    lora: lora_lib.LoraConfig | None = None  # adapters in the "lora" collection

    def __post_init__(self):
        if self.remat:
            remat_policy(self.remat)
        attention_lib.resolve(self.attention, self.dtype, platform="cpu")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}")

    def replace(self, **changes) -> "LlamaConfig":
        return dataclasses.replace(self, **changes)

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any], source: str = "config.json",
                     **runtime) -> "LlamaConfig":
        """Reads both the transformers-4 layout (top-level `rope_theta`, `rope_scaling`)
        and the transformers-5 one (`rope_parameters`)."""
        model_type = d.get("model_type")
        if model_type != "llama":
            raise ConfigError(
                f"{source}: model_type is {model_type!r}, expected 'llama' "
                f"(architectures={d.get('architectures')})")
        if d.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: hidden_act={d['hidden_act']!r}, only 'silu' is supported")
        for flag in ("attention_bias", "mlp_bias"):
            if d.get(flag):
                raise ConfigError(f"{source}: {flag}=true is not supported")
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size",
                               "num_hidden_layers", "num_attention_heads") if k not in d]
        if missing:
            raise ConfigError(f"{source}: missing required keys {missing}")

        rope = dict(d.get("rope_parameters") or {})
        legacy = d.get("rope_scaling") or {}
        rope_theta = rope.pop("rope_theta", d.get("rope_theta", 10000.0))
        rope = rope or dict(legacy)
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in _SUPPORTED_ROPE_TYPES:
            raise ConfigError(f"{source}: rope_type={rope_type!r} is not supported "
                              f"(supported: {_SUPPORTED_ROPE_TYPES})")
        scaling = None
        if rope_type != "default":
            fields = {f.name for f in dataclasses.fields(RopeScaling)} - {"rope_type"}
            scaling = RopeScaling(rope_type=rope_type,
                                  **{k: v for k, v in rope.items() if k in fields})

        heads = d["num_attention_heads"]
        eos = d.get("eos_token_id")
        return cls(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            intermediate_size=d["intermediate_size"],
            num_hidden_layers=d["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
            rope_theta=float(rope_theta),
            rope_scaling=scaling,
            max_position_embeddings=d.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(d.get("tie_word_embeddings", False)),
            initializer_range=d.get("initializer_range", 0.02),
            bos_token_id=d.get("bos_token_id"),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=d.get("pad_token_id"),
            torch_dtype=d.get("torch_dtype") or d.get("dtype") or "float32",
            **runtime,
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """config.json contents, in the transformers-4 layout that both 4.x and 5.x read."""
        eos = list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": self.rope_scaling.to_hf_dict() if self.rope_scaling else None,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "initializer_range": self.initializer_range,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": eos,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": self.torch_dtype,
            "use_cache": True,
        }


# ----------------------------------------------------------------------------- RoPE


def rope_inv_freq(cfg: LlamaConfig) -> np.ndarray:
    """Inverse frequencies [head_dim // 2], float32, as transformers computes them."""
    dim = cfg.head_dim
    exponents = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    inv_freq = (1.0 / (np.float32(cfg.rope_theta) ** exponents)).astype(np.float32)
    s = cfg.rope_scaling
    if s is None or s.rope_type == "default":
        return inv_freq
    if s.rope_type == "linear":
        return (inv_freq / np.float32(s.factor)).astype(np.float32)
    # llama3: leave high frequencies alone, divide low ones by `factor`, and blend between.
    old_len = s.original_max_position_embeddings
    low_freq_wavelen = old_len / s.low_freq_factor
    high_freq_wavelen = old_len / s.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / s.factor, inv_freq)
    smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rope_cos_sin(positions: Array, inv_freq: np.ndarray) -> tuple[Array, Array]:
    """cos, sin of shape [B, T, head_dim] in float32 (frequencies repeated, half-split)."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: Array, cos: Array, sin: Array) -> Array:
    """x [B, T, heads, head_dim]; HF's `q * cos + rotate_half(q) * sin`."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotated * sin


# ----------------------------------------------------------------------------- layers


def _init(cfg: LlamaConfig, axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(cfg.initializer_range), axes)


class RMSNorm(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, (NORM,)),
                           (x.shape[-1],), compute_dtype(self.cfg.param_dtype))
        return norm_act.rms_norm(x, scale, self.cfg.rms_norm_eps, compute_dtype(self.cfg.dtype))


class Projection(nn.Module):
    """A bias-free linear map whose kernel keeps head structure ([*in, *out]), plus an
    optional LoRA term."""

    cfg: LlamaConfig
    shape: tuple[int, ...]
    axes: tuple[str, ...]
    n_in: int = 1  # how many leading kernel dims are contracted with x

    @nn.compact
    def __call__(self, x: Array) -> Array:
        param_dtype, dtype = compute_dtype(self.cfg.param_dtype), compute_dtype(self.cfg.dtype)
        kernel = self.param("kernel", _init(self.cfg, self.axes), self.shape, param_dtype)
        # A remat policy that keeps dots must see them: hand-written VJPs hide them.
        project = (linear.project if remat_policy(self.cfg.remat) is None
                   else linear.project_autodiff)
        y = project(x.astype(dtype), kernel.astype(dtype), self.n_in)
        delta = lora_lib.adapter_delta(
            self, self.cfg.lora, x, self.shape[: self.n_in], self.shape[self.n_in:],
            self.axes[: self.n_in], self.axes[self.n_in:], param_dtype, dtype, project)
        return y if delta is None else y + delta.astype(y.dtype)


class Attention(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x, cos, sin, mask, layer_cache, cache_index):
        c = self.cfg
        d, h, kv, hd = c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.head_dim
        q = Projection(c, (d, h, hd), (EMBED, HEADS, HEAD_DIM), name="q_proj")(x)
        k = Projection(c, (d, kv, hd), (EMBED, KV_HEADS, HEAD_DIM), name="k_proj")(x)
        v = Projection(c, (d, kv, hd), (EMBED, KV_HEADS, HEAD_DIM), name="v_proj")(x)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        new_cache = None
        if layer_cache is not None:
            cache_k, cache_v = layer_cache
            k = jax.lax.dynamic_update_slice_in_dim(cache_k, k.astype(cache_k.dtype), cache_index, 1)
            v = jax.lax.dynamic_update_slice_in_dim(cache_v, v.astype(cache_v.dtype), cache_index, 1)
            new_cache = (k, v)

        out = attention_lib.attention(q, k, v, mask, c.attention, c.attention_block)
        out = Projection(c, (h, hd, d), (HEADS, HEAD_DIM, EMBED), n_in=2, name="o_proj")(out)
        return out, new_cache


class SwiGLU(nn.Module):
    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.cfg
        shape_in, shape_out = (c.hidden_size, c.intermediate_size), (c.intermediate_size, c.hidden_size)
        gate = Projection(c, shape_in, (EMBED, MLP), name="gate_proj")(x)
        up = Projection(c, shape_in, (EMBED, MLP), name="up_proj")(x)
        return Projection(c, shape_out, (MLP, EMBED), name="down_proj")(
            norm_act.silu_mul(gate, up))


class DecoderLayer(nn.Module):
    """Pre-norm block. Signature (carry, per-layer input, *broadcast) suits nn.scan."""

    cfg: LlamaConfig

    @nn.compact
    def __call__(self, x, layer_cache, cos, sin, mask, cache_index):
        attn_out, new_cache = Attention(self.cfg, name="self_attn")(
            RMSNorm(self.cfg, name="input_layernorm")(x), cos, sin, mask, layer_cache, cache_index)
        x = x + attn_out
        x = x + SwiGLU(self.cfg, name="mlp")(RMSNorm(self.cfg, name="post_attention_layernorm")(x))
        return nn.with_logical_constraint(x, RESIDUAL_AXES), new_cache


# ----------------------------------------------------------------------------- model

# What the backward pass may keep from each layer's forward instead of recomputing it.
REMAT_POLICIES = ("nothing_saveable", "everything_saveable", "dots_saveable",
                  "dots_with_no_batch_dims_saveable")


def remat_policy(remat: bool | str):
    """`remat` (True, "full" or a REMAT_POLICIES name) -> a jax.checkpoint policy (None =
    save nothing, jax's default; also None when remat is off)."""
    if not remat or remat is True or remat in ("full", "nothing_saveable"):
        return None
    if remat not in REMAT_POLICIES:
        raise ConfigError(f"remat={remat!r}: expected '' (off), 'full' or one of "
                          f"{REMAT_POLICIES}")
    return getattr(jax.checkpoint_policies, remat)


class KVCache(NamedTuple):
    """Decoding state. k, v: [layers, B, S, kv_heads, head_dim]; valid: [B, S] marks
    slots that hold real (non-padding) tokens; index: the next slot to write."""

    k: Array
    v: Array
    valid: Array
    index: Array

    @classmethod
    def init(cls, cfg: LlamaConfig, batch: int, max_len: int) -> "KVCache":
        shape = (cfg.num_hidden_layers, batch, max_len, cfg.num_key_value_heads, cfg.head_dim)
        zeros = jnp.zeros(shape, compute_dtype(cfg.dtype))
        return cls(zeros, zeros, jnp.zeros((batch, max_len), bool), jnp.zeros((), jnp.int32))


class LlamaOutput(NamedTuple):
    logits: Array | None  # [B, T, vocab] float32
    hidden: Array  # [B, T, hidden] final-norm hidden states
    cache: KVCache | None


class Llama(nn.Module):
    """`Llama(cfg).apply({"params": p}, ids, attention_mask=m)` -> logits [B, T, vocab].

    With `return_hidden=True` or a `cache`, returns a `LlamaOutput` instead;
    `last_logits_only=True` computes logits for the last position only ([B, 1, vocab]).
    `positions` default to the count of real tokens before each one, so left-padded
    and unpadded copies of a sequence give the same logits.
    """

    cfg: LlamaConfig

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None,
                 positions: Array | None = None, cache: KVCache | None = None,
                 return_hidden: bool = False, compute_logits: bool = True,
                 last_logits_only: bool = False):
        c = self.cfg
        b, t = input_ids.shape
        token_mask = (jnp.ones((b, t), bool) if attention_mask is None
                      else attention_mask.astype(bool))
        if positions is None:
            before = 0 if cache is None else jnp.sum(cache.valid, axis=1, keepdims=True)
            positions = jnp.maximum(before + jnp.cumsum(token_mask, axis=1) - 1, 0)
        cos, sin = rope_cos_sin(positions, rope_inv_freq(c))

        if cache is None:
            mask = attention_lib.CausalMask.known(token_mask, np.arange(t))
            layer_caches, cache_index = None, jnp.zeros((), jnp.int32)
        else:
            valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, token_mask, cache.index, 1)
            mask = attention_lib.CausalMask(valid, cache.index + jnp.arange(t))
            layer_caches, cache_index = (cache.k, cache.v), cache.index

        embed = self.param("embed_tokens", _init(c, (VOCAB, EMBED)),
                           (c.vocab_size, c.hidden_size), compute_dtype(c.param_dtype))
        x = jnp.take(embed, input_ids, axis=0).astype(compute_dtype(c.dtype))
        x = nn.with_logical_constraint(x, RESIDUAL_AXES)

        layer_cls = DecoderLayer
        if c.remat:
            layer_cls = nn.remat(DecoderLayer, prevent_cse=not c.scan_layers,
                                 policy=remat_policy(c.remat))
        if c.scan_layers:
            stack = nn.scan(layer_cls, variable_axes={"params": 0, "lora": 0},
                            split_rngs={"params": True, "dropout": True},
                            in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast, nn.broadcast),
                            length=c.num_hidden_layers,
                            metadata_params={nn.PARTITION_NAME: LAYERS})
            x, new_layer_caches = stack(c, name="layers")(x, layer_caches, cos, sin, mask, cache_index)
        else:
            new_k, new_v = [], []
            for i in range(c.num_hidden_layers):
                layer_cache = None if cache is None else (cache.k[i], cache.v[i])
                x, out = layer_cls(c, name=f"layers_{i}")(x, layer_cache, cos, sin, mask, cache_index)
                if out is not None:
                    new_k.append(out[0])
                    new_v.append(out[1])
            new_layer_caches = (jnp.stack(new_k), jnp.stack(new_v)) if new_k else None

        hidden = RMSNorm(c, name="norm")(x)
        logits = None
        if compute_logits:
            if c.tie_word_embeddings:
                head = embed.T
            else:
                head = self.param("lm_head", _init(c, (EMBED, VOCAB)),
                                  (c.hidden_size, c.vocab_size), compute_dtype(c.param_dtype))
            # Prefill before sampling needs only the last position: [B, T, vocab] float32
            # logits for a long prompt batch would be the largest buffer of the whole call.
            head_in = hidden[:, -1:] if last_logits_only else hidden
            logits = jnp.einsum("btd,dv->btv", head_in, head.astype(hidden.dtype))
            logits = nn.with_logical_constraint(logits.astype(jnp.float32),
                                                (ACT_BATCH, ACT_LENGTH, ACT_VOCAB))

        if cache is None and not return_hidden:
            return logits
        new_cache = None
        if cache is not None:
            new_cache = KVCache(new_layer_caches[0], new_layer_caches[1], valid, cache.index + t)
        return LlamaOutput(logits, hidden, new_cache)


def init_params(cfg: LlamaConfig, rng: Array, seq_len: int = 8) -> dict:
    """Random params (HF initialisation: normal(initializer_range), norms at one)."""
    return _jitted_init(cfg, seq_len)(rng)


@functools.lru_cache(maxsize=8)
def _jitted_init(cfg: LlamaConfig, seq_len: int):
    # One compile instead of one per op: eager init of even the tiny model took seconds.
    return jax.jit(lambda rng: nn.meta.unbox(
        Llama(cfg).init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]))


def init_lora(cfg: LlamaConfig, rng: Array) -> dict:
    """Fresh adapters for `cfg.lora` (a random, b zero). Under jit the unused base params
    that init also builds are dead code, so this stays cheap for large models."""
    if cfg.lora is None:
        raise ValueError("cfg.lora is None: no adapters to initialise")
    init = jax.jit(lambda r: Llama(cfg).init(r, jnp.zeros((1, 1), jnp.int32))["lora"])
    return nn.meta.unbox(init(rng))


def logical_axes(cfg: LlamaConfig, collection: str = "params") -> dict:
    """The logical axis names of every variable in `collection`, as a matching pytree."""
    shapes = jax.eval_shape(lambda: Llama(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    return nn.get_partition_spec(shapes)[collection]


def output_embedding(cfg: LlamaConfig, params: dict) -> Array:
    """[vocab, hidden] rows of the LM head (the tied input embedding, or lm_head^T): what
    `losses.blockwise` multiplies the final hidden states with."""
    return params["embed_tokens"] if cfg.tie_word_embeddings else params["lm_head"].T


def flops_per_token(cfg: LlamaConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 N (matmul params, forward + backward) plus the attention
    scores, as in the PaLM MFU convention."""
    per_layer = (cfg.hidden_size * cfg.head_dim * (2 * cfg.num_attention_heads
                                                   + 2 * cfg.num_key_value_heads)
                 + 3 * cfg.hidden_size * cfg.intermediate_size)
    n = cfg.num_hidden_layers * per_layer + cfg.vocab_size * cfg.hidden_size
    attention = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
    return 6.0 * n + attention
