"""Tiny Recursive Model: shapes, where gradients flow, halting, and parity with torch."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from aes_jax.interop.torch_ref.trm import TorchTRM, load_jax_params
from aes_jax.models.trm import TRM, Carry, TRMConfig, init_params, predict

CFG = TRMConfig(vocab_size=120, embed_dim=24, hidden_size=32, num_heads=4, intermediate_size=64,
                h_cycles=3, l_cycles=2, n_sup=4, num_outputs=2, max_len=64)


@pytest.fixture(scope="module")
def setup():
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(0, CFG.vocab_size, (3, 12)))
    mask = jnp.asarray(np.arange(12)[None] < np.array([[12], [7], [3]]))
    params = init_params(CFG, jax.random.PRNGKey(0))
    # Random, non-trivial heads so that halting and scores depend on the input.
    params = {**params, "halt_kernel": jnp.asarray(rng.normal(size=(32, 1)), jnp.float32),
              "halt_bias": jnp.zeros((1,))}
    return params, ids, mask


def step(params, carry, ids, mask, cfg=CFG):
    return TRM(cfg).apply({"params": params}, carry, ids, mask)


def initial(params, ids, cfg=CFG):
    return TRM(cfg).apply({"params": params}, ids, method=TRM.initial_carry)


def test_shapes_and_detached_carry(setup):
    params, ids, mask = setup
    out = step(params, initial(params, ids), ids, mask)
    assert out.scores.shape == (3, 2) and out.halt_logit.shape == (3,)
    assert out.carry.z_h.shape == out.carry.z_l.shape == (3, 12, 32)

    # The carry a step returns holds no gradient path to the weights ...
    def carry_sum(p):
        c = step(p, initial(p, ids), ids, mask).carry
        return jnp.sum(c.z_h) + jnp.sum(c.z_l)

    for g in jax.tree.leaves(jax.grad(carry_sum)(params)):
        assert float(jnp.abs(g).max()) == 0.0
    # ... while the same quantity without the detach would have one (the test can fail).
    assert float(jnp.abs(jax.grad(lambda p: jnp.sum(step(p, out.carry, ids, mask).scores))(
        params)["net"]["block_0"]["q_proj"]["kernel"]).max()) > 0

    # ... and the next step's outputs have no gradient back into the carry it was given.
    def through_carry(carry):
        return jnp.sum(step(params, carry, ids, mask).scores)

    grads = jax.grad(through_carry)(out.carry)
    assert float(jnp.abs(grads.z_h).max()) == 0.0 and float(jnp.abs(grads.z_l).max()) == 0.0


def test_gradient_only_through_last_h_cycle(setup):
    """T=3 from carry c has exactly the param gradient of T=1 from the state that the
    first two cycles reach: the earlier cycles contribute nothing."""
    params, ids, mask = setup
    carry = initial(params, ids)
    two_cycles = dataclasses.replace(CFG, h_cycles=2)
    one_cycle = dataclasses.replace(CFG, h_cycles=1)
    # State after two H-cycles = the carry a T=2 step returns.
    after_two = step(params, carry, ids, mask, two_cycles).carry

    def loss(p, c, cfg):
        return jnp.sum(step(p, c, ids, mask, cfg).scores ** 2)

    g_three = jax.grad(loss)(params, carry, CFG)
    g_last = jax.grad(loss)(params, after_two, one_cycle)
    for a, b in zip(jax.tree.leaves(g_three), jax.tree.leaves(g_last)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert float(jnp.abs(g_three["net"]["block_0"]["q_proj"]["kernel"]).max()) > 0
    assert "h_init" not in params and "l_init" not in params  # constants, never trained


def test_init_matches_the_reference_statistics():
    """Linears: truncated normal with std 1/sqrt(fan_in) AFTER truncation (the reference's
    trunc_normal_init_); start states std 1; injection RMS 1 at any hidden size."""
    from aes_jax.models.trm import _lecun, embedding_scale, start_states

    kernel = np.asarray(_lecun(256)(jax.random.PRNGKey(0), (256, 2048)))
    assert abs(kernel.std() * np.sqrt(256) - 1.0) < 0.01, kernel.std() * np.sqrt(256)
    assert np.abs(kernel).max() <= 2.0 / np.sqrt(256) / 0.8796 + 1e-6
    big = dataclasses.replace(CFG, hidden_size=4096)
    h_init, l_init = start_states(big)
    assert abs(h_init.std() - 1.0) < 0.03 and abs(l_init.std() - 1.0) < 0.03
    assert not np.array_equal(h_init, l_init)
    np.testing.assert_array_equal(start_states(big)[0], h_init)  # a function of the config
    # A pretrained-like table (RMS 0.05) projected to hidden 64 and 768: RMS ~1 for both.
    table = np.random.default_rng(0).normal(0, 0.05, (CFG.vocab_size, 48)).astype(np.float32)
    ids = jnp.arange(CFG.vocab_size)[None]
    for hidden in (64, 768):
        cfg = dataclasses.replace(CFG, embed_dim=48, hidden_size=hidden, num_heads=4,
                                  embed_scale=embedding_scale(table))
        p = init_params(cfg, jax.random.PRNGKey(1), pretrained_embeddings=table)
        x = TRM(cfg).apply({"params": p}, ids, method=TRM.embed)
        rms = float(jnp.sqrt(jnp.mean(x ** 2)))
        assert 0.9 < rms < 1.1, (hidden, rms)
    # The random table with the default scale gives the reference's RMS 1 as well.
    p = init_params(CFG, jax.random.PRNGKey(2))
    x = TRM(CFG).apply({"params": p}, ids, method=TRM.embed)
    assert 0.85 < float(jnp.sqrt(jnp.mean(x ** 2))) < 1.15


def test_reset_carry_only_on_halted_rows(setup):
    params, ids, mask = setup
    carry = step(params, initial(params, ids), ids, mask).carry
    reset = jnp.asarray([True, False, True])
    new = TRM(CFG).apply({"params": params}, carry, reset, method=TRM.reset_carry)
    fresh = initial(params, ids)
    for i, r in enumerate(np.asarray(reset)):
        expected = fresh if r else carry
        np.testing.assert_array_equal(new.z_h[i], expected.z_h[i])
        np.testing.assert_array_equal(new.z_l[i], expected.z_l[i])


def test_predict_runs_every_step_or_halts_where_the_head_says(setup):
    params, ids, mask = setup
    # By hand: step the model n_sup times, record each step's scores and halt logits.
    carry, scores, logits = initial(params, ids), [], []
    for _ in range(CFG.n_sup):
        out = step(params, carry, ids, mask)
        scores.append(np.asarray(out.scores))
        logits.append(np.asarray(out.halt_logit))
        carry = out.carry
    logits = np.stack(logits, 1)  # [B, n_sup]
    # first step with a positive logit (1-based), else n_sup
    expected_steps = np.where((logits > 0).any(1), (logits > 0).argmax(1) + 1, CFG.n_sup)
    assert len(set(expected_steps.tolist())) > 1, expected_steps  # the rows differ
    pred, steps = predict(TRM(CFG), params, ids, mask, use_halting=True)
    np.testing.assert_array_equal(steps, expected_steps)
    for i, s in enumerate(expected_steps):
        np.testing.assert_allclose(pred[i], scores[s - 1][i], rtol=1e-6)
    # the default runs every step, as the reference evaluates
    pred_all, steps_all = predict(TRM(CFG), params, ids, mask)
    np.testing.assert_array_equal(steps_all, CFG.n_sup)
    np.testing.assert_allclose(pred_all, scores[-1], rtol=1e-6)


def test_training_halt_follows_the_reference_rule():
    from aes_jax.models.trm import training_halt

    key = jax.random.PRNGKey(0)
    logit = jnp.asarray([1.0, -1.0, 1.0, -1.0])
    steps = jnp.asarray([1, 1, 4, 4])
    np.testing.assert_array_equal(training_halt(logit, steps, 4, True, 0.0, key),
                                  [True, False, True, True])
    np.testing.assert_array_equal(training_halt(logit, steps, 4, False, 0.0, key),
                                  [False, False, True, True])
    # Exploration: with probability p a row must run a minimum of 2..n_sup steps, so after
    # step 1 a fraction p of "halt" rows goes on; at n_sup every row stops.
    n = 20000
    halted = training_halt(jnp.ones(n), jnp.ones(n, jnp.int32), 4, True, 0.1, key)
    assert abs(1.0 - float(jnp.mean(halted)) - 0.1) < 0.01
    # after step 2, those that drew a minimum of 3 or 4 (2/3 of the explorers) go on
    halted = training_halt(jnp.ones(n), jnp.full(n, 2, jnp.int32), 4, True, 0.1, key)
    assert abs(1.0 - float(jnp.mean(halted)) - 0.1 * 2 / 3) < 0.01
    assert bool(jnp.all(training_halt(-jnp.ones(n), jnp.full(n, 4, jnp.int32), 4, True, 1.0,
                                      key)))


def test_padding_does_not_change_real_rows(setup):
    params, ids, mask = setup
    out = step(params, initial(params, ids), ids, mask)
    short = step(params, initial(params, ids[2:, :3]), ids[2:, :3], mask[2:, :3])
    np.testing.assert_allclose(out.scores[2], short.scores[0], rtol=1e-5, atol=1e-6)


def test_matches_torch_reference_over_supervision_steps(setup):
    params, ids, mask = setup
    model = load_jax_params(TorchTRM(CFG), jax.device_get(params)).eval()
    t_ids, t_mask = torch.as_tensor(np.array(ids)), torch.as_tensor(np.array(mask))
    carry, t_carry = initial(params, ids), model.initial_carry(t_ids)
    for _ in range(3):
        out = step(params, carry, ids, mask)
        with torch.no_grad():
            t_carry, t_scores, t_halt = model(t_carry, t_ids, t_mask)
        # float32 through 3 x (3 x 3) network runs on RMS-1 states
        tol = dict(rtol=5e-5, atol=3e-5)
        np.testing.assert_allclose(np.asarray(out.scores), t_scores.numpy(), **tol)
        np.testing.assert_allclose(np.asarray(out.halt_logit), t_halt.numpy(), **tol)
        np.testing.assert_allclose(np.asarray(out.carry.z_h), t_carry[0].numpy(), **tol)
        carry = out.carry


def test_pretrained_embeddings_are_used():
    table = np.random.default_rng(1).normal(size=(CFG.vocab_size, CFG.embed_dim)).astype(np.float32)
    params = init_params(CFG, jax.random.PRNGKey(0), pretrained_embeddings=table)
    np.testing.assert_array_equal(params["embed_tokens"], table)
    with pytest.raises(ValueError, match="pretrained embeddings have shape"):
        init_params(CFG, jax.random.PRNGKey(0), pretrained_embeddings=table[:, :10])
