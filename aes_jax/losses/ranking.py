"""Pairwise ranking losses for Pair2Score (pure functions of utilities).

pair_logistic(Δ, y)   = mean_b [ softplus(Δ_b) - y_b Δ_b ]            (BCE with logits on
                        Δ = s(a) - s(b), y = 1 when a is better)
all_pairs(u, s, v, g) = mean over ordered (i, j), i != j, v_i and v_j, s_i - s_j >= g, of
                        softplus(-(u_i - u_j))                        (RankNet, every pair
                        of the batch whose score gap is at least g)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aes_jax.losses.reduce import WEIGHT_FLOOR, loss_dtype, masked_mean

Array = jax.Array


def pair_logistic(delta: Array, y: Array, weight: Array | None = None) -> Array:
    """BCE with logits on Δ [B] against y [B] in {0, 1}; `weight` [B] a row-weighted mean.
    softplus(Δ) - yΔ equals -[y log σ(Δ) + (1 - y) log σ(-Δ)] and never overflows."""
    delta = delta.astype(loss_dtype(delta))
    per_row = jax.nn.softplus(delta) - y.astype(delta.dtype) * delta
    if weight is None:
        return jnp.mean(per_row)
    return masked_mean(per_row, weight.astype(delta.dtype), floor=WEIGHT_FLOOR)


def all_pairs(utilities: Array, scores: Array, valid: Array, min_gap: float
              ) -> tuple[Array, Array]:
    """(RankNet loss over every qualifying ordered pair of the batch, number of pairs).

    A pair (i, j) qualifies when both rows are valid and scores[i] - scores[j] >= min_gap
    (so i is the better essay; min_gap > 0 excludes i == j and ties). No qualifying pair:
    loss 0 with zero gradient, never NaN."""
    u = utilities.astype(loss_dtype(utilities))
    s = scores.astype(u.dtype)
    both = valid[:, None] & valid[None, :]
    pairs = both & (s[:, None] - s[None, :] >= min_gap) & ~jnp.eye(u.shape[0], dtype=bool)
    per_pair = jax.nn.softplus(-(u[:, None] - u[None, :]))
    count = jnp.sum(pairs)
    return masked_mean(per_pair, pairs), count


def pair_accuracy(delta: Array, y: Array) -> Array:
    """Fraction of pairs whose sign of Δ agrees with y (Δ == 0 counts half)."""
    hit = jnp.where(delta == 0, 0.5, ((delta > 0) == (y > 0.5)).astype(jnp.float32))
    return jnp.mean(hit)
