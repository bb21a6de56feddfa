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
import functools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.models.dtypes import compute_dtype
from aes_jax.models import attention as attention_lib
from aes_jax.models import linear, norm_act
from aes_jax.models.llama import apply_rope

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
    attention: str = "auto"  # attention.IMPLEMENTATIONS
    # Multiplies the (projected) token embedding. None = sqrt(embed_dim), which gives the
    # reference's injection RMS of 1 for a randomly initialised table; a pretrained table
    # passes 1 / its RMS (`embedding_scale`) so the RMS is 1 whatever the hidden size.
    embed_scale: float | None = None
    start_state_seed: int = 0  # the fixed start states h_init / l_init (`start_states`)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def injection_scale(self) -> float:
        return math.sqrt(self.embed_dim) if self.embed_scale is None else float(self.embed_scale)


class Carry(NamedTuple):
    z_h: Array  # [B, T, D]
    z_l: Array  # [B, T, D]


class TRMOutput(NamedTuple):
    carry: Carry  # detached: the next supervision step gets no gradient through it
    scores: Array  # [B, num_outputs] float32, on the normalised [0, 1] scale
    halt_logit: Array  # [B] float32; > 0 means "stop here"


def rms_norm(x: Array, eps: float) -> Array:
    """Parameter-free RMSNorm in x's dtype (norm_act's, whose backward stores only x)."""
    return norm_act.rms_norm(x, jnp.ones(x.shape[-1], jnp.float32), eps, x.dtype)


def rope_tables(cfg: TRMConfig, length: int) -> tuple[Array, Array]:
    """cos, sin [1, length, head_dim] for positions 0..length-1 (half-split layout)."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    freqs = np.outer(np.arange(length, dtype=np.float32), inv_freq.astype(np.float32))
    emb = np.concatenate([freqs, freqs], axis=-1)
    return jnp.asarray(np.cos(emb))[None], jnp.asarray(np.sin(emb))[None]


# jax.random.truncated_normal cuts at +-2 standard units, which leaves a std of 0.8796;
# the reference (trunc_normal_init_) divides by it so that the std is the one asked for.
TRUNCATED_STD = 0.87962566103423978


def corrected_truncated_normal(std: float):
    return nn.initializers.truncated_normal(stddev=std / TRUNCATED_STD)


def _lecun(fan_in: int):
    # std 1/sqrt(fan_in) after truncation at 2 std, as the reference initialises linears.
    return corrected_truncated_normal(1.0 / math.sqrt(fan_in))


@functools.lru_cache(maxsize=16)
def start_states(cfg: TRMConfig) -> tuple[np.ndarray, np.ndarray]:
    """(h_init, l_init) [hidden]: the fixed start states, truncated normal with std 1 as
    the reference's buffers. A function of the config, never trained and not in the
    parameter tree (the torch reference and exports read them from here)."""
    init = corrected_truncated_normal(1.0)
    with jax.ensure_compile_time_eval():  # concrete values even when called under jit
        keys = jax.random.split(jax.random.PRNGKey(cfg.start_state_seed))
        return tuple(np.asarray(init(k, (cfg.hidden_size,), jnp.float32)) for k in keys)


def initial_carry(cfg: TRMConfig, batch_size: int, length: int) -> Carry:
    shape = (batch_size, length, cfg.hidden_size)
    dtype = compute_dtype(cfg.dtype)
    return Carry(*(jnp.broadcast_to(jnp.asarray(s, dtype), shape) for s in start_states(cfg)))


def reset_carry(cfg: TRMConfig, carry: Carry, reset: Array) -> Carry:
    """Rows where `reset` [B] is true start again from the start states."""
    fresh = initial_carry(cfg, *carry.z_h.shape[:2])
    keep = reset[:, None, None]
    return Carry(jnp.where(keep, fresh.z_h, carry.z_h), jnp.where(keep, fresh.z_l, carry.z_l))


def embedding_scale(table: np.ndarray) -> float:
    """1 / RMS of an embedding table: the `embed_scale` that gives injections of RMS 1."""
    return float(1.0 / np.sqrt(np.mean(np.square(table.astype(np.float64)))))


class Dense(nn.Module):
    features: int
    dtype: str = "float32"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel = self.param("kernel", _lecun(x.shape[-1]), (x.shape[-1], self.features))
        return linear.project(x, kernel.astype(compute_dtype(self.dtype)))


class Block(nn.Module):
    cfg: TRMConfig

    @nn.compact
    def __call__(self, h: Array, cos: Array, sin: Array, mask: attention_lib.CausalMask, deterministic: bool) -> Array:
        c = self.cfg
        b, t, d = h.shape
        q = Dense(d, c.dtype, name="q_proj")(h).reshape(b, t, c.num_heads, c.head_dim)
        k = Dense(d, c.dtype, name="k_proj")(h).reshape(b, t, c.num_heads, c.head_dim)
        v = Dense(d, c.dtype, name="v_proj")(h).reshape(b, t, c.num_heads, c.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        attn = attention_lib.attention(q, k, v, mask, c.attention).reshape(b, t, d)
        attn = Dense(d, c.dtype, name="o_proj")(attn)
        attn = nn.Dropout(c.dropout)(attn, deterministic=deterministic)
        h = rms_norm(h + attn, c.rms_norm_eps)
        gate = Dense(c.intermediate_size, c.dtype, name="gate_proj")(h)
        up = Dense(c.intermediate_size, c.dtype, name="up_proj")(h)
        mlp = Dense(d, c.dtype, name="down_proj")(norm_act.silu_mul(gate, up))
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
        # Random table: std 1/sqrt(embed_dim), so the default scale gives RMS 1.
        self.embed_tokens = self.param("embed_tokens", _lecun(c.embed_dim),
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

    def embed(self, input_ids: Array) -> Array:
        """x = injection_scale * embedding (projected to the hidden width when they
        differ; the projection's init keeps the RMS)."""
        x = jnp.take(self.embed_tokens, input_ids, axis=0)
        if self.cfg.embed_dim != self.cfg.hidden_size:
            x = x @ self.embed_proj
        return (self.cfg.injection_scale * x).astype(compute_dtype(self.cfg.dtype))

    def initial_carry(self, input_ids: Array) -> Carry:
        return initial_carry(self.cfg, *input_ids.shape)

    def reset_carry(self, carry: Carry, reset: Array) -> Carry:
        return reset_carry(self.cfg, carry, reset)

    def __call__(self, carry: Carry, input_ids: Array, attention_mask: Array,
                 deterministic: bool = True) -> TRMOutput:
        c = self.cfg
        x = self.embed(input_ids)
        cos, sin = rope_tables(c, input_ids.shape[1])
        # Bidirectional over real tokens: every key slot is "at or before" each query.
        mask = attention_lib.CausalMask.known(attention_mask.astype(bool),
                                              np.full(input_ids.shape[1], input_ids.shape[1] - 1))

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


def training_halt(halt_logit: Array, steps: Array, n_sup: int, use_halting: bool,
                  exploration_prob: float, rng: Array) -> Array:
    """Which rows stop after the supervision step that brought them to `steps` [B] (1 =
    after the first). As the reference trains: always at n_sup; with halting, also where
    the Q-head says stop, except that with probability `exploration_prob` a row draws a
    minimum of 2..n_sup steps it must run first (so the head sees later steps' outcomes)."""
    halted = steps >= n_sup
    if not use_halting or n_sup <= 1:
        return halted
    halted = halted | (halt_logit > 0)
    if exploration_prob > 0:
        explore_key, steps_key = jax.random.split(rng)
        explore = jax.random.uniform(explore_key, steps.shape) < exploration_prob
        min_steps = jnp.where(explore, jax.random.randint(steps_key, steps.shape, 2, n_sup + 1), 0)
        halted = halted & (steps >= min_steps)
    return halted


def predict(model: TRM, params: dict, input_ids: Array, attention_mask: Array,
            use_halting: bool = False) -> tuple[Array, Array]:
    """Evaluation: n_sup supervision steps for every row, as the reference evaluates. With
    `use_halting`, a row's prediction is frozen at the first step whose halting logit is
    positive instead (the label is never consulted). Returns (scores [B, num_outputs],
    steps used [B])."""
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
