"""Tiled causal attention with FlashAttention's forward and backward recurrences in plain
JAX (Dao et al. 2022, 2023), for backends without a fused kernel (CPU, TPU without
Pallas): scores exist one [block_q, block_k] tile at a time, never as [T, S].

Forward: per query tile, an online softmax over key tiles (running max m, sum l, output
accumulator); saved for the backward: q, k, v, the output and lse = m + log l per query.
Backward (custom VJP, no activations stored per tile): per tile, p = exp(s - lse) is
recomputed, then with delta = rowsum(dO * O): dV += p^T dO, dS = p * (dO V^T - delta),
dQ += dS K, dK += dS^T Q, in one pass (key tiles outer, query tiles inner).
Tiles wholly above the causal diagonal are skipped in every pass.

Two drivers walk the same tile functions: where the query slots are known when tracing
(training and TRM: a numpy `query_slot`) and the tiles number at most
`MAX_UNROLLED_TILES`, a Python loop over the live tiles only; otherwise (prefill into a
cache at a traced offset, very long inputs) a scan whose step picks skip / masked / plain
with `lax.switch`. The unrolled loop is 1.7x faster on CPU (SmolLM2, T=1024: XLA:CPU runs
a dot inside a conditional's branch well below its speed outside one).

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
Plan = tuple[tuple[int, ...], ...]  # [n_q][n_k] tile kinds, see static_plan
_FILL = float(jnp.finfo(jnp.float32).min)
_F32 = jnp.float32
MAX_UNROLLED_TILES = 64  # T = 2048 at 256-wide tiles; beyond, the scan keeps HLO small


def visible(kv_valid: Array, query_slot: Array, q_start, q_len: int, k_start,
            k_len: int) -> Array:
    """[B, q_len, k_len] bool: key k_start + s is visible to query q_start + i."""
    slots = jax.lax.dynamic_slice_in_dim(query_slot, q_start, q_len)
    keys = k_start + jnp.arange(k_len)
    valid = jax.lax.dynamic_slice_in_dim(kv_valid, k_start, k_len, axis=1)
    return (keys[None, :] <= slots[:, None])[None] & valid[:, None, :]


def _tile(x: Array, index, size: int, axis: int) -> Array:
    return jax.lax.dynamic_slice_in_dim(x, index * size, size, axis=axis)


def _tile_kinds(kv_valid: Array, query_slot: Array, bq: int, bk: int) -> Array:
    """[n_q, n_k] int32: 0 = no key visible (skipped), 1 = some keys (masked),
    2 = every key visible to every query (no mask: the dots and one exp pass only)."""
    slots = query_slot.reshape(-1, bq)
    keys = jnp.arange(kv_valid.shape[1]).reshape(-1, bk)
    any_visible = keys[None, :, 0] <= slots.max(1)[:, None]
    key_tile_valid = kv_valid.reshape(kv_valid.shape[0], -1, bk).all(axis=(0, 2))
    all_visible = (keys[None, :, -1] <= slots.min(1)[:, None]) & key_tile_valid[None, :]
    return any_visible.astype(jnp.int32) + all_visible.astype(jnp.int32)


# Masking adds 0 / fill rather than selecting: XLA:CPU emits the select over the
# broadcast [B, KV, G, bq, bk] mask as a slow scalar loop (the forward's masked tiles
# ran at half speed); s + fill rounds to fill itself for any |s| < 1e31.
def _mask_bias(keep: Array) -> Array:
    return jnp.where(keep, 0.0, _FILL).astype(_F32)


def static_plan(query_slot: np.ndarray, kv_len: int, bq: int, bk: int) -> Plan | None:
    """Tile kinds from slots known at trace time: 0 = no key visible (skipped), 1 = some
    (full mask), 2 = every key up to the tile's end visible to every query (only the
    traced key-validity mask is applied). None where unrolling would exceed the cap."""
    slots = query_slot.reshape(-1, bq)
    keys = np.arange(kv_len).reshape(-1, bk)
    any_visible = keys[None, :, 0] <= slots.max(1)[:, None]
    all_visible = keys[None, :, -1] <= slots.min(1)[:, None]
    kinds = any_visible.astype(int) + all_visible.astype(int)
    if np.count_nonzero(kinds) > MAX_UNROLLED_TILES:
        return None
    return tuple(tuple(row) for row in kinds.tolist())


def _masked(s: Array, kv_valid: Array, query_slot: Array, i, j, bq: int, bk: int,
            mode: str) -> Array:
    """mode: "full" (causal + keys), "keys" (key validity only: [B, 1, 1, 1, bk]) or
    "none"; s is [B, KV, G, bq, bk]."""
    if mode == "none":
        return s
    if mode == "keys":
        return s + _mask_bias(_tile(kv_valid, j, bk, 1))[:, None, None, None, :]
    keep = visible(kv_valid, query_slot, i * bq, bq, j * bk, bk)[:, None, None]
    return s + _mask_bias(keep)


# Kind -> mask mode: the traced plan (`_tile_kinds`) knows the keys are valid in kind 2,
# the static one does not.
_TRACED_MODES = (None, "full", "none")
_STATIC_MODES = (None, "full", "keys")


# Inside, everything is head-major with the scale folded into q: q [B, KV, G, T, D],
# k^T [B, KV, D, S], v [B, KV, S, D], so every tile product is a plain batched matmul
# in the layout XLA's CPU kernels take without a copy per tile.
def _heads_first(q: Array, k: Array, v: Array) -> tuple[Array, Array, Array]:
    scale = 1.0 / math.sqrt(q.shape[-1])
    return (jnp.einsum("btkgd->bkgtd", q * jnp.asarray(scale, q.dtype)),
            jnp.einsum("bskd->bkds", k), jnp.einsum("bskd->bksd", v))


def _forward(q, kt, v, kv_valid, query_slot, bq: int, bk: int, plan: Plan | None):
    """Head-major q, k^T, v -> (out [B, KV, G, T, D] in q's dtype, lse [B, KV, G, T])."""
    b, kv, g, t, d = q.shape
    n_q, n_k = t // bq, kt.shape[3] // bk

    def update(carry, i, j, mode: str):
        m, l, acc = carry
        s = jnp.einsum("bkgtd,bkds->bkgts", _tile(q, i, bq, 3),
                       _tile(kt, j, bk, 3)).astype(_F32)
        s = _masked(s, kv_valid, query_slot, i, j, bq, bk, mode)
        m_new = jnp.maximum(m, s.max(-1))
        # A row that has seen only masked keys has m_new == fill and counts them
        # with p = 1; the first visible key wipes that (correction = exp(fill - m)
        # = 0), and a row that never sees one is zeroed at the end.
        p = jnp.exp(s - m_new[..., None])
        correction = jnp.exp(m - m_new)
        pv = jnp.einsum("bkgts,bksd->bkgtd", p.astype(v.dtype), _tile(v, j, bk, 2))
        return m_new, l * correction + p.sum(-1), acc * correction[..., None] + pv.astype(_F32)

    def finish(m, l, acc):
        seen = m != _FILL  # not `m > fill`: a NaN row must stay NaN, so divergence shows
        out = jnp.where(seen[..., None], acc / l[..., None], 0.0)
        return out.astype(q.dtype), jnp.where(seen, m + jnp.log(l), 0.0)

    shape = (b, kv, g, bq)
    init = (jnp.full(shape, _FILL), jnp.zeros(shape), jnp.zeros((*shape, d)))
    if plan is not None:
        outs, lses = [], []
        for i, kinds in enumerate(plan):
            carry = init
            for j, kind in enumerate(kinds):
                if kind:
                    carry = update(carry, i, j, _STATIC_MODES[kind])
            out, lse = finish(*carry)
            outs.append(out)
            lses.append(lse)
        return jnp.concatenate(outs, axis=3), jnp.concatenate(lses, axis=3)

    kinds = _tile_kinds(kv_valid, query_slot, bq, bk)

    def query_tile(i):
        def key_tile(carry, j):
            branches = (lambda c, _: c, *(functools.partial(lambda c, j, m: update(c, i, j, m), m=m)
                                          for m in _TRACED_MODES[1:]))
            return jax.lax.switch(kinds[i, j], branches, carry, j), None

        carry, _ = jax.lax.scan(key_tile, init, jnp.arange(n_k))
        return finish(*carry)

    outs, lses = jax.lax.map(query_tile, jnp.arange(n_q))  # [n_q, B, KV, G, bq, (D)]
    out = jnp.moveaxis(outs, 0, 3).reshape(q.shape)
    lse = jnp.moveaxis(lses, 0, 3).reshape(b, kv, g, t)
    return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def flash_attention(q: Array, k: Array, v: Array, kv_valid: Array, query_slot: Array,
                    bq: int, bk: int, plan: Plan | None = None) -> Array:
    """[B, T, KV, G, D] attention output in q's dtype (layout: module docstring). `plan`
    (from `static_plan` on the same slots) unrolls the tile loops."""
    return _fwd(q, k, v, kv_valid, query_slot, bq, bk, plan)[0]


def _fwd(q, k, v, kv_valid, query_slot, bq, bk, plan):
    qh, kt, vh = _heads_first(q, k, v)
    out, lse = _forward(qh, kt, vh, kv_valid, query_slot, bq, bk, plan)
    return (jnp.einsum("bkgtd->btkgd", out),
            (qh, kt, vh, kv_valid, query_slot, out, lse))


def _query_tiles(x: Array, bq: int) -> Array:
    """[B, KV, G, T, ...] -> [n_q, B, KV, G * bq, ...]: query tile i, its G heads' rows
    together, contiguous."""
    b, kv, g, t = x.shape[:4]
    x = x.reshape(b, kv, g, t // bq, bq, *x.shape[4:])
    x = jnp.moveaxis(x, 3, 0)
    return x.reshape(t // bq, b, kv, g * bq, *x.shape[5:])


def _bwd(bq, bk, plan, residuals, d_out):
    q, kt, v, kv_valid, query_slot, out, lse = residuals  # head-major, q scaled
    b, kv, g, t, d = q.shape
    n_q, n_k = t // bq, kt.shape[3] // bk
    scale = 1.0 / math.sqrt(d)
    d_out = jnp.einsum("btkgd->bkgtd", d_out.astype(_F32))
    delta = jnp.einsum("bkgtd,bkgtd->bkgt", d_out, out.astype(_F32))
    # Per tile everything is computed transposed (keys as rows: s^T, p^T, dS^T
    # [B, KV, bk, G * bq]) and dQ is accumulated as dQ^T, so all five products are
    # plain row-major matmuls: XLA:CPU transposes a fused dS per tile at 1 ms each.
    q_rows = _query_tiles(q.astype(_F32), bq)  # [n_q, B, KV, G*bq, D]
    q_cols = jnp.swapaxes(q_rows, -1, -2)
    do_rows = _query_tiles(d_out, bq)
    do_cols = jnp.swapaxes(do_rows, -1, -2)
    lse_tiles, delta_tiles = _query_tiles(lse, bq), _query_tiles(delta, bq)
    k_rows = jnp.swapaxes(kt, -1, -2).astype(_F32)
    slot_tiles = jnp.tile(jnp.reshape(query_slot, (n_q, 1, bq)), (1, g, 1)).reshape(n_q, g * bq)
    v_rows = v.astype(_F32)

    def tile_grads(i, j, mode: str):
        """(dK, dV, dQ^T) contributions of tile (query tile i, key tile j)."""
        k_blk, v_blk = _tile(k_rows, j, bk, 2), _tile(v_rows, j, bk, 2)
        s_t = jnp.einsum("bksd,bkdn->bksn", k_blk, q_cols[i])
        if mode == "full":
            keys = j * bk + jnp.arange(bk)
            keep = ((keys[:, None] <= slot_tiles[i][None, :])[None]
                    & _tile(kv_valid, j, bk, 1)[:, :, None])  # [B, bk, G * bq]
            s_t = s_t + _mask_bias(keep[:, None])
        elif mode == "keys":
            s_t = s_t + _mask_bias(_tile(kv_valid, j, bk, 1))[:, None, :, None]
        p_t = jnp.exp(s_t - lse_tiles[i][:, :, None, :])
        dp_t = jnp.einsum("bksd,bkdn->bksn", v_blk, do_cols[i])
        ds_t = p_t * (dp_t - delta_tiles[i][:, :, None, :])
        return (jnp.einsum("bksn,bknd->bksd", ds_t, q_rows[i]),
                jnp.einsum("bksn,bknd->bksd", p_t, do_rows[i]),
                jnp.einsum("bkds,bksn->bkdn", _tile(kt, j, bk, 3).astype(_F32), ds_t) * scale)

    zeros = jnp.zeros((b, kv, bk, d), _F32)
    if plan is not None:
        dq_tiles = [jnp.zeros_like(q_cols[0]) for _ in range(n_q)]
        dks, dvs = [], []
        for j in range(n_k):
            dk, dv = zeros, zeros
            for i in range(n_q):
                if plan[i][j]:
                    dk_ij, dv_ij, dq_ij = tile_grads(i, j, _STATIC_MODES[plan[i][j]])
                    dk, dv, dq_tiles[i] = dk + dk_ij, dv + dv_ij, dq_tiles[i] + dq_ij
            dks.append(dk)
            dvs.append(dv)
        dq_cols, dk, dv = jnp.stack(dq_tiles), jnp.stack(dks), jnp.stack(dvs)
    else:
        kinds = _tile_kinds(kv_valid, query_slot, bq, bk)

        def key_tile(dq_cols, j):
            def add(carry, i, mode):
                dk, dv, dq_cols = carry
                dk_ij, dv_ij, dq_ij = tile_grads(i, j, mode)
                dq_i = dq_cols[i] + dq_ij
                return (dk + dk_ij, dv + dv_ij,
                        jax.lax.dynamic_update_index_in_dim(dq_cols, dq_i, i, 0))

            def query_tile(carry, i):
                branches = (lambda c, _: c, *(functools.partial(add, mode=m)
                                              for m in _TRACED_MODES[1:]))
                return jax.lax.switch(kinds[i, j], branches, carry, i), None

            (dk, dv, dq_cols), _ = jax.lax.scan(query_tile, (zeros, zeros, dq_cols),
                                                jnp.arange(n_q))
            return dq_cols, (dk, dv)

        dq_cols, (dk, dv) = jax.lax.scan(key_tile, jnp.zeros_like(q_cols), jnp.arange(n_k))
    dq = dq_cols.reshape(n_q, b, kv, d, g, bq)
    dq = jnp.einsum("ibkdgt->bitkgd", dq).reshape(b, t, kv, g, d)
    dk = jnp.einsum("jbksd->bjskd", dk).reshape(b, n_k * bk, kv, d)
    dv = jnp.einsum("jbksd->bjskd", dv).reshape(b, n_k * bk, kv, d)
    no_grad = [np.zeros(np.shape(x), jax.dtypes.float0) for x in (kv_valid, query_slot)]
    return (dq.astype(q.dtype), dk.astype(kt.dtype), dv.astype(v.dtype), *no_grad)


flash_attention.defvjp(_fwd, _bwd)
