"""Pair2Score's pure parts: ranking losses vs torch, pooling, exact antisymmetry of Δ,
the regression head vs torch.nn, the anchor scores' isotonic fit and grid snapping."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from aes_jax.eval import anchor_scoring
from aes_jax.losses.ranking import all_pairs, pair_accuracy, pair_logistic
from aes_jax.models import siamese


def test_pair_logistic_matches_torch_bce_with_logits(rng):
    delta = (rng.normal(size=12) * 4).astype(np.float32)
    y = rng.integers(0, 2, 12).astype(np.float32)
    weight = rng.uniform(size=12).astype(np.float32)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    np.testing.assert_allclose(float(pair_logistic(jnp.asarray(delta), jnp.asarray(y))),
                               bce(torch.tensor(delta), torch.tensor(y)).item(), rtol=1e-6)
    per_row = bce(torch.tensor(delta), torch.tensor(y), reduction="none")
    expected = (per_row * torch.tensor(weight)).sum() / weight.sum()
    np.testing.assert_allclose(float(pair_logistic(jnp.asarray(delta), jnp.asarray(y),
                                                   jnp.asarray(weight))),
                               expected.item(), rtol=1e-6)
    assert float(pair_accuracy(jnp.asarray([1.0, -2.0, 0.0]), jnp.asarray([1.0, 1.0, 0.0]))) \
        == pytest.approx(0.5)


@pytest.mark.parametrize("min_gap", [0.5, 1.0, 2.5])
def test_all_pairs_equals_the_explicit_torch_pair_loop(rng, min_gap):
    n = 9
    u = rng.normal(size=n).astype(np.float32) * 2
    s = (rng.integers(2, 11, n) / 2).astype(np.float32)  # ties included
    valid = rng.uniform(size=n) > 0.2
    terms = [torch.nn.functional.softplus(-(torch.tensor(u[i]) - torch.tensor(u[j])))
             for i, j in itertools.permutations(range(n), 2)
             if valid[i] and valid[j] and s[i] - s[j] >= min_gap]
    loss, count = jax.jit(all_pairs, static_argnums=3)(jnp.asarray(u), jnp.asarray(s),
                                                      jnp.asarray(valid), min_gap)
    assert int(count) == len(terms)
    expected = torch.stack(terms).mean().item() if terms else 0.0
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


def test_all_pairs_without_a_pair_is_zero_with_zero_gradient():
    u, s = jnp.asarray([0.3, -1.0, 2.0]), jnp.asarray([3.0, 3.0, 3.0])
    valid = jnp.asarray([True, True, True])
    loss, count = all_pairs(u, s, valid, 1.0)
    grad = jax.grad(lambda x: all_pairs(x, s, valid, 1.0)[0])(u)
    assert float(loss) == 0.0 and int(count) == 0 and np.all(np.asarray(grad) == 0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_pooling_is_the_mean_over_real_tokens_only(rng, side):
    hidden = rng.normal(size=(3, 6, 4)).astype(np.float32)
    lengths = [6, 3, 0]
    mask = np.zeros((3, 6), bool)
    for r, k in enumerate(lengths):
        if side == "right":
            mask[r, :k] = True
        else:
            mask[r, 6 - k:] = True
    pooled = np.asarray(siamese.masked_mean_pool(jnp.asarray(hidden), jnp.asarray(mask)))
    for r, k in enumerate(lengths):
        expected = hidden[r][mask[r]].mean(0) if k else np.zeros(4)
        np.testing.assert_allclose(pooled[r], expected, rtol=1e-6, atol=1e-7)
    garbage = np.where(mask[..., None], hidden, 1e6).astype(np.float32)  # padded values
    np.testing.assert_array_equal(
        np.asarray(siamese.masked_mean_pool(jnp.asarray(garbage), jnp.asarray(mask)))[:2],
        pooled[:2])


def test_delta_is_exactly_antisymmetric(rng):
    pooled_a, pooled_b = rng.normal(size=(2, 5, 8)).astype(np.float32)
    w = siamese.init_utility(jax.random.PRNGKey(0), 8)["w"]
    u_ab = siamese.utility(w, jnp.asarray(np.concatenate([pooled_a, pooled_b])))
    u_ba = siamese.utility(w, jnp.asarray(np.concatenate([pooled_b, pooled_a])))
    np.testing.assert_array_equal(np.asarray(siamese.pair_delta(u_ab)),
                                  -np.asarray(siamese.pair_delta(u_ba)))
    u_aa = siamese.utility(w, jnp.asarray(np.concatenate([pooled_a, pooled_a])))
    assert np.all(np.asarray(siamese.pair_delta(u_aa)) == 0)


def test_regression_head_matches_torch_sequential(rng):
    params = siamese.init_regression_head(jax.random.PRNGKey(1), 8, 4)
    x = rng.normal(size=(5, 8)).astype(np.float32)
    ours = siamese.RegressionHead(width=4).apply({"params": params}, jnp.asarray(x))
    ref = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        for layer, name in ((ref[0], "hidden"), (ref[2], "out")):
            layer.weight.copy_(torch.tensor(np.asarray(params[name]["kernel"]).T))
            layer.bias.copy_(torch.tensor(np.asarray(params[name]["bias"])))
        expected = ref(torch.tensor(x))[:, 0].numpy()
    np.testing.assert_allclose(np.asarray(ours), expected, rtol=1e-6, atol=1e-6)
    bound = 1 / np.sqrt(8)  # torch.nn.Linear's default init range
    assert np.abs(np.asarray(params["hidden"]["kernel"])).max() <= bound


def test_isotonic_anchor_fit_and_grid_snapping():
    u = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    fit = anchor_scoring.fit_isotonic(u, [1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(anchor_scoring.predict(fit, [-5.0, -1.0, 0.5, 9.0]),
                               [1.0, 2.0, 3.5, 5.0])
    noisy = anchor_scoring.fit_isotonic(u, [2.0, 1.0, 3.0, 5.0, 4.0])
    assert np.all(np.diff(anchor_scoring.predict(noisy, np.linspace(-3, 3, 20))) >= 0)
    x = np.array([1.25, 4.74, 5.3, 0.2, 3.0])
    np.testing.assert_allclose(anchor_scoring.snap(x), [1.5, 4.5, 5.0, 1.0, 3.0])
    np.testing.assert_allclose(anchor_scoring.snap(x, binning="floor"), [1.0, 4.5, 5.0, 1.0, 3.0])
