"""Token-level cross-entropy and sequence log-probabilities for causal LMs.

Alignment everywhere: `logits[:, t]` scores `labels[:, t]`; shifting targets by one
(the next token) is the caller's job, done once when batches are built.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aes_jax.losses.reduce import COUNT_FLOOR, loss_dtype, masked_mean

Array = jax.Array


def token_nll(logits: Array, labels: Array) -> Array:
    """-log softmax(logits)[labels] = logsumexp(logits) - logits[labels], per position.

    logits [B, T, V], labels [B, T] -> [B, T] in `loss_dtype` (float32, or float64 for
    float64 logits). Labels must be valid ids: an out-of-range id gathers NaN.
    """
    logits = logits.astype(loss_dtype(logits))
    log_z = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return log_z - picked


def masked_labels(labels: Array, mask: Array) -> Array:
    # Masked-out positions may hold ignore ids (-100); their gathered NaN would survive
    # the multiplication by 0 in the mean, so point them at id 0 first.
    return jnp.where(mask, labels, 0)


def masked_cross_entropy(logits: Array, labels: Array, mask: Array) -> Array:
    """sum_{b,t} m_bt * nll_bt / max(sum_{b,t} m_bt, 1): mean NLL over masked-in positions.

    0 when nothing is masked in. Labels at masked-out positions are never read.
    """
    nll = token_nll(logits, masked_labels(labels, mask))
    return masked_mean(nll, mask, floor=COUNT_FLOOR)


def sequence_logprob(logits: Array, labels: Array, mask: Array,
                     average: bool = False) -> Array:
    """Per-row log-probability of the masked-in labels, [B].

    logp_bt = log softmax(logits_bt)[labels_bt]   (logits [B, T, V], labels/mask [B, T])
    average=False:  s_b = sum_t m_bt * logp_bt
    average=True:   s_b = sum_t m_bt * logp_bt / max(sum_t m_bt, 1)

    A row with nothing masked in gives 0 either way (the floor keeps the mean finite).
    The sum is what DPO compares between policy and reference; the mean removes the
    preference for short completions that a sum carries. Labels at masked-out positions
    are never read, so they may be ignore ids.
    """
    return sequence_sums(-token_nll(logits, masked_labels(labels, mask)), mask, average)


def sequence_sums(logp: Array, mask: Array, average: bool = False) -> Array:
    """`sequence_logprob` from per-token log-probs [B, T] (e.g. blockwise ones)."""
    if average:
        return masked_mean(logp, mask, floor=COUNT_FLOOR, axis=-1)
    return jnp.sum(logp * mask.astype(logp.dtype), axis=-1)


def nll_sums(logits: Array, labels: Array, mask: Array, weight: Array) -> dict[str, Array]:
    """An eval batch's summed NLL over the masked-in positions of its real rows (`weight`
    [B] is 0 for padding rows) and their count: `loss_sum`, `loss_count`."""
    return summed_nll(token_nll(logits, masked_labels(labels, mask)), mask, weight)


def summed_nll(nll: Array, mask: Array, weight: Array) -> dict[str, Array]:
    """`nll_sums` from per-token NLL [B, T] (e.g. blockwise)."""
    m = mask.astype(jnp.float32) * weight[:, None]
    return {"loss_sum": jnp.sum(nll * m), "loss_count": jnp.sum(m)}
