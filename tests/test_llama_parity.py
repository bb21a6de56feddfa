"""JAX logits vs transformers logits on tiny random checkpoints (float32, atol 1e-4)."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from aes_jax.interop import hf
from aes_jax.interop.torch_ref.llama import hf_logits
from aes_jax.models.llama import KVCache, Llama

ATOL = 1e-4


def padded_batch(rng, vocab: int, length: int):
    """Row 0 left-padded, row 1 right-padded, row 2 unpadded; HF-style position ids."""
    ids = rng.integers(3, vocab, size=(3, length))
    mask = np.ones((3, length), np.int64)
    mask[0, : length // 4] = 0
    mask[1, length - length // 3:] = 0
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    return ids, mask, positions


@pytest.mark.parametrize("fixture", ["llama3_dir", "tied_dir"])
@pytest.mark.parametrize("length", [12, 80])  # 80 > original_max_position_embeddings=16
def test_logits_match_transformers(request, fixture, length, rng):
    path, torch_model = request.getfixturevalue(fixture)
    cfg, params = hf.load_llama(path)
    ids, mask, positions = padded_batch(rng, cfg.vocab_size, length)
    expected = hf_logits(torch_model, ids, mask, positions)
    # positions are derived from the mask by default: no need to pass them.
    got = np.asarray(Llama(cfg).apply({"params": params}, jnp.asarray(ids),
                                      attention_mask=jnp.asarray(mask)))
    valid = mask.astype(bool)
    assert np.abs(got - expected)[valid].max() <= ATOL


def test_llama3_scaling_matters(llama3_dir, rng):
    """Guards the test above: dropping the llama3 scaling must break parity at length 80."""
    path, torch_model = llama3_dir
    cfg, params = hf.load_llama(path)
    assert cfg.rope_scaling is not None and cfg.rope_scaling.rope_type == "llama3"
    ids = rng.integers(3, cfg.vocab_size, size=(1, 80))
    expected = hf_logits(torch_model, ids)
    unscaled = Llama(cfg.replace(rope_scaling=None)).apply({"params": params}, jnp.asarray(ids))
    assert np.abs(np.asarray(unscaled) - expected).max() > 10 * ATOL


def test_hidden_states_match_transformers(llama3_dir, rng):
    path, torch_model = llama3_dir
    cfg, params = hf.load_llama(path)
    ids = rng.integers(3, cfg.vocab_size, size=(2, 10))
    with torch.no_grad():
        expected = torch_model(torch.as_tensor(ids), output_hidden_states=True).hidden_states[-1]
    out = Llama(cfg).apply({"params": params}, jnp.asarray(ids), return_hidden=True)
    assert out.hidden.shape == (2, 10, cfg.hidden_size)
    np.testing.assert_allclose(np.asarray(out.hidden), expected.numpy(), atol=ATOL)
    no_logits = Llama(cfg).apply({"params": params}, jnp.asarray(ids), return_hidden=True,
                                 compute_logits=False)
    assert no_logits.logits is None
    np.testing.assert_array_equal(np.asarray(no_logits.hidden), np.asarray(out.hidden))


@pytest.mark.parametrize("scan_layers", [True, False])
def test_kv_cache_decoding_matches_full_forward(llama3_dir, rng, scan_layers):
    """Prefill a left-padded prompt, then feed tokens one at a time through the cache."""
    path, _ = llama3_dir
    cfg, params = hf.load_llama(path, scan_layers=scan_layers)
    model = Llama(cfg)
    ids, mask, _ = padded_batch(rng, cfg.vocab_size, 24)
    mask[1, :] = 1  # right padding has no meaning while decoding
    mask[2, :3] = 0
    full = np.asarray(model.apply({"params": params}, jnp.asarray(ids),
                                  attention_mask=jnp.asarray(mask)))
    prompt = 10
    cache = KVCache.init(cfg, batch=3, max_len=24)
    out = model.apply({"params": params}, jnp.asarray(ids[:, :prompt]),
                      attention_mask=jnp.asarray(mask[:, :prompt]), cache=cache)
    steps = [np.asarray(out.logits)]
    cache = out.cache
    for t in range(prompt, 24):
        out = model.apply({"params": params}, jnp.asarray(ids[:, t:t + 1]),
                          attention_mask=jnp.asarray(mask[:, t:t + 1]), cache=cache)
        steps.append(np.asarray(out.logits))
        cache = out.cache
    incremental = np.concatenate(steps, axis=1)
    valid = mask.astype(bool)
    np.testing.assert_allclose(incremental[valid], full[valid], atol=1e-5)
    assert int(cache.index) == 24
