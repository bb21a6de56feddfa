"""Tiny Recursive Model (Jolicoeur-Martineau, 2025) as an essay regression scorer.

One small shared network f (post-norm blocks: bidirectional attention with RoPE, then
SwiGLU; RMSNorm without weight) refines a latent z_L and an answer z_H:

    repeat T H-cycles:   z_L = f(z_L + z_H + x)  (n times);   z_H = f(z_H + z_L)

Only the last H-cycle carries gradient. One call of `TRM` is one deep-supervision step:
it returns the detached carry for the next step, the score prediction read from z_H at
the first position ([CLS]), and a halting logit. Training unrolls N_sup such steps with
the carry detached between them; `predict` does the same at evaluation, stopping each
row when its halting logit turns positive (or never, when halting is off).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.models.dtypes import compute_dtype
from aes_jax.models.llama import apply_rope, grouped_attention

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class TRMConfig:
    vocab_size: int = 30522
    embed_dim: int = 384  # width of the pretrained embedding table (MiniLM: 384)
    hidden_size: int = 256
    num_heads: int = 4
    intermediate_size: int = 768
    num_layers: int = 2  # blocks in f
    h_cycles: int = 3  # T
    l_cycles: int = 6  # n
    n_sup: int = 4  # deep-supervision steps
    num_outputs: int = 1  # holistic score (+ traits)
    max_len: int = 512
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    dropout: float = 0.0
    dtype: str = "float32"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


class Carry(NamedTuple):
    z_h: Array  # [B, T, D]
    z_l: Array  # [B, T, D]


class TRMOutput(NamedTuple):
    carry: Carry  # detached: the next supervision step gets no gradient through it
    scores: Array  # [B, num_outputs] float32, on the normalised [0, 1] scale
    halt_logit: Array  # [B] float32; > 0 means "stop here"


def rms_norm(x: Array, eps: float) -> Array:
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return normed.astype(x.dtype)


def rope_tables(cfg: TRMConfig, length: int) -> tuple[Array, Array]:
    """cos, sin [1, length, head_dim] for positions 0..length-1 (half-split layout)."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    freqs = np.outer(np.arange(length, dtype=np.float32), inv_freq.astype(np.float32))
    emb = np.concatenate([freqs, freqs], axis=-1)
    return jnp.asarray(np.cos(emb))[None], jnp.asarray(np.sin(emb))[None]


def _lecun(fan_in: int):
    # Truncated normal with std 1/sqrt(fan_in), as the reference initialises linears.
    return nn.initializers.truncated_normal(stddev=1.0 / math.sqrt(fan_in))


class Dense(nn.Module):
    features: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", _lecun(x.shape[-1]), (x.shape[-1], self.features))
        return x @ kernel.astype(compute_dtype(self.dtype))


class Block(nn.Module):
    cfg: TRMConfig

    @nn.compact
    def __call__(self, h: Array, cos: Array, sin: Array, mask: Array, deterministic: bool) -> Array:
        c = self.cfg
        b, t, d = h.shape
        q = Dense(d, c.dtype, name="q_proj")(h).reshape(b, t, c.num_heads, c.head_dim)
        k = Dense(d, c.dtype, name="k_proj")(h).reshape(b, t, c.num_heads, c.head_dim)
        v = Dense(d, c.dtype, name="v_proj")(h).reshape(b, t, c.num_heads, c.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        attn = grouped_attention(q, k, v, mask).reshape(b, t, d)
        attn = Dense(d, c.dtype, name="o_proj")(attn)
        attn = nn.Dropout(c.dropout)(attn, deterministic=deterministic)
        h = rms_norm(h + attn, c.rms_norm_eps)
        gate = Dense(c.intermediate_size, c.dtype, name="gate_proj")(h)
        up = Dense(c.intermediate_size, c.dtype, name="up_proj")(h)
        mlp = Dense(d, c.dtype, name="down_proj")(nn.silu(gate) * up)
        mlp = nn.Dropout(c.dropout)(mlp, deterministic=deterministic)
        return rms_norm(h + mlp, c.rms_norm_eps)


class Net(nn.Module):
    """f: the one network shared by every L and H update."""

    cfg: TRMConfig

    @nn.compact
    def __call__(self, h: Array, injection: Array, cos, sin, mask, deterministic: bool) -> Array:
        h = h + injection
        for i in range(self.cfg.num_layers):
            h = Block(self.cfg, name=f"block_{i}")(h, cos, sin, mask, deterministic)
        return h


class TRM(nn.Module):
    cfg: TRMConfig

    def setup(self):
        c = self.cfg
        self.embed_tokens = self.param("embed_tokens", nn.initializers.normal(0.02),
                                       (c.vocab_size, c.embed_dim))
        if c.embed_dim != c.hidden_size:
            self.embed_proj = self.param("embed_proj", _lecun(c.embed_dim),
                                         (c.embed_dim, c.hidden_size))
        self.net = Net(c)
        self.score_head = Dense(c.num_outputs, "float32", name="score_head")
        self.score_bias = self.param("score_bias", nn.initializers.zeros, (c.num_outputs,))
        # Halting starts almost surely "continue": zero weight, bias -5 (as in the paper).
        self.halt_kernel = self.param("halt_kernel", nn.initializers.zeros, (c.hidden_size, 1))
        self.halt_bias = self.param("halt_bias", nn.initializers.constant(-5.0), (1,))
        # Fixed start states (reference: truncated normal, std 1; never trained).
        self.h_init = self.param("h_init", nn.initializers.truncated_normal(1.0), (c.hidden_size,))
        self.l_init = self.param("l_init", nn.initializers.truncated_normal(1.0), (c.hidden_size,))

    def embed(self, input_ids: Array) -> Array:
        """x = sqrt(d) * embedding (projected to the hidden width when they differ)."""
        x = jnp.take(self.embed_tokens, input_ids, axis=0)
        if self.cfg.embed_dim != self.cfg.hidden_size:
            x = x @ self.embed_proj
        return (math.sqrt(self.cfg.hidden_size) * x).astype(compute_dtype(self.cfg.dtype))

    def initial_carry(self, input_ids: Array) -> Carry:
        b, t = input_ids.shape
        shape = (b, t, self.cfg.hidden_size)
        dtype = compute_dtype(self.cfg.dtype)
        z_h = jnp.broadcast_to(jax.lax.stop_gradient(self.h_init), shape).astype(dtype)
        z_l = jnp.broadcast_to(jax.lax.stop_gradient(self.l_init), shape).astype(dtype)
        return Carry(z_h, z_l)

    def reset_carry(self, carry: Carry, reset: Array) -> Carry:
        """Rows where `reset` [B] is true start again from the initial states."""
        fresh = self.initial_carry(jnp.zeros(carry.z_h.shape[:2], jnp.int32))
        keep = reset[:, None, None]
        return Carry(jnp.where(keep, fresh.z_h, carry.z_h), jnp.where(keep, fresh.z_l, carry.z_l))

    def __call__(self, carry: Carry, input_ids: Array, attention_mask: Array,
                 deterministic: bool = True) -> TRMOutput:
        c = self.cfg
        x = self.embed(input_ids)
        cos, sin = rope_tables(c, input_ids.shape[1])
        mask = jnp.broadcast_to(attention_mask.astype(bool)[:, None, :],
                                (input_ids.shape[0], input_ids.shape[1], input_ids.shape[1]))

        def f(h, injection):
            return self.net(h, injection, cos, sin, mask, deterministic)

        def h_cycle(z_h, z_l):
            for _ in range(c.l_cycles):
                z_l = f(z_l, z_h + x)
            return f(z_h, z_l), z_l

        z_h, z_l = carry
        for _ in range(c.h_cycles - 1):
            z_h, z_l = h_cycle(z_h, z_l)
        # Earlier cycles only move the state; gradient flows through the last one alone.
        z_h, z_l = h_cycle(jax.lax.stop_gradient(z_h), jax.lax.stop_gradient(z_l))

        first = z_h[:, 0].astype(jnp.float32)
        scores = self.score_head(first) + self.score_bias
        halt = (first @ self.halt_kernel + self.halt_bias)[:, 0]
        new_carry = Carry(jax.lax.stop_gradient(z_h), jax.lax.stop_gradient(z_l))
        return TRMOutput(new_carry, scores, halt)


def init_params(cfg: TRMConfig, rng: Array, seq_len: int = 8,
                pretrained_embeddings: np.ndarray | None = None) -> dict:
    """Random params; `pretrained_embeddings` [vocab, embed_dim] (e.g. BERT's word
    embeddings) replace the random token table."""
    ids = jnp.zeros((1, seq_len), jnp.int32)

    def one_step(module: TRM, ids):
        return module(module.initial_carry(ids), ids, jnp.ones_like(ids, bool))

    params = TRM(cfg).init(rng, ids, method=one_step)["params"]
    if pretrained_embeddings is not None:
        if pretrained_embeddings.shape != (cfg.vocab_size, cfg.embed_dim):
            raise ValueError(f"pretrained embeddings have shape {pretrained_embeddings.shape}, "
                             f"the config wants ({cfg.vocab_size}, {cfg.embed_dim})")
        params = {**params, "embed_tokens": jnp.asarray(pretrained_embeddings, jnp.float32)}
    return params


def predict(model: TRM, params: dict, input_ids: Array, attention_mask: Array,
            use_halting: bool = True) -> tuple[Array, Array]:
    """Evaluation: up to n_sup supervision steps; a row's prediction is frozen at the
    first step whose halting logit is positive (the label is never consulted).
    Returns (scores [B, num_outputs], steps used [B])."""
    variables = {"params": params}
    carry = model.apply(variables, input_ids, method=TRM.initial_carry)
    b = input_ids.shape[0]
    scores = jnp.zeros((b, model.cfg.num_outputs), jnp.float32)
    halted = jnp.zeros((b,), bool)
    steps = jnp.zeros((b,), jnp.int32)
    for _ in range(model.cfg.n_sup):
        out = model.apply(variables, carry, input_ids, attention_mask)
        scores = jnp.where(halted[:, None], scores, out.scores)
        steps = steps + (~halted).astype(jnp.int32)
        if use_halting:
            halted = halted | (out.halt_logit > 0)
        carry = out.carry
    return scores, steps
