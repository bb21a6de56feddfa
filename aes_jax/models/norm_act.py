"""RMSNorm and SwiGLU's gate with hand-written VJPs that keep only their inputs.

Same forward expressions as before; the backward recomputes the normalised rows and
the sigmoid instead of storing them. Under nn.scan every stored intermediate is copied
into a [layers, ...] stack in the forward and read back in the backward, and on CPU
those copies cost more than the recomputation: autodiff kept six [T, 1536] and six
[T, 576] arrays per SmolLM2 layer, these keep the inputs (gate, up; x) and one scalar per
row. Gradients are computed in float32 whatever the activation dtype.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

Array = jax.Array
_F32 = jnp.float32


def _inverse_rms(x32: Array, eps: float) -> Array:
    return jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def rms_norm(x: Array, scale: Array, eps: float, dtype) -> Array:
    """scale * x / rms(x) over the last axis, normalised in float32, returned in `dtype`
    (HF LlamaRMSNorm: the weight multiplies the normalised input cast to its dtype)."""
    x32 = x.astype(_F32)
    normed = x32 * _inverse_rms(x32, eps)
    return scale.astype(dtype) * normed.astype(dtype)


def _rms_norm_fwd(x: Array, scale: Array, eps: float, dtype):
    x32 = x.astype(_F32)
    inv = _inverse_rms(x32, eps)
    return scale.astype(dtype) * (x32 * inv).astype(dtype), (x, scale, inv)


def _rms_norm_bwd(eps: float, dtype, residuals, dy: Array):
    x, scale, inv = residuals
    x32, dy32 = x.astype(_F32), dy.astype(_F32)
    normed = x32 * inv
    d_scale = jnp.sum((dy32 * normed).reshape(-1, x.shape[-1]), axis=0)
    d_normed = dy32 * scale.astype(dtype).astype(_F32)
    # d/dx of x * inv(x): inv * (g - normed * mean(g * normed)).
    dx = inv * (d_normed - normed * jnp.mean(d_normed * normed, axis=-1, keepdims=True))
    # A row whose mean square overflowed (inv = 0; its output is a meaningless 0) gets a
    # NaN gradient, not autodiff's silent 0, so the loop's non-finite check stops a
    # diverging run (tests/test_train_loop.py) instead of it training on.
    dx = jnp.where(inv > 0, dx, jnp.nan)
    return dx.astype(x.dtype), d_scale.astype(scale.dtype)


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


@jax.custom_vjp
def silu_mul(gate: Array, up: Array) -> Array:
    """silu(gate) * up, SwiGLU's gated activation."""
    return jax.nn.silu(gate) * up


def _silu_mul_fwd(gate: Array, up: Array):
    return silu_mul(gate, up), (gate, up)


def _silu_mul_bwd(residuals, dy: Array):
    gate, up = residuals
    g, u, dy32 = gate.astype(_F32), up.astype(_F32), dy.astype(_F32)
    sig = jax.nn.sigmoid(g)
    d_gate = dy32 * u * sig * (1.0 + g * (1.0 - sig))
    d_up = dy32 * g * sig
    return d_gate.astype(gate.dtype), d_up.astype(up.dtype)


silu_mul.defvjp(_silu_mul_fwd, _silu_mul_bwd)
