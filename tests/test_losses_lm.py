"""Causal-LM cross-entropy and sequence log-probabilities vs torch, value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from aes_jax.losses.lm import masked_cross_entropy, sequence_logprob


def test_masked_cross_entropy_matches_torch(rng):
    logits = rng.normal(size=(3, 7, 11)).astype(np.float32) * 3
    labels = rng.integers(0, 11, size=(3, 7))
    mask = rng.random((3, 7)) > 0.3

    value, grad = jax.value_and_grad(masked_cross_entropy)(
        jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask))

    t_logits = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    t_labels = torch.tensor(np.where(mask, labels, -100))
    expected = torch.nn.functional.cross_entropy(t_logits.reshape(-1, 11), t_labels.reshape(-1),
                                                 ignore_index=-100)
    expected.backward()
    np.testing.assert_allclose(float(value), expected.item(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), t_logits.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_fully_masked_batch_is_zero_not_nan():
    loss = masked_cross_entropy(jnp.zeros((1, 2, 3)), jnp.zeros((1, 2), jnp.int32),
                                jnp.zeros((1, 2), bool))
    assert float(loss) == 0.0


def test_masked_cross_entropy_ignores_labels_at_masked_out_positions():
    # An ignore id (-100) where the mask is off used to gather NaN into the mean.
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 5)), jnp.float32)
    mask = jnp.asarray([[True, False, True]])
    with_ignore = masked_cross_entropy(logits, jnp.asarray([[1, -100, 4]]), mask)
    with_valid = masked_cross_entropy(logits, jnp.asarray([[1, 2, 4]]), mask)
    assert float(with_ignore) == float(with_valid)


# --------------------------------------------------------------------------- sequence_logprob


def torch_sequence_logprob(logits: torch.Tensor, labels: np.ndarray, mask: np.ndarray,
                           average: bool) -> torch.Tensor:
    """The docstring's formula, row by row: sum (or mean) of log p(label) over the mask;
    a row with nothing masked in is 0."""
    logp = torch.log_softmax(logits, dim=-1)
    rows = []
    for b in range(logits.shape[0]):
        keep = np.flatnonzero(mask[b])
        picked = logp[b, keep, torch.tensor(labels[b, keep])]
        if keep.size == 0:
            rows.append(logits.new_zeros(()))
        else:
            rows.append(picked.mean() if average else picked.sum())
    return torch.stack(rows)


def _sequence_case(rng):
    logits = rng.normal(size=(4, 6, 13)) * 3
    labels = rng.integers(0, 13, size=(4, 6))
    mask = rng.random((4, 6)) > 0.4
    mask[0] = True
    mask[1] = False  # all masked out: 0, not NaN
    mask[2, :5] = False
    mask[2, 5] = True
    labels = np.where(mask, labels, -100)  # ignore ids where masked out must be harmless
    return logits, labels, mask


@pytest.mark.parametrize("average", [False, True])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-6), ("float32", 1e-5)])
def test_sequence_logprob_matches_torch(rng, average, dtype, rtol):
    logits, labels, mask = _sequence_case(rng)
    logits = logits.astype(dtype)
    # Weighting each row differently makes the gradient check see every row separately.
    row_weight = np.array([1.0, 2.0, -0.5, 3.0])
    with jax.enable_x64(dtype == "float64"):
        fn = lambda lg: jnp.sum(sequence_logprob(lg, jnp.asarray(labels), jnp.asarray(mask),
                                                 average=average) * row_weight.astype(dtype))
        value = np.asarray(sequence_logprob(jnp.asarray(logits), jnp.asarray(labels),
                                            jnp.asarray(mask), average=average))
        grad = np.asarray(jax.grad(fn)(jnp.asarray(logits)))
    assert value.shape == (4,) and value.dtype == np.dtype(dtype)
    assert value[1] == 0.0 and np.all(grad[1] == 0.0)

    t_logits = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    expected = torch_sequence_logprob(t_logits, labels, mask, average)
    (expected * torch.tensor(row_weight)).sum().backward()
    np.testing.assert_allclose(value, expected.detach().numpy(), rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(grad, t_logits.grad.numpy(), rtol=rtol, atol=1e-7)


def test_sequence_logprob_sum_and_mean_agree_with_token_nll(rng):
    logits, labels, mask = _sequence_case(rng)
    logits = jnp.asarray(logits, jnp.float32)
    total = sequence_logprob(logits, jnp.asarray(labels), jnp.asarray(mask))
    mean = sequence_logprob(logits, jnp.asarray(labels), jnp.asarray(mask), average=True)
    counts = mask.sum(axis=1)
    np.testing.assert_allclose(np.asarray(mean), np.asarray(total) / np.maximum(counts, 1),
                               rtol=1e-6)
    # Over the whole batch, the summed log-probs are minus the masked cross-entropy's sum.
    ce = masked_cross_entropy(logits, jnp.asarray(labels), jnp.asarray(mask))
    np.testing.assert_allclose(-float(jnp.sum(total)), float(ce) * counts.sum(), rtol=1e-5)
