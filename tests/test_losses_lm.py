"""Causal-LM cross-entropy vs torch's, value and gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from aes_jax.losses.lm import masked_cross_entropy


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
