"""Scanned/unrolled layers and remat off / on / a saving policy are the same function
(<= 1e-5)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_jax.interop import hf
from aes_jax.models.llama import Llama, init_params, logical_axes


def test_scan_and_remat_variants_agree(llama3_dir, rng):
    path, _ = llama3_dir
    cfg, params = hf.load_llama(path, scan_layers=True)
    ids = jnp.asarray(rng.integers(3, cfg.vocab_size, size=(2, 20)))
    mask = jnp.asarray(np.arange(20)[None, :] >= np.array([[0], [5]]))

    def loss(p, c):
        logits = Llama(c).apply({"params": p}, ids, attention_mask=mask)
        return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
            logits, jnp.roll(ids, -1, 1)[..., None], -1)[..., 0])

    reference = None
    variants = [*itertools.product([True, False], [False, True]),
                (True, "dots_with_no_batch_dims_saveable")]
    for scan, remat in variants:
        c, p = hf.set_scan_layers(cfg.replace(remat=remat), params, scan)
        logits = np.asarray(Llama(c).apply({"params": p}, ids, attention_mask=mask))
        grads = jax.grad(loss)(p, c)
        grad_embed = np.asarray(grads["embed_tokens"])
        if reference is None:
            reference = (logits, grad_embed)
            continue
        np.testing.assert_allclose(logits, reference[0], atol=1e-5, err_msg=f"{scan=} {remat=}")
        np.testing.assert_allclose(grad_embed, reference[1], atol=1e-5, err_msg=f"{scan=} {remat=}")


@pytest.mark.parametrize("scan_layers", [True, False])
def test_params_carry_logical_axes(llama3_dir, scan_layers):
    path, _ = llama3_dir
    cfg, params = hf.load_llama(path, scan_layers=scan_layers)
    axes = logical_axes(cfg)
    layer = axes["layers"] if scan_layers else axes["layers_0"]
    prefix = ("layers",) if scan_layers else ()
    assert tuple(layer["self_attn"]["q_proj"]["kernel"]) == prefix + ("embed", "heads", "head_dim")
    assert tuple(layer["self_attn"]["k_proj"]["kernel"]) == prefix + ("embed", "kv_heads", "head_dim")
    assert tuple(layer["mlp"]["down_proj"]["kernel"]) == prefix + ("mlp", "embed")
    assert tuple(axes["embed_tokens"]) == ("vocab", "embed")
    assert tuple(axes["lm_head"]) == ("embed", "vocab")
    # Same tree structure and shapes as the loaded params.
    shapes = jax.tree.map(lambda x: x.shape, init_params(cfg, jax.random.key(0)))
    assert shapes == jax.tree.map(lambda x: x.shape, params)


def test_bfloat16_compute_close_to_float32(llama3_dir, rng):
    path, _ = llama3_dir
    cfg, params = hf.load_llama(path)
    ids = jnp.asarray(rng.integers(3, cfg.vocab_size, size=(2, 16)))
    f32 = Llama(cfg).apply({"params": params}, ids)
    bf16 = Llama(cfg.replace(dtype="bfloat16")).apply({"params": params}, ids)
    assert bf16.dtype == jnp.float32  # logits are returned in float32 either way
    assert float(jnp.abs(f32 - bf16).max()) < 0.05
