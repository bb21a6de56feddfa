"""Token log-probabilities straight from hidden states, a block of tokens at a time, so
that no [B, T, vocab] float32 logits tensor exists in the forward or the backward pass.

Each block computes its [block, vocab] logits, reduces them to one number per token
(log-sum-exp and the label's logit) and is rematerialised in the backward pass: peak
memory is O(block * vocab) instead of O(B * T * vocab). Same values as
`losses.lm.token_nll(hidden @ head.T, labels)` within float32 rounding (in bf16, within
bf16 rounding of the logits, which this path keeps in float32).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from aes_jax.losses.reduce import loss_dtype

Array = jax.Array


def blockwise_token_nll(hidden: Array, head: Array, labels: Array,
                        block_tokens: int = 1024) -> Array:
    """-log softmax(hidden @ head.T)[labels] per position.

    hidden [B, T, D] (the final-norm states, any float dtype; the product runs in it),
    head [V, D] (output embedding rows), labels [B, T] valid ids -> [B, T] in `loss_dtype`.
    """
    return blockwise_map(hidden, head, labels, token_nll_of_block, block_tokens)


def token_nll_of_block(logits: Array, labels: Array) -> Array:
    """logits [..., V] float32, labels [...] -> [...] NLL (a `per_token` function)."""
    picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    return jax.nn.logsumexp(logits, axis=-1) - picked


def blockwise_map(hidden: Array, head: Array, labels: Array,
                  per_token: Callable[[Array, Array], Any], block_tokens: int = 1024) -> Any:
    """`per_token(logits [n, V], labels [n])` -> a pytree of [n, ...] arrays, applied to
    blocks of n tokens; returns the same pytree with leaves [B, T, ...]. The logits are
    float32 (float64 for float64 states) and never exist for more than one block."""
    b, t, d = hidden.shape
    n = b * t
    block = max(1, min(block_tokens, n))
    flat_h = hidden.reshape(n, d)
    flat_y = labels.reshape(n).astype(jnp.int32)
    extra = -n % block
    if extra:  # padding tokens read label 0; their values are cut off below
        flat_h = jnp.pad(flat_h, ((0, extra), (0, 0)))
        flat_y = jnp.pad(flat_y, (0, extra))
    head = head.astype(hidden.dtype)

    @jax.checkpoint
    def one_block(args):
        h, y = args
        # Products in the states' dtype, results kept in float32 (or float64): one bf16
        # rounding fewer than the model's own head, which returns bf16 logits.
        logits = jnp.einsum("nd,vd->nv", h, head, preferred_element_type=loss_dtype(h))
        return per_token(logits, y)

    out = jax.lax.map(one_block, (flat_h.reshape(-1, block, d), flat_y.reshape(-1, block)))
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:])[:n].reshape(b, t, *x.shape[2:]),
                        out)
