"""Regression and halting losses for essay scorers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from aes_jax.losses.reduce import WEIGHT_FLOOR, loss_dtype, masked_mean

Array = jax.Array


def weighted_mse(pred: Array, target: Array, weight: Array, mask: Array | None = None) -> Array:
    """sum_b w_b * mse_b / sum_b w_b,  mse_b = sum_k m_bk (pred_bk - target_bk)^2 / sum_k m_bk.

    pred, target [B, K]; weight [B] (rows with weight 0 do not count); `mask` [B, K]
    leaves out outputs a row has no gold for (e.g. traits its prompt lacks), default all.
    """
    dtype = loss_dtype(pred)
    sq = (pred.astype(dtype) - target.astype(dtype)) ** 2
    mask = jnp.ones_like(sq) if mask is None else mask.astype(dtype)
    per_row = masked_mean(sq, mask, floor=WEIGHT_FLOOR, axis=-1)
    return masked_mean(per_row, weight, floor=WEIGHT_FLOOR)


def halting_bce(halt_logit: Array, correct: Array, weight: Array) -> Array:
    """sum_b w_b * BCE(sigmoid(halt_logit_b), correct_b) / sum_b w_b.

    The halting head's target: "the current prediction is already right".
    """
    dtype = loss_dtype(halt_logit)
    per_row = optax.sigmoid_binary_cross_entropy(halt_logit.astype(dtype), correct.astype(dtype))
    return masked_mean(per_row, weight, floor=WEIGHT_FLOOR)
