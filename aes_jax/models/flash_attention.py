"""Tiled causal attention with FlashAttention's forward and backward recurrences in plain
JAX (Dao et al. 2022, 2023), for backends without a fused kernel (CPU, TPU without
Pallas): scores exist one [block_q, block_k] tile at a time, never as [T, S].

Forward: per query tile, an online softmax over key tiles (running max m, sum l, output
accumulator); saved for the backward: q, k, v, the output and lse = m + log l per query.
Backward (custom VJP, no activations stored per tile): per tile, p = exp(s - lse) is
recomputed, then with delta = rowsum(dO * O): dV += p^T dO, dS = p * (dO V^T - delta),
dQ += dS K, dK += dS^T Q, in one pass (key tiles outer, query tiles inner).
Tiles wholly above the causal diagonal are skipped in every pass.

Layout: q [B, T, KV, G, D] (G query heads per KV head), k / v [B, S, KV, D], kv_valid
[B, S] bool, query_slot [T] int32 (key s is visible to query i iff valid and s <= slot);
T and S are multiples of the tile sizes (the caller pads). A query that sees no key
comes out as zeros and passes no gradient.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
_FILL = float(jnp.finfo(jnp.float32).min)
_F32 = jnp.float32


def visible(kv_valid: Array, query_slot: Array, q_start, q_len: int, k_start,
            k_len: int) -> Array:
    """[B, q_len, k_len] bool: key k_start + s is visible to query q_start + i."""
    slots = jax.lax.dynamic_slice_in_dim(query_slot, q_start, q_len)
    keys = k_start + jnp.arange(k_len)
    valid = jax.lax.dynamic_slice_in_dim(kv_valid, k_start, k_len, axis=1)
    return (keys[None, :] <= slots[:, None])[None] & valid[:, None, :]


def _visible(kv_valid: Array, query_slot: Array, i, j, bq: int, bk: int) -> Array:
    """[B, 1, 1, bq, bk] bool for query tile i, key tile j."""
    return visible(kv_valid, query_slot, i * bq, bq, j * bk, bk)[:, None, None]


def _last_slot(query_slot: Array, i, bq: int) -> Array:
    return jnp.max(jax.lax.dynamic_slice_in_dim(query_slot, i * bq, bq))


def _scores(q_blk: Array, k_blk: Array, visible: Array, scale: float) -> Array:
    s = jnp.einsum("bkgtd,bksd->bkgts", q_blk, k_blk).astype(_F32) * scale
    return jnp.where(visible, s, _FILL)


def _tile(x: Array, index, size: int, axis: int) -> Array:
    return jax.lax.dynamic_slice_in_dim(x, index * size, size, axis=axis)


# Inside, everything is head-major (q [B, KV, G, T, D], k / v [B, KV, S, D]): the batch
# dimensions of every tile product lead, so XLA runs them without a transpose per tile
# (2x faster on CPU than the token-major layout).
def _heads_first(q: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
    return (jnp.einsum("btkgd->bkgtd", q), jnp.einsum("bskd->bksd", k),
            jnp.einsum("bskd->bksd", v))


def _forward(q, k, v, kv_valid, query_slot, bq: int, bk: int):
    """Head-major q, k, v -> (out [B, KV, G, T, D] in q's dtype, lse [B, KV, G, T])."""
    b, kv, g, t, d = q.shape
    n_q, n_k = t // bq, k.shape[2] // bk
    scale = 1.0 / math.sqrt(d)

    def query_tile(i):
        q_blk = _tile(q, i, bq, 3)
        last = _last_slot(query_slot, i, bq)

        def update(carry, j):
            m, l, acc = carry
            visible = _visible(kv_valid, query_slot, i, j, bq, bk)
            s = _scores(q_blk, _tile(k, j, bk, 2), visible, scale)
            m_new = jnp.maximum(m, s.max(-1))
            # While a row has seen no visible key, m_new is the fill itself and
            # exp(fill - fill) = 1 would count masked keys: zero them explicitly.
            p = jnp.where(visible, jnp.exp(s - m_new[..., None]), 0.0)
            correction = jnp.exp(m - m_new)
            pv = jnp.einsum("bkgts,bksd->bkgtd", p.astype(q.dtype), _tile(v, j, bk, 2))
            return m_new, l * correction + p.sum(-1), acc * correction[..., None] + pv.astype(_F32)

        def key_tile(carry, j):
            return jax.lax.cond(j * bk <= last, update, lambda c, _: c, carry, j), None

        shape = (b, kv, g, bq)
        init = (jnp.full(shape, _FILL), jnp.zeros(shape), jnp.zeros((*shape, d)))
        (m, l, acc), _ = jax.lax.scan(key_tile, init, jnp.arange(n_k))
        out = acc / jnp.maximum(l, 1e-30)[..., None]
        lse = jnp.where(l > 0, m + jnp.log(jnp.maximum(l, 1e-30)), 0.0)
        return out.astype(q.dtype), lse

    outs, lses = jax.lax.map(query_tile, jnp.arange(n_q))  # [n_q, B, KV, G, bq, (D)]
    out = jnp.moveaxis(outs, 0, 3).reshape(q.shape)
    lse = jnp.moveaxis(lses, 0, 3).reshape(b, kv, g, t)
    return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def flash_attention(q: Array, k: Array, v: Array, kv_valid: Array, query_slot: Array,
                    bq: int, bk: int) -> Array:
    """[B, T, KV, G, D] attention output in q's dtype (layout: module docstring)."""
    return _fwd(q, k, v, kv_valid, query_slot, bq, bk)[0]


def _fwd(q, k, v, kv_valid, query_slot, bq, bk):
    qh, kh, vh = _heads_first(q, k, v)
    out, lse = _forward(qh, kh, vh, kv_valid, query_slot, bq, bk)
    return (jnp.einsum("bkgtd->btkgd", out),
            (qh, kh, vh, kv_valid, query_slot, out, lse))


def _bwd(bq, bk, residuals, d_out):
    q, k, v, kv_valid, query_slot, out, lse = residuals  # head-major
    b, kv, g, t, d = q.shape
    n_q, n_k = t // bq, k.shape[2] // bk
    scale = 1.0 / math.sqrt(d)
    d_out = jnp.einsum("btkgd->bkgtd", d_out.astype(_F32))
    delta = jnp.einsum("bkgtd,bkgtd->bkgt", d_out, out.astype(_F32))

    def tile_grads(i, j):
        """(q tile, k tile, dO tile, p, dS) of tile (i, j), all float32."""
        q_blk, k_blk, v_blk = _tile(q, i, bq, 3), _tile(k, j, bk, 2), _tile(v, j, bk, 2)
        visible = _visible(kv_valid, query_slot, i, j, bq, bk)
        s = _scores(q_blk, k_blk, visible, scale)
        p = jnp.where(visible, jnp.exp(s - _tile(lse, i, bq, 3)[..., None]), 0.0)
        do_blk = _tile(d_out, i, bq, 3)
        dp = jnp.einsum("bkgtd,bksd->bkgts", do_blk, v_blk.astype(_F32))
        ds = p * (dp - _tile(delta, i, bq, 3)[..., None])
        return q_blk.astype(_F32), k_blk.astype(_F32), do_blk, p, ds

    # One pass over key tiles (outer) and query tiles (inner): dK / dV of the key tile
    # accumulate in the inner carry, dQ in a full-size buffer carried through both, so
    # each tile's probabilities are recomputed once.
    def key_tile(dq, j):
        def query_tile(carry, i):
            def add(carry):
                dk, dv, dq = carry
                q_blk, k_blk, do_blk, p, ds = tile_grads(i, j)
                dv = dv + jnp.einsum("bkgts,bkgtd->bksd", p, do_blk)
                dk = dk + jnp.einsum("bkgts,bkgtd->bksd", ds, q_blk) * scale
                dq_blk = (_tile(dq, i, bq, 3)
                          + jnp.einsum("bkgts,bksd->bkgtd", ds, k_blk) * scale)
                return dk, dv, jax.lax.dynamic_update_slice_in_dim(dq, dq_blk, i * bq, axis=3)
            needed = j * bk <= _last_slot(query_slot, i, bq)
            return jax.lax.cond(needed, add, lambda c: c, carry), None

        zeros = jnp.zeros((b, kv, bk, d), _F32)
        (dk, dv, dq), _ = jax.lax.scan(query_tile, (zeros, zeros, dq), jnp.arange(n_q))
        return dq, (dk, dv)

    dq, (dk, dv) = jax.lax.scan(key_tile, jnp.zeros(q.shape, _F32), jnp.arange(n_k))
    dq = jnp.einsum("bkgtd->btkgd", dq)
    dk = jnp.einsum("jbksd->bjskd", dk).reshape(b, n_k * bk, kv, d)
    dv = jnp.einsum("jbksd->bjskd", dv).reshape(b, n_k * bk, kv, d)
    no_grad = [np.zeros(x.shape, jax.dtypes.float0) for x in (kv_valid, query_slot)]
    return (dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), *no_grad)


flash_attention.defvjp(_fwd, _bwd)
