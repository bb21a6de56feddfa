"""losses/rl.py against a hand-computed example, a plain loop and torch versions of the
same formulas (written as TRL's PPO / GRPO trainers compute them)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from aes_jax.losses import rl

B, T = 3, 6


def _batch(seed=0):
    g = np.random.default_rng(seed)
    lengths = np.array([6, 3, 1])
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
    return dict(mask=mask, lengths=lengths,
                rewards=g.normal(size=(B, T)).astype(np.float32),
                values=g.normal(size=(B, T)).astype(np.float32),
                logprobs=-g.uniform(0.1, 3, size=(B, T)).astype(np.float32),
                ref=-g.uniform(0.1, 3, size=(B, T)).astype(np.float32),
                old=-g.uniform(0.1, 3, size=(B, T)).astype(np.float32),
                adv=g.normal(size=(B, T)).astype(np.float32),
                scores=g.normal(size=B).astype(np.float32))


def _t(x):
    return torch.tensor(np.asarray(x), dtype=torch.float64)


def test_gae_hand_example():
    # gamma 0.9, lam 0.8, one row of 3 real tokens and one of padding.
    rewards = np.array([[0.0, 0.0, 1.0, 5.0]], np.float32)
    values = np.array([[0.5, 0.4, 0.3, 9.0]], np.float32)
    mask = np.array([[1, 1, 1, 0]], np.float32)
    adv, ret = rl.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    d2 = 1.0 - 0.3  # V after the last real token is 0, not the padding's 9
    d1 = 0.0 + 0.9 * 0.3 - 0.4
    d0 = 0.0 + 0.9 * 0.4 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    np.testing.assert_allclose(adv, [[a0, a1, a2, 0.0]], atol=1e-6)
    np.testing.assert_allclose(ret, [[a0 + 0.5, a1 + 0.4, a2 + 0.3, 0.0]], atol=1e-6)


def test_gae_equals_a_plain_loop():
    b = _batch()
    gamma, lam = 0.97, 0.9
    adv, ret = rl.gae(b["rewards"], b["values"], b["mask"], gamma=gamma, lam=lam)
    want = np.zeros((B, T))
    for i in range(B):
        n = b["lengths"][i]
        last = 0.0
        for t in reversed(range(n)):
            next_v = b["values"][i, t + 1] if t + 1 < n else 0.0
            delta = b["rewards"][i, t] + gamma * next_v - b["values"][i, t]
            last = delta + gamma * lam * last
            want[i, t] = last
    np.testing.assert_allclose(adv, want, atol=1e-5)
    np.testing.assert_allclose(ret, (want + b["values"]) * b["mask"], atol=1e-5)


def test_kl_estimators_and_rewards_match_torch():
    b = _batch(1)
    lp, ref, mask = _t(b["logprobs"]), _t(b["ref"]), _t(b["mask"])
    logr = ref - lp
    want = {"k1": -logr, "k2": 0.5 * logr ** 2, "k3": logr.exp() - 1 - logr}
    for name, w in want.items():
        got = rl.kl_estimate(b["logprobs"], b["ref"], name)
        np.testing.assert_allclose(got, w.numpy(), atol=1e-5, err_msg=name)
    rewards, kl = rl.kl_penalized_rewards(b["scores"], b["logprobs"], b["ref"], b["mask"],
                                          kl_coef=0.05, estimator="k3")
    torch_rewards = -0.05 * want["k3"] * mask
    torch_rewards[torch.arange(B), torch.tensor(b["lengths"]) - 1] += _t(b["scores"])
    np.testing.assert_allclose(rewards, torch_rewards.numpy(), atol=1e-5)
    np.testing.assert_allclose(kl, (want["k3"] * mask).numpy(), atol=1e-5)
    assert np.all(np.asarray(rl.kl_estimate(b["logprobs"], b["ref"], "k3")) >= 0)
    with pytest.raises(ValueError, match="k4"):
        rl.kl_estimate(b["logprobs"], b["ref"], "k4")


def test_whiten_matches_torch():
    b = _batch(2)
    x, m = _t(b["adv"]), _t(b["mask"]).bool()
    mean = x[m].mean()
    var = x[m].var(unbiased=True)
    want = ((x - mean) * torch.rsqrt(var + 1e-8)) * m
    np.testing.assert_allclose(rl.masked_whiten(b["adv"], b["mask"]), want.numpy(), atol=1e-5)
    unshifted = rl.masked_whiten(b["adv"], b["mask"], shift_mean=False)
    np.testing.assert_allclose(unshifted, ((want + mean) * m).numpy(), atol=1e-5)


def test_clipped_losses_match_torch():
    b = _batch(3)
    lp, old, adv, m = _t(b["logprobs"]), _t(b["old"]), _t(b["adv"]), _t(b["mask"]).bool()
    ratio = torch.exp(lp - old)
    pg1, pg2 = -adv * ratio, -adv * torch.clamp(ratio, 0.8, 1.2)
    loss, metrics = rl.clipped_policy_loss(b["logprobs"], b["old"], b["adv"], b["mask"],
                                           clip_range=0.2)
    np.testing.assert_allclose(loss, torch.max(pg1, pg2)[m].mean().item(), rtol=1e-5)
    np.testing.assert_allclose(metrics["clip_fraction"], (pg2 > pg1)[m].double().mean().item(),
                               rtol=1e-6)
    np.testing.assert_allclose(metrics["approx_kl"], (0.5 * (lp - old) ** 2)[m].mean().item(),
                               rtol=1e-5)
    assert 0 < float(metrics["clip_fraction"]) < 1  # both branches exercised

    v, v_old, ret = _t(b["values"]), _t(b["rewards"]), _t(b["adv"])
    v_clip = torch.clamp(v, v_old - 0.2, v_old + 0.2)
    l1, l2 = (v - ret) ** 2, (v_clip - ret) ** 2
    vloss, vm = rl.clipped_value_loss(b["values"], b["rewards"], b["adv"], b["mask"],
                                      clip_range=0.2)
    np.testing.assert_allclose(vloss, 0.5 * torch.max(l1, l2)[m].mean().item(), rtol=1e-5)
    np.testing.assert_allclose(vm["value_clip_fraction"], (l2 > l1)[m].double().mean().item(),
                               rtol=1e-6)


def test_policy_loss_gradient_is_zero_where_the_clip_binds():
    # ratio e^0.5 > 1.2 with a positive advantage: the clipped branch wins, no gradient.
    grad = jax.grad(lambda lp: rl.clipped_policy_loss(
        lp, jnp.zeros((1, 2)), jnp.ones((1, 2)), jnp.ones((1, 2)), clip_range=0.2)[0])(
        jnp.array([[0.5, 0.0]]))
    np.testing.assert_allclose(grad, [[0.0, -0.5]], atol=1e-6)


def test_token_logprobs_entropy_and_group_advantages_match_torch():
    g = np.random.default_rng(4)
    logits = g.normal(size=(2, 3, 7)).astype(np.float32)
    tokens = g.integers(0, 7, size=(2, 3))
    logp = torch.log_softmax(_t(logits) / 0.7, -1)
    want = logp.gather(-1, torch.tensor(tokens)[..., None])[..., 0]
    np.testing.assert_allclose(rl.token_logprobs(logits, tokens, 0.7), want.numpy(), atol=1e-5)
    np.testing.assert_allclose(rl.entropy(logits, 0.7),
                               (-(logp.exp() * logp).sum(-1)).numpy(), atol=1e-5)
    scores = g.normal(size=8).astype(np.float32)
    groups = _t(scores).view(2, 4)
    want = (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-4)
    np.testing.assert_allclose(rl.group_advantages(scores, 4), want.view(-1).numpy(),
                               atol=1e-5)
    with pytest.raises(ValueError, match="groups of 3"):
        rl.group_advantages(scores, 3)


def test_explained_variance_and_adaptive_kl():
    b = _batch(5)
    v, r, m = _t(b["values"]), _t(b["rewards"]), _t(b["mask"]).bool()
    want = 1 - torch.var(r[m] - v[m], unbiased=False) / torch.var(r[m], unbiased=False)
    np.testing.assert_allclose(rl.explained_variance(b["values"], b["rewards"], b["mask"]),
                               want.item(), rtol=1e-5)
    np.testing.assert_allclose(rl.explained_variance(b["rewards"], b["rewards"], b["mask"]), 1.0)
    # KL 3x the target: the error is clipped at +20%, scaled by n_steps / horizon.
    assert rl.adaptive_kl_coef(0.1, 0.3, target=0.1, horizon=100, n_steps=10) == pytest.approx(
        0.1 * (1 + 0.2 * 0.1))
    assert rl.adaptive_kl_coef(0.1, 0.09, target=0.1, horizon=10, n_steps=10) == pytest.approx(
        0.1 * 0.9)
