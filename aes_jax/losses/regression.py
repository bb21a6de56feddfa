"""Regression and halting losses for essay scorers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


def weighted_mse(pred: Array, target: Array, weight: Array) -> Array:
    """Mean squared error over rows with weight > 0. pred, target [B, K]; weight [B]."""
    per_row = jnp.mean((pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2, axis=-1)
    return jnp.sum(per_row * weight) / jnp.maximum(jnp.sum(weight), 1e-12)


def halting_bce(halt_logit: Array, correct: Array, weight: Array) -> Array:
    """BCE of the halting logit against "the current prediction is already right"."""
    per_row = optax.sigmoid_binary_cross_entropy(halt_logit.astype(jnp.float32),
                                                 correct.astype(jnp.float32))
    return jnp.sum(per_row * weight) / jnp.maximum(jnp.sum(weight), 1e-12)
