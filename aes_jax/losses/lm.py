"""Token-level cross-entropy for causal LMs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def token_nll(logits: Array, labels: Array) -> Array:
    """Negative log-likelihood of `labels` [B, T] under `logits` [B, T, V], float32 [B, T]."""
    logits = logits.astype(jnp.float32)
    log_z = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return log_z - picked


def masked_cross_entropy(logits: Array, labels: Array, mask: Array) -> Array:
    """Mean NLL over positions where `mask` is true (0 when nothing is masked in)."""
    mask = mask.astype(jnp.float32)
    return jnp.sum(token_nll(logits, labels) * mask) / jnp.maximum(jnp.sum(mask), 1.0)
