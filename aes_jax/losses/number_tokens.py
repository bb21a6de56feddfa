"""Number-token losses (NTL): regression-aware auxiliary losses on digit tokens.

Cross-entropy treats "4" vs a gold "5" as wrong as "0" vs "5". NTL reads the LM's
distribution over the digit tokens as a distribution over numbers and penalises its
distance to the gold number, so near misses cost less than far ones.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.losses.reduce import COUNT_FLOOR, loss_dtype, masked_mean

Array = jax.Array

log = logging.getLogger(__name__)

# Multi-digit strings a digit-merging tokenizer would turn into fewer tokens than chars.
_MERGE_PROBES = ("10", "42", "2024")


def _digit_distribution(logits: Array, labels: Array, mask: Array, digit_ids: Array,
                        digit_values: Array, digits_only: bool = False
                        ) -> tuple[Array, Array, Array, Array]:
    """Shared part of both NTL losses. `digits_only`: `logits` already holds just the
    digit columns [B, T, K] (as LLaMA-AES's blockwise loss gathers them per block).

    Returns p [B, T, K] (softmax over the digit logits only), values [K], the gold
    value y [B, T] (0 where the label is not a digit), and the weight [B, T] of the
    positions that count: masked in AND labelled with a digit token.
    """
    dtype = loss_dtype(logits)
    digit_ids = jnp.asarray(digit_ids, jnp.int32)
    values = jnp.asarray(digit_values).astype(dtype)
    if not digits_only:
        logits = jnp.take(logits, digit_ids, axis=-1)
    p = jax.nn.softmax(logits.astype(dtype), axis=-1)
    hit = labels[..., None].astype(jnp.int32) == digit_ids  # [B, T, K]
    y = jnp.sum(jnp.where(hit, values, 0), axis=-1)
    # A masked-in position whose gold token is not a digit (a space, EOS, a word) has no
    # number to regress to; it is left out of both the sum and the count rather than
    # being pulled towards an arbitrary value.
    weight = (mask & jnp.any(hit, axis=-1)).astype(dtype)
    return p, values, y, weight


def ntl_mse(logits: Array, labels: Array, mask: Array, digit_ids: Array,
            digit_values: Array, *, digits_only: bool = False) -> Array:
    """NTL-MSE: (sum_k p_k v_k - y)^2, p the softmax over the digit logits only.

    Averaged over positions that are in `mask` and whose label is one of `digit_ids`;
    other masked positions contribute nothing and are not counted (0 if none count).
    """
    p, values, y, weight = _digit_distribution(logits, labels, mask, digit_ids, digit_values,
                                               digits_only)
    expected = jnp.sum(p * values, axis=-1)
    return masked_mean((expected - y) ** 2, weight, floor=COUNT_FLOOR)


def ntl_wasserstein(logits: Array, labels: Array, mask: Array, digit_ids: Array,
                    digit_values: Array, *, digits_only: bool = False) -> Array:
    """NTL-WAS: sum_k p_k |y - v_k|, the W1 distance from p to a point mass at y.

    Against a one-hot target the optimal transport plan is forced (all mass goes to y),
    so this is exact for any spacing or order of the values, unlike the CDF form.
    Counted positions as in `ntl_mse`.
    """
    p, values, y, weight = _digit_distribution(logits, labels, mask, digit_ids, digit_values,
                                               digits_only)
    return masked_mean(jnp.sum(p * jnp.abs(y[..., None] - values), axis=-1), weight,
                       floor=COUNT_FLOOR)


def merges_digits(encode: Callable[[str], list[int]]) -> bool:
    """True if the tokenizer packs several digits into one token (e.g. "42" -> 1 id)."""
    return any(len(encode(s)) < len(s) for s in _MERGE_PROBES)


def digit_token_ids(encode: Callable[[str], list[int]], num_embeddings: int,
                    digits: str = "0123456789") -> tuple[np.ndarray, np.ndarray]:
    """Token ids [K] int32 and numeric values [K] float32 of the single-digit tokens.

    `encode` is the tokenizer's encode without special tokens. `num_embeddings` is the
    model's embedding/LM-head row count, which may differ from len(tokenizer) (padded
    vocabularies), and is what the logits are indexed by. Raises ValueError when a digit
    is not exactly one in-range token, or two digits share a token, since the
    number-token loss reads one logit per digit. A tokenizer that merges multi-digit
    strings only gets a warning: scores are written as single digits separated by
    spaces, which such a tokenizer still splits one token per digit.
    """
    ids, values = [], []
    for ch in digits:
        if ch not in "0123456789":
            raise ValueError(f"digits must be decimal digit characters, got {ch!r}")
        toks = list(encode(ch))
        if len(toks) != 1:
            raise ValueError(
                f"digit {ch!r} encodes to {toks} ({len(toks)} tokens); the number-token "
                "loss needs exactly one token per digit to read its probability")
        tok = int(toks[0])
        if not 0 <= tok < num_embeddings:
            raise ValueError(
                f"digit {ch!r} encodes to id {tok}, outside the model's {num_embeddings} "
                "embedding rows; the number-token loss would index a logit that does "
                "not exist")
        if tok in ids:
            other = digits[ids.index(tok)]
            raise ValueError(
                f"digits {other!r} and {ch!r} both encode to id {tok}; the number-token "
                "loss needs a distinct token per digit")
        ids.append(tok)
        values.append(float(int(ch)))
    if merges_digits(encode):
        probe = next(s for s in _MERGE_PROBES if len(encode(s)) < len(s))
        log.warning(
            "This tokenizer merges digits into multi-digit tokens (%r -> %s); "
            "number-token losses only see single-digit tokens, so scores must be "
            "written as single digits separated by spaces (the score codec does this).",
            probe, list(encode(probe)))
    return np.asarray(ids, np.int32), np.asarray(values, np.float32)
