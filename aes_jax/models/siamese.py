"""The Siamese scorer's pieces around a LLaMA backbone (Pair2Score): masked mean pooling of
the last hidden states, the bias-free utility s(h) = w . h, Δ(a, b) = s(a) - s(b), and
the Stage-2 regression head Linear(in -> width), ReLU, Linear(width -> 1).

Δ is computed from the utilities of one batch [a essays; b essays], so both essays pass
through the same weights and Δ(a, b) = -Δ(b, a) holds exactly (a float difference).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

Array = jax.Array


def masked_mean_pool(hidden: Array, mask: Array) -> Array:
    """[B, T, H], [B, T] -> [B, H] float32 mean over the real tokens (0 for an empty row)."""
    m = mask.astype(jnp.float32)[..., None]
    total = jnp.sum(hidden.astype(jnp.float32) * m, axis=1)
    return total / jnp.maximum(jnp.sum(m, axis=1), 1.0)


def utility(w: Array, pooled: Array) -> Array:
    """[B]: pooled . w per row, no bias (a bias would cancel in every Δ anyway). A row-wise
    reduction, not a matmul, so a row's utility does not depend on its place in the batch
    (matmul blocking may change the last bit), which keeps Δ(a, b) == -Δ(b, a) exact."""
    return jnp.sum(pooled * w.astype(pooled.dtype), axis=-1)


def pair_delta(utilities: Array) -> Array:
    """[2B] utilities of [a; b] -> [B] Δ = s(a) - s(b)."""
    half = utilities.shape[0] // 2
    return utilities[:half] - utilities[half:]


def init_utility(rng: jax.Array, hidden_size: int) -> dict:
    """w ~ N(0, 1/H): the utility starts on the scale of one pooled coordinate (the pooled
    states of a pretrained LM have entries of order 1), so early Δs are neither 0 nor huge."""
    return {"w": jax.random.normal(rng, (hidden_size,), jnp.float32) / math.sqrt(hidden_size)}


def utility_axes() -> dict:
    return {"w": P("embed")}


def _torch_linear_init(rng: jax.Array, fan_in: int, fan_out: int) -> dict:
    """torch.nn.Linear's default: kaiming_uniform(a=sqrt(5)) = U(±1/sqrt(fan_in)) for the
    weight and U(±1/sqrt(fan_in)) for the bias, so the head starts as the original's."""
    bound = 1.0 / math.sqrt(fan_in)
    k_rng, b_rng = jax.random.split(rng)
    return {"kernel": jax.random.uniform(k_rng, (fan_in, fan_out), jnp.float32, -bound, bound),
            "bias": jax.random.uniform(b_rng, (fan_out,), jnp.float32, -bound, bound)}


class RegressionHead(nn.Module):
    """Linear(in -> width), ReLU, Linear(width -> 1) -> [B]; params {"hidden", "out"}."""

    width: int

    @nn.compact
    def __call__(self, features: Array) -> Array:
        x = nn.relu(nn.Dense(self.width, name="hidden")(features.astype(jnp.float32)))
        return nn.Dense(1, name="out")(x)[..., 0]


def init_regression_head(rng: jax.Array, in_features: int, width: int) -> dict:
    h_rng, o_rng = jax.random.split(rng)
    return {"hidden": _torch_linear_init(h_rng, in_features, width),
            "out": _torch_linear_init(o_rng, width, 1)}


def regression_head_axes() -> dict:
    return {"hidden": {"kernel": P(None, None), "bias": P(None)},
            "out": {"kernel": P(None, None), "bias": P(None)}}
