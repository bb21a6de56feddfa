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


def test_masked_mean_floors():
    from aes_jax.losses.reduce import COUNT_FLOOR, WEIGHT_FLOOR, masked_mean

    values = jnp.asarray([[2.0, 4.0, 8.0], [1.0, 3.0, 5.0]])
    mask = jnp.asarray([[True, False, True], [False, False, False]])
    # Empty rows / masks are 0 under either floor, never NaN.
    for floor in (COUNT_FLOOR, WEIGHT_FLOOR):
        np.testing.assert_array_equal(masked_mean(values, mask, floor=floor, axis=-1), [5.0, 0.0])
        assert float(masked_mean(values, jnp.zeros_like(mask), floor=floor)) == 0.0
    assert float(masked_mean(values, mask)) == 5.0
    # Fractional weights summing below 1: only the weight floor keeps a weighted average.
    w = jnp.asarray([0.25, 0.25])
    row = jnp.asarray([2.0, 6.0])
    assert float(masked_mean(row, w, floor=WEIGHT_FLOOR)) == 4.0
    assert float(masked_mean(row, w, floor=COUNT_FLOOR)) == 2.0
