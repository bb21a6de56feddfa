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

    def through_carry(carry):
        nxt = step(params, carry, ids, mask)
        return jnp.sum(step(params, nxt.carry, ids, mask).scores)

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
    np.testing.assert_array_equal(g_three["h_init"], 0)  # start states are never trained


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


def test_predict_halting_uses_only_the_halt_head(setup):
    params, ids, mask = setup
    always_stop = {**params, "halt_kernel": jnp.zeros((32, 1)), "halt_bias": jnp.ones((1,))}
    scores, steps = predict(TRM(CFG), always_stop, ids, mask)
    np.testing.assert_array_equal(steps, 1)
    first = step(params, initial(params, ids), ids, mask).scores
    np.testing.assert_allclose(scores, first, rtol=1e-6)
    _, steps_off = predict(TRM(CFG), always_stop, ids, mask, use_halting=False)
    np.testing.assert_array_equal(steps_off, CFG.n_sup)
    _, steps_mixed = predict(TRM(CFG), params, ids, mask)
    assert np.all((1 <= np.asarray(steps_mixed)) & (np.asarray(steps_mixed) <= CFG.n_sup))


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
        np.testing.assert_allclose(np.asarray(out.scores), t_scores.numpy(), atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.halt_logit), t_halt.numpy(), atol=1e-5)
        np.testing.assert_allclose(np.asarray(out.carry.z_h), t_carry[0].numpy(), atol=1e-5)
        carry = out.carry


def test_pretrained_embeddings_are_used():
    table = np.random.default_rng(1).normal(size=(CFG.vocab_size, CFG.embed_dim)).astype(np.float32)
    params = init_params(CFG, jax.random.PRNGKey(0), pretrained_embeddings=table)
    np.testing.assert_array_equal(params["embed_tokens"], table)
    with pytest.raises(ValueError, match="pretrained embeddings have shape"):
        init_params(CFG, jax.random.PRNGKey(0), pretrained_embeddings=table[:, :10])
