"""Reductions and the loss dtype shared by every loss in this package."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

# Floors on the denominator of `masked_mean`. Both only matter when nothing is masked
# in (the numerator is then 0, so the mean is 0 rather than 0/0 = NaN); they differ in
# what they do to a total between 0 and 1, which only fractional weights can produce.
#
# COUNT_FLOOR: token losses (lm, number_tokens, emo, `sequence_logprob`). Their masks
#   are 0/1, so the count is 0 or >= 1 and the floor changes no other value.
# WEIGHT_FLOOR: row-weighted regression losses (weighted_mse, halting_bce). Their
#   weights may be fractional, and the mean must stay a weighted average whatever the
#   total (a floor of 1 would shrink a loss whose weights sum to 0.5). 1e-12 is still
#   a normal number in float32, so the division never sees 0.
COUNT_FLOOR = 1.0
WEIGHT_FLOOR = 1e-12


def loss_dtype(x: Array) -> jnp.dtype:
    """The dtype a loss computes in: float32 for bf16 / f16 / f32 inputs, float64 kept.

    Softmax and log-sum-exp in bf16 are too coarse for a loss or its gradient; float64
    stays float64 so tests under `jax.enable_x64` can compare with torch at 1e-6.
    """
    return jnp.promote_types(x.dtype, jnp.float32)


def masked_mean(values: Array, mask: Array, *, floor: float = COUNT_FLOOR,
                axis: int | None = None) -> Array:
    """sum(values * mask) / max(sum(mask), floor), over `axis` (None: every element).

    `mask` has the shape of `values`; a bool or integer mask is cast to the dtype of
    `values`, a floating one is used as given (its weights, its dtype promotion). See
    COUNT_FLOOR / WEIGHT_FLOOR for which floor a loss passes.
    """
    weight = jnp.asarray(mask)
    if not jnp.issubdtype(weight.dtype, jnp.floating):
        weight = weight.astype(values.dtype)
    return jnp.sum(values * weight, axis=axis) / jnp.maximum(jnp.sum(weight, axis=axis), floor)
