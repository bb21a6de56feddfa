"""Causal grouped-query attention, four ways that compute the same thing.

- `einsum`: the reference: one [B, KV, G, T, S] float32 score tensor, softmax, values.
- `xla`: `jax.nn.dot_product_attention(implementation="xla")`.
- `cudnn`: the same call with cuDNN's fused flash kernel (GPU, bf16 / fp16 only).
- `chunked`: blocks of queries x blocks of keys with an online softmax, each query block
  rematerialised in the backward pass, so memory grows linearly with sequence length
  (long essays on CPU / TPU, where no fused kernel is at hand).

All take q [B, T, H, D], k and v [B, S, KV, D] (query head h reads KV head h // (H / KV),
as HF's repeat_kv) and a `CausalMask`; they agree on every query that may attend to at
least one key. A query that may attend to nothing (a padding position) gets the mean of
the values from `einsum` / `xla` and zeros from `chunked`: such rows only ever feed other
padding rows and are masked out of every loss.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn", "chunked")
_FILL = jnp.finfo(jnp.float32).min  # finite, so fully masked rows stay free of NaN


class CausalMask(NamedTuple):
    """Key slot s is visible to query i iff kv_valid[b, s] and s <= query_slot[i].

    Kept factored ([B, S] + [T]) so the chunked path never builds the [B, T, S] mask.
    """

    kv_valid: Array  # [B, S] bool: the slot holds a real token
    query_slot: Array  # [T] int32: each query's own slot (cache index + position in call)

    def block(self, q_start: Array | int, q_len: int, k_start: Array | int,
              k_len: int) -> Array:
        """[B, q_len, k_len] bool for queries q_start.. and keys k_start..."""
        slots = jax.lax.dynamic_slice_in_dim(self.query_slot, q_start, q_len)
        keys = k_start + jnp.arange(k_len)
        valid = jax.lax.dynamic_slice_in_dim(self.kv_valid, k_start, k_len, axis=1)
        return (keys[None, :] <= slots[:, None])[None] & valid[:, None, :]

    def dense(self) -> Array:
        """[B, T, S] bool."""
        return self.block(0, self.query_slot.shape[0], 0, self.kv_valid.shape[1])


def resolve(implementation: str, dtype, platform: str | None = None) -> str:
    """`auto` -> cudnn on GPU for 16-bit activations, else xla; others unchanged."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention={implementation!r}: expected one of {IMPLEMENTATIONS}")
    if implementation != "auto":
        return implementation
    platform = platform or jax.default_backend()
    if platform == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
        return "cudnn"
    return "xla"


def attention(q: Array, k: Array, v: Array, mask: CausalMask, implementation: str = "auto",
              block_size: int = 512) -> Array:
    """[B, T, H, D] attention output in q's dtype."""
    implementation = resolve(implementation, q.dtype)
    if implementation == "einsum":
        return grouped_attention(q, k, v, mask.dense())
    if implementation == "chunked":
        return chunked_attention(q, k, v, mask, block_size)
    if implementation == "cudnn":
        try:
            return _fused(q, k, v, mask, "cudnn")
        except (ValueError, NotImplementedError, RuntimeError) as err:
            # cuDNN refuses some shapes / dtypes / GPUs when the call is traced: the
            # same math through XLA, once said, rather than failing the run.
            if not _warned:
                logging.warning("cuDNN attention unavailable (%s); using XLA's", err)
                _warned.append(True)
            return _fused(q, k, v, mask, "xla")
    return _fused(q, k, v, mask, implementation)


_warned: list[bool] = []


def _fused(q: Array, k: Array, v: Array, mask: CausalMask, implementation: str) -> Array:
    # jax.nn wants the mask as [B, N, T, S]; N = 1 broadcasts over heads.
    return jax.nn.dot_product_attention(
        q, k.astype(q.dtype), v.astype(q.dtype), mask=mask.dense()[:, None],
        implementation=implementation)


def grouped_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """The reference. q [B, T, H, D]; k, v [B, S, KV, D]; mask [B, T, S] bool."""
    b, t, h, hd = q.shape
    kv = k.shape[2]
    q = q.reshape(b, t, kv, h // kv, hd)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k.astype(q.dtype)).astype(jnp.float32)
    scores = scores * (1.0 / math.sqrt(hd))
    scores = jnp.where(mask[:, None, None, :, :], scores, _FILL)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v.astype(q.dtype))
    return out.reshape(b, t, h, hd)


def _pad_to(x: Array, axis: int, multiple: int, value=0) -> Array:
    extra = -x.shape[axis] % multiple
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def chunked_attention(q: Array, k: Array, v: Array, mask: CausalMask,
                      block_size: int = 512) -> Array:
    """Online-softmax attention over [block, block] tiles (FlashAttention's recurrence in
    plain JAX): peak memory O(block * S) instead of O(T * S), forward and backward."""
    b, t, h, hd = q.shape
    s, kv = k.shape[1], k.shape[2]
    bq, bk = min(block_size, t), min(block_size, s)
    q = _pad_to(q.reshape(b, t, kv, h // kv, hd), 1, bq)
    k, v = _pad_to(k.astype(q.dtype), 1, bk), _pad_to(v.astype(q.dtype), 1, bk)
    padded = CausalMask(_pad_to(mask.kv_valid, 1, bk, False),
                        _pad_to(mask.query_slot, 0, bq, -1))
    n_q, n_k = q.shape[1] // bq, k.shape[1] // bk
    scale = 1.0 / math.sqrt(hd)

    def query_block(i):
        q_blk = jax.lax.dynamic_slice_in_dim(q, i * bq, bq, axis=1)

        # Key blocks past the block's last query slot are all masked (causality): skip
        # them, which halves the work of a full causal pass.
        last_slot = jnp.max(jax.lax.dynamic_slice_in_dim(padded.query_slot, i * bq, bq))

        def update(carry, j):
            m, l, acc = carry
            k_blk = jax.lax.dynamic_slice_in_dim(k, j * bk, bk, axis=1)
            v_blk = jax.lax.dynamic_slice_in_dim(v, j * bk, bk, axis=1)
            visible = padded.block(i * bq, bq, j * bk, bk)[:, None, None]
            scores = jnp.einsum("btkgd,bskd->bkgts", q_blk, k_blk).astype(jnp.float32)
            scores = jnp.where(visible, scores * scale, _FILL)
            m_new = jnp.maximum(m, scores.max(-1))
            # While a row has seen no visible key, m_new is the fill itself and
            # exp(fill - fill) = 1 would count masked keys; a later visible key wipes that
            # out (correction = 0), but a row that never sees one must end at zero.
            p = jnp.where(visible, jnp.exp(scores - m_new[..., None]), 0.0)
            correction = jnp.exp(m - m_new)
            l = l * correction + p.sum(-1)
            acc = acc * correction[..., None] + jnp.einsum(
                "bkgts,bskd->bkgtd", p.astype(q.dtype), v_blk).astype(jnp.float32)
            return m_new, l, acc

        def key_block(carry, j):
            carry = jax.lax.cond(j * bk <= last_slot, update, lambda c, _: c, carry, j)
            return carry, None

        shape = (b, kv, h // kv, bq)
        init = (jnp.full(shape, _FILL), jnp.zeros(shape), jnp.zeros((*shape, hd)))
        (_, l, acc), _ = jax.lax.scan(key_block, init, jnp.arange(n_k))
        out = acc / jnp.maximum(l, 1e-30)[..., None]
        return jnp.einsum("bkgtd->btkgd", out).astype(q.dtype)

    blocks = jax.lax.map(jax.checkpoint(query_block), jnp.arange(n_q))  # [n_q, B, bq, ...]
    out = jnp.moveaxis(blocks, 0, 1).reshape(b, n_q * bq, h, hd)
    return out[:, :t]
