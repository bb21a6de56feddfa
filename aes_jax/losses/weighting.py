"""Ways to combine a main loss with auxiliary ones: fixed weights, EMO's
magnitude-matching, and learned homoscedastic-uncertainty weights."""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

Array = jax.Array


def static(losses: Mapping[str, Array], weights: Mapping[str, float]) -> Array:
    """sum_name weights[name] * losses[name].

    A weighted name with no loss is an error: a typo in a config would otherwise
    silently train without that term. Losses with no weight are left out (computed for
    logging only).
    """
    missing = sorted(set(weights) - set(losses))
    if missing:
        raise KeyError(f"weights name losses that were not computed: {missing}; "
                       f"available: {sorted(losses)}")
    total = jnp.zeros((), jnp.float32)
    for name, w in weights.items():
        total = total + w * losses[name]
    return total


def dynamic(ce: Array, aux: Array, eps: float = 1e-8) -> Array:
    """0.5 * (ce + stop_gradient(ce / (aux + eps)) * aux), elementwise.

    EMO's balancing: the auxiliary loss is rescaled to CE's magnitude so neither term
    dominates whatever their natural scales, and the ratio is a constant so it cannot
    be "optimised" by inflating aux. In value this is just ce; gradients are
    0.5 * d ce + 0.5 * (ce / aux) * d aux. The EMO code applies it per token before
    averaging; pass per-token arrays for that, or scalar means for a batch-level ratio.
    """
    ratio = jax.lax.stop_gradient(ce / (aux + eps))
    return 0.5 * (ce + ratio * aux)


def uncertainty(losses: Array, log_vars: Array) -> Array:
    """sum_i 0.5 * exp(-s_i) * L_i + 0.5 * s_i with learnable s_i = log sigma_i^2.

    Kendall, Gal & Cipolla (CVPR 2018): each task's weight is learned jointly with the
    model; the 0.5 * s_i term stops the trivial solution of infinite variance. log
    variances (not variances) keep the weight positive without constraints.
    """
    losses = jnp.asarray(losses)
    log_vars = jnp.asarray(log_vars)
    if losses.shape != log_vars.shape or losses.ndim != 1:
        raise ValueError(f"losses and log_vars must both be [n], got {losses.shape} "
                         f"and {log_vars.shape}")
    return jnp.sum(0.5 * jnp.exp(-log_vars) * losses + 0.5 * log_vars)


def init_log_vars(n: int) -> Array:
    """Initial log variances: 0, i.e. every task starts with weight 0.5."""
    return jnp.zeros((n,), jnp.float32)
