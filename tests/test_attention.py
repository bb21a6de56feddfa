"""The attention implementations agree with the einsum reference (values and gradients)
on every query that may attend to something, with GQA, left and right padding, tile sizes
that do not divide the lengths, and a KV cache; and the model gives the same logits with
each, so the choice is a speed/memory switch only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_jax.eval import generate as gen
from aes_jax.interop import hf
from aes_jax.models import attention as attn
from aes_jax.models.llama import Llama

FAST = ["xla", "chunked"]
# "static": the chunked path with slots known at trace time (tiles unrolled, as in
# training and TRM); "chunked" alone gets traced slots (the scan over tiles).
SLOTS = ["traced", "static"]


def _mask(valid, slots, how: str = "traced") -> attn.CausalMask:
    if how == "static":
        return attn.CausalMask.known(jnp.asarray(valid), np.asarray(slots))
    return attn.CausalMask(jnp.asarray(valid), jnp.asarray(slots))


def _qkv(rng, b=3, t=13, s=13, h=6, kv=2, d=8):
    q, k, v = (jnp.asarray(rng.normal(size=shape), jnp.float32)
               for shape in ((b, t, h, d), (b, s, kv, d), (b, s, kv, d)))
    return q, k, v


def _padded_mask(b, t, how: str = "traced"):
    # row 0 full, row 1 right-padded by 4, row 2 left-padded by 5
    pos = np.arange(t)[None, :]
    valid = np.stack([pos[0] >= 0, pos[0] < t - 4, pos[0] >= 5])
    return _mask(valid, np.arange(t), how)


def _attended(mask):
    """[B, T] rows that may attend to at least one key."""
    return np.asarray(mask.dense().any(-1))


@pytest.mark.parametrize("slots", SLOTS)
@pytest.mark.parametrize("implementation", FAST)
def test_matches_einsum_values_and_gradients(rng, implementation, slots):
    q, k, v = _qkv(rng)
    mask = _padded_mask(3, 13, slots)
    live = _attended(mask)[:, :, None, None]
    weights = jnp.asarray(rng.normal(size=q.shape), jnp.float32) * live

    def run(impl):
        def loss(q, k, v):
            out = attn.attention(q, k, v, mask, impl, block_size=4)
            return jnp.sum(out * weights), out
        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v)
        return np.asarray(out) * live, [np.asarray(g) for g in grads]

    want_out, want_grads = run("einsum")
    got_out, got_grads = run(implementation)
    np.testing.assert_allclose(got_out, want_out, atol=2e-6, rtol=1e-5)
    for got, want, name in zip(got_grads, want_grads, "qkv"):
        np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5, err_msg=f"d{name}")
    if implementation == "chunked":  # queries that see nothing (padding) come out as zeros
        dead = ~_attended(mask)
        assert dead.sum() == 5  # row 2 left-padded by 5
        out = attn.attention(q, k, v, mask, implementation, block_size=4)
        np.testing.assert_array_equal(np.asarray(out)[dead], 0.0)


def test_chunked_with_a_cache_offset(rng):
    # Decoding-style call: 3 new queries at slots 7..9 of a 16-slot cache, some slots empty.
    q, k, v = _qkv(rng, t=3, s=16)
    valid = np.ones((3, 16), bool)
    valid[:, 10:] = False
    valid[2, :4] = False
    mask = attn.CausalMask(jnp.asarray(valid), 7 + jnp.arange(3))
    want = attn.attention(q, k, v, mask, "einsum")
    for block in (2, 5, 16):
        got = attn.attention(q, k, v, mask, "chunked", block_size=block)
        np.testing.assert_allclose(got, want, atol=2e-6, rtol=1e-5, err_msg=f"{block=}")


def test_resolve_and_unknown_names():
    assert attn.resolve("auto", jnp.float32, "cpu") == "xla"  # one tile of queries
    assert attn.resolve("auto", jnp.float32, "cpu", query_len=1024, block_size=256) == "chunked"
    assert attn.resolve("auto", jnp.float32, "cpu", query_len=256, block_size=256) == "chunked"
    assert attn.resolve("auto", jnp.float32, "cpu", query_len=255, block_size=256) == "xla"
    assert attn.resolve("auto", jnp.bfloat16, "gpu") == "cudnn"
    assert attn.resolve("auto", jnp.float32, "gpu") == "xla"
    assert attn.resolve("chunked", jnp.bfloat16, "gpu") == "chunked"
    with pytest.raises(ValueError, match="flash"):
        attn.resolve("flash", jnp.float32)


def test_model_logits_and_greedy_tokens_agree(llama3_dir, rng):
    path, _ = llama3_dir
    cfg, params = hf.load_llama(path)
    ids = jnp.asarray(rng.integers(3, cfg.vocab_size, size=(2, 12)))
    mask = jnp.asarray(np.arange(12)[None, :] >= np.array([[0], [4]]))
    results = {}
    for impl in ["einsum", *FAST]:
        c = cfg.replace(attention=impl, attention_block=5)
        logits = Llama(c).apply({"params": params}, ids, attention_mask=mask)
        out = gen.generate(c, params, ids, mask, rng=jax.random.key(0),
                           sampling=gen.SamplingConfig(max_new_tokens=6, temperature=0.0))
        results[impl] = (np.asarray(logits) * np.asarray(mask)[..., None], np.asarray(out.tokens))
    for impl in FAST:
        np.testing.assert_allclose(results[impl][0], results["einsum"][0], atol=2e-5,
                                   err_msg=impl)
        np.testing.assert_array_equal(results[impl][1], results["einsum"][1], err_msg=impl)


def test_cudnn_falls_back_to_xla_where_refused(rng):
    # No GPU here: cuDNN refuses at trace time, and the call still gives XLA's answer.
    q, k, v = _qkv(rng)
    mask = _padded_mask(3, 13)
    live = _attended(mask)[:, :, None, None]
    got = attn.attention(q, k, v, mask, "cudnn")
    np.testing.assert_allclose(np.asarray(got) * live,
                               np.asarray(attn.attention(q, k, v, mask, "einsum")) * live,
                               atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("slots", SLOTS)
@pytest.mark.parametrize("implementation", ["einsum", *FAST])
def test_bidirectional_padding_mask_and_nan_propagation(rng, implementation, slots):
    """TRM's mask (every real key visible to every query, CausalMask with query_slot =
    S - 1) matches the einsum reference; a NaN query stays NaN (divergence shows) and
    does not leak into other rows."""
    q, k, v = _qkv(rng, t=12, s=12)
    valid = jnp.asarray(np.arange(12)[None, :] < np.array([[12], [7], [3]]))
    mask = _mask(valid, np.full(12, 11), slots)
    want = attn.attention(q, k, v, mask, "einsum")
    got = attn.attention(q, k, v, mask, implementation, 4)
    np.testing.assert_allclose(got, want, atol=1e-5)
    out = np.asarray(attn.attention(q.at[1, 2].set(jnp.nan), k, v, mask, implementation, 4))
    assert np.isnan(out[1, 2]).all() and not np.isnan(np.delete(out, 1, 0)).any()


def test_static_plan_tile_kinds_and_cap():
    """Causal slots 0..7 in 4x4 tiles: the tile above the diagonal is skipped (0), the
    diagonal ones need the full mask (1), the one below sees every key (2). Past the
    unroll cap the plan gives up (None) and the traced scan path runs instead."""
    from aes_jax.models import flash_attention as fa
    assert fa.static_plan(np.arange(8), 8, 4, 4) == ((1, 0), (2, 1))
    # Bidirectional (TRM): every tile sees all its keys.
    assert fa.static_plan(np.full(8, 7), 8, 4, 4) == ((2, 2), (2, 2))
    # Padded query rows (slot -1) see nothing.
    assert fa.static_plan(np.array([0, 1, -1, -1]), 4, 2, 2) == ((1, 0), (0, 0))
    cap = fa.MAX_UNROLLED_TILES
    assert fa.static_plan(np.full(cap, cap - 1), cap, cap, 1) is not None
    assert fa.static_plan(np.full(cap + 1, cap), cap + 1, cap + 1, 1) is None
