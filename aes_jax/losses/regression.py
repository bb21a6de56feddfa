"""Regression and halting losses for essay scorers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def weighted_mse(pred: Array, target: Array, weight: Array, mask: Array | None = None) -> Array:
    """Mean squared error over rows with weight > 0. pred, target [B, K]; weight [B];
    `mask` [B, K] leaves out outputs a row has no gold for (e.g. traits its prompt lacks)."""
    sq = (pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2
    mask = jnp.ones_like(sq) if mask is None else mask.astype(jnp.float32)
    per_row = jnp.sum(sq * mask, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1e-12)
    return jnp.sum(per_row * weight) / jnp.maximum(jnp.sum(weight), 1e-12)


def halting_bce(halt_logit: Array, correct: Array, weight: Array) -> Array:
    """BCE of the halting logit against "the current prediction is already right"."""
    per_row = optax.sigmoid_binary_cross_entropy(halt_logit.astype(jnp.float32),
                                                 correct.astype(jnp.float32))
    return jnp.sum(per_row * weight) / jnp.maximum(jnp.sum(weight), 1e-12)
