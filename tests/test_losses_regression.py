"""Regression/halting losses vs torch formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from aes_jax.losses.regression import halting_bce, weighted_mse


def test_weighted_mse_matches_torch(rng):
    pred, target = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    weight = np.array([1, 1, 0, 1, 0, 1], np.float32)
    ours = weighted_mse(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(weight))
    keep = weight > 0
    expected = torch.nn.functional.mse_loss(torch.tensor(pred[keep]), torch.tensor(target[keep]))
    np.testing.assert_allclose(float(ours), expected.item(), rtol=1e-6)


def test_halting_bce_matches_torch_and_its_gradient(rng):
    logits = rng.normal(size=(5,)).astype(np.float32) * 3
    correct = np.array([1, 0, 1, 1, 0], np.float32)
    weight = np.array([1, 1, 1, 0, 1], np.float32)
    value, grad = jax.value_and_grad(halting_bce)(jnp.asarray(logits), jnp.asarray(correct),
                                                  jnp.asarray(weight))
    t = torch.tensor(logits, requires_grad=True)
    expected = (torch.nn.functional.binary_cross_entropy_with_logits(
        t, torch.tensor(correct), reduction="none") * torch.tensor(weight)).sum() / weight.sum()
    expected.backward()
    np.testing.assert_allclose(float(value), expected.item(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(grad), t.grad.numpy(), rtol=1e-5, atol=1e-7)


def test_weighted_mse_mask_skips_missing_outputs(rng):
    pred, target = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    mask = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], bool)
    weight = np.ones(4, np.float32)
    ours = weighted_mse(jnp.asarray(pred), jnp.asarray(target), jnp.asarray(weight),
                        jnp.asarray(mask))
    per_row = [np.mean((pred[i][mask[i]] - target[i][mask[i]]) ** 2) for i in range(4)]
    np.testing.assert_allclose(float(ours), np.mean(per_row), rtol=1e-6)
