"""The blockwise loss equals the full-logits one (values and gradients, blocks that do
not divide the token count, bf16 states), and the model part gives the same training
loss and gradients with or without it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_jax.losses import lm
from aes_jax.losses.blockwise import blockwise_token_nll
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec


TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8)


def _inputs(rng, b=3, t=7, d=16, v=50):
    hidden = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(v, d)) * 0.3, jnp.float32)
    labels = jnp.asarray(rng.integers(0, v, size=(b, t)))
    return hidden, head, labels


@pytest.mark.parametrize("block", [1, 5, 21, 4096])
def test_values_and_gradients_match_full_logits(rng, block):
    hidden, head, labels = _inputs(rng)
    weights = jnp.asarray(rng.uniform(size=labels.shape), jnp.float32)

    def full(h, w):
        return jnp.sum(lm.token_nll(jnp.einsum("btd,vd->btv", h, w), labels) * weights)

    def blockwise(h, w):
        return jnp.sum(blockwise_token_nll(h, w, labels, block) * weights)

    want = jax.value_and_grad(full, argnums=(0, 1))(hidden, head)
    got = jax.value_and_grad(blockwise, argnums=(0, 1))(hidden, head)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_bfloat16_states_keep_float32_logits(rng):
    hidden, head, labels = _inputs(rng)
    h16, w16 = hidden.astype(jnp.bfloat16), head.astype(jnp.bfloat16)
    exact = jnp.einsum("btd,vd->btv", h16.astype(jnp.float32), w16.astype(jnp.float32))
    got = blockwise_token_nll(h16, head, labels, 4)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, lm.token_nll(exact, labels), rtol=1e-5, atol=1e-5)
    # the model's head returns bf16 logits: within their rounding (2^-8 relative)
    model_like = jnp.einsum("btd,vd->btv", h16, w16).astype(jnp.float32)
    np.testing.assert_allclose(got, lm.token_nll(model_like, labels), rtol=2e-2)


def test_model_part_loss_and_gradients_with_and_without_blocks(rng):
    ids = jnp.asarray(rng.integers(3, 200, size=(2, 9)))
    targets = jnp.roll(ids, -1, axis=1)
    mask = jnp.asarray(np.arange(9)[None, :] < np.array([[8], [5]]))
    results = []
    for block in (0, 4):
        part = CausalLM(CausalLMSpec(model="tiny", tiny_model=TINY, loss_block_tokens=block,
                                     lora={"rank": 4}))
        trainable, frozen = part.init(jax.random.key(0))

        def loss(tr):
            nll = part.token_nll(tr, frozen, ids, lm.masked_labels(targets, mask),
                                 attention_mask=mask)
            return jnp.sum(nll * mask) / jnp.sum(mask)

        value, grads = jax.value_and_grad(loss)(trainable)
        results.append((value, jax.tree.leaves(grads)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-6)
    for g, w in zip(results[1][1], results[0][1]):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-7)
