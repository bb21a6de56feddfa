"""EMO: earth mover distance between the LM's next-token distribution and the gold token.

Ren et al., "EMO: Earth Mover Distance Optimization for Auto-Regressive Language
Modeling" (ICLR 2024). Transport cost between tokens i, j is 1 - cos(e_i, e_j) on a
cost embedding (the LM head rows). Moving mass from the gold token to a near-synonym
is then cheap and to an unrelated token expensive, which cross-entropy cannot express.

Per position: E = unit-norm cost embedding rows, q = sum_j p_j E_j over the model's
probabilities p with the gold probability zeroed in value (not in gradient). Two forms,
averaged over masked-in positions:

* dot (``normalize=False``, the default; the public EMO code, DRSY/EMO):
  loss = 1 - <E_gold, q> = 1 - sum_{j != gold} p_j cos(e_gold, e_j). Its gradient is
  exactly that of the EMD to the gold token, sum_j p_j (1 - cos(e_gold, e_j)) (the two
  differ in value by p(gold), a constant in gradient), so it pushes p(gold) up and
  vanishes as p(gold) -> 1.
* cosine (``normalize=True``): loss = 1 - cos(E_gold, q). With the gold token removed
  from q, this is the cosine between the gold embedding and the *direction* of the
  non-gold mass only, so its value does not depend on p(gold) at all (scaling the
  non-gold probabilities leaves it unchanged), while its gradient grows instead of
  vanishing as p(gold) -> 1: it keeps pushing a token that is already certain. Kept
  for comparison (an earlier aes_jax default); not the public code's loss.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aes_jax.losses.reduce import COUNT_FLOOR, loss_dtype, masked_mean

Array = jax.Array

# Floor on vector norms. Zero LM-head rows (padded vocabularies) and a mixture q that is
# exactly zero (all mass on the gold token) would otherwise divide by zero; flooring the
# squared norm, not the norm, also keeps the gradient of sqrt finite at 0.
_EPS = 1e-8


def _unit_rows(x: Array) -> Array:
    return x / jnp.sqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), _EPS**2))


def _cost_embedding(lm_head: Array, vocab: int, dtype: jnp.dtype) -> Array:
    """Unit-norm LM-head rows [V, D] as a constant.

    stop_gradient: E defines the transport metric, not something to optimise. With a
    gradient the cheapest way to lower the loss would be to pull all embeddings
    together (making every token "close" to the gold one) instead of moving
    probability mass, which also corrupts the LM head the logits come from. The
    original keeps a detached copy of the head for the same reason.
    """
    if lm_head.ndim != 2 or lm_head.shape[0] != vocab:
        raise ValueError(f"lm_head must be [V={vocab}, D] (rows indexed by token id), "
                         f"got shape {lm_head.shape}")
    return jax.lax.stop_gradient(_unit_rows(lm_head.astype(dtype)))


def _loss_from_mixture(q: Array, e_gold: Array, mask: Array, normalize: bool) -> Array:
    if normalize:  # the cosine form (module docstring): blind to p(gold)
        q = _unit_rows(q)
    per_position = 1.0 - jnp.sum(e_gold * q, axis=-1)
    return masked_mean(per_position, mask, floor=COUNT_FLOOR)


def _drop_in_value(p: Array, is_gold: Array) -> Array:
    # Value: the gold probability is removed (moving gold mass to itself costs
    # nothing). Gradient: the subtracted copy is constant, so d/dlogits is that of the
    # full softmax, gold entry included, exactly as with `.detach()` in the original.
    return p - jax.lax.stop_gradient(jnp.where(is_gold, p, 0))


def cost_embedding(lm_head: Array, dtype: jnp.dtype = jnp.float32) -> Array:
    """The transport metric's unit-norm rows [V, D], a constant (see `_cost_embedding`)."""
    return _cost_embedding(lm_head, lm_head.shape[0], dtype)


def mixture_full(logits: Array, gold: Array, e: Array) -> Array:
    """q = sum_j p_j E_j over the whole vocabulary, gold mass dropped in value.
    logits [..., V] (float32), gold [...] valid ids, e = `cost_embedding` -> [..., D].
    The mixture is p @ E, never a [..., V, D] tensor."""
    p = jax.nn.softmax(logits, axis=-1)
    p = _drop_in_value(p, jnp.arange(logits.shape[-1]) == gold[..., None])
    return jnp.einsum("...v,vd->...d", p, e)


def mixture_topk(logits: Array, gold: Array, e: Array, k: int) -> Array:
    """q over the k most probable tokens of the full softmax (see `emo_topk`)."""
    p = jax.nn.softmax(logits, axis=-1)
    # Rank on logits: same order as p, but without ties from probabilities underflowing
    # to 0. The ranking itself carries no gradient; the gathered probabilities do.
    _, idx = jax.lax.top_k(jax.lax.stop_gradient(logits), k)
    p_top = _drop_in_value(jnp.take_along_axis(p, idx, axis=-1), idx == gold[..., None])
    return jnp.einsum("...k,...kd->...d", p_top, jnp.take(e, idx, axis=0))


def loss_from_mixture(q: Array, e: Array, gold: Array, mask: Array, normalize: bool) -> Array:
    """The masked mean of 1 - <E_gold, q> (or of 1 - cos(E_gold, q) when `normalize`)."""
    return _loss_from_mixture(q, jnp.take(e, gold, axis=0), mask, normalize)


def _gold(labels: Array, mask: Array) -> Array:
    # Labels at masked-out positions may be ignore ids (-100); point them at row 0 so
    # gathers stay in range. Their loss is multiplied by 0 afterwards.
    return jnp.where(mask, labels, 0).astype(jnp.int32)


def emo_full(logits: Array, labels: Array, mask: Array, lm_head: Array,
             *, normalize: bool = False) -> Array:
    """EMO over the whole vocabulary. logits [B, T, V], labels/mask [B, T], lm_head [V, D].

    The default is the public code's dot form 1 - <E_gold, q> (gradient of the exact EMD
    under the cosine cost); `normalize=True` L2-normalises q first, the cosine form that
    ignores p(gold) (module docstring).
    """
    dtype = loss_dtype(logits)
    e = _cost_embedding(lm_head, logits.shape[-1], dtype)
    gold = _gold(labels, mask)
    return loss_from_mixture(mixture_full(logits.astype(dtype), gold, e), e, gold, mask,
                             normalize)


def emo_topk(logits: Array, labels: Array, mask: Array, lm_head: Array, k: int = 64,
             *, normalize: bool = False) -> Array:
    """EMO restricted to the k most probable tokens of the full softmax (k clipped to V).

    Probabilities are those of the full softmax, not renormalised over the top k (in the
    default dot form the mass outside the top k simply contributes nothing; the cosine
    form, `normalize=True`, is scale-free anyway). The gold token is zeroed in value only
    when it is among the top k. Gathers E[top-k ids] -> [B, T, k, D], so memory is k/V
    of a dense [B, T, V, D] mixture and compute skips the V-wide matmul.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    dtype = loss_dtype(logits)
    vocab = logits.shape[-1]
    e = _cost_embedding(lm_head, vocab, dtype)
    gold = _gold(labels, mask)
    q = mixture_topk(logits.astype(dtype), gold, e, min(int(k), vocab))
    return loss_from_mixture(q, e, gold, mask, normalize)
