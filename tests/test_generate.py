"""Sampling filters, stop tokens and argument checks of aes_jax.eval.generate (tiny model)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_jax.eval import generate as gen
from aes_jax.interop import hf


def test_top_k_keeps_k_largest():
    logits = jnp.asarray([[0.1, 2.0, -1.0, 1.5, 0.3]])
    kept = np.asarray(gen.filter_logits(logits, top_k=2, top_p=1.0)) > -1e30
    np.testing.assert_array_equal(kept[0], [False, True, False, True, False])


@pytest.mark.parametrize("top_p, expected_kept", [(0.4, 1), (0.7, 2), (0.9, 3), (1.0, 4)])
def test_top_p_keeps_smallest_prefix_reaching_p(top_p, expected_kept):
    probs = np.array([[0.05, 0.5, 0.15, 0.3]])
    filtered = np.asarray(gen.filter_logits(jnp.log(jnp.asarray(probs)), top_k=0, top_p=top_p))
    kept = filtered > -1e30
    assert kept.sum() == expected_kept
    order = np.argsort(-probs[0])
    assert kept[0, order[:expected_kept]].all()


@pytest.fixture(scope="module")
def tiny(llama3_dir):
    path, _ = llama3_dir
    return hf.load_llama(path)


def test_top_k_one_sampling_equals_greedy(tiny, rng):
    cfg, params = tiny
    ids = rng.integers(3, cfg.vocab_size, size=(2, 6))
    greedy = gen.generate(cfg, params, ids, sampling=gen.SamplingConfig(max_new_tokens=8))
    top1 = gen.generate(cfg, params, ids, rng=jax.random.key(7), sampling=gen.SamplingConfig(
        max_new_tokens=8, temperature=0.7, top_k=1))
    np.testing.assert_array_equal(greedy.tokens, top1.tokens)


def test_stop_token_ends_row_and_pads_rest(tiny, rng):
    cfg, params = tiny
    ids = rng.integers(3, cfg.vocab_size, size=(1, 6))
    free = gen.generate(cfg, params, ids, sampling=gen.SamplingConfig(max_new_tokens=10))
    assert int(free.lengths[0]) == 10
    stop = int(free.tokens[0, 3])
    first = int(np.argmax(np.asarray(free.tokens[0]) == stop))
    out = gen.generate(cfg, params, ids, sampling=gen.SamplingConfig(
        max_new_tokens=10, stop_token_ids=(stop,), pad_token_id=0))
    assert int(out.lengths[0]) == first + 1
    np.testing.assert_array_equal(out.tokens[0, : first + 1], free.tokens[0, : first + 1])
    assert (np.asarray(out.tokens[0, first + 1:]) == 0).all()
    assert gen.strip_after_stop(out, (stop,))[0] == np.asarray(free.tokens[0, :first]).tolist()


def test_num_samples_from_one_prefill_equals_repeated_prompts(tiny, rng):
    """m samples per prompt from one prefill: the tokens, lengths and watched logits of
    generating for the prompts repeated m times (left padding and the penalty included)."""
    cfg, params = tiny
    ids = rng.integers(3, cfg.vocab_size, size=(2, 7))
    mask = np.ones_like(ids, bool)
    mask[1, :3] = False
    sampling = gen.SamplingConfig(max_new_tokens=9, temperature=1.0, top_k=20,
                                  repetition_penalty=1.3, stop_token_ids=(5, 9),
                                  watch_token_ids=(3, 4))
    key = jax.random.key(3)
    shared = gen.generate(cfg, params, ids, mask, key, sampling, num_samples=3)
    repeated = gen.generate(cfg, params, np.repeat(ids, 3, 0), np.repeat(mask, 3, 0), key,
                            sampling)
    assert shared.tokens.shape == (6, 9)
    np.testing.assert_array_equal(shared.tokens, repeated.tokens)
    np.testing.assert_array_equal(shared.lengths, repeated.lengths)
    np.testing.assert_allclose(shared.watched_logits, repeated.watched_logits, atol=1e-5)
    assert len({tuple(r) for r in np.asarray(shared.tokens[:3])}) > 1  # the 3 samples differ


def test_bad_arguments(tiny):
    cfg, params = tiny
    with pytest.raises(ValueError, match="left-padded"):
        gen.generate(cfg, params, np.ones((1, 4), np.int32), np.array([[1, 1, 1, 0]]))
    with pytest.raises(ValueError, match="num_samples"):
        gen.generate(cfg, params, np.ones((1, 4), np.int32), num_samples=0)
    with pytest.raises(ValueError, match="top_p"):
        gen.SamplingConfig(top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen.SamplingConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="repetition_penalty"):
        gen.SamplingConfig(repetition_penalty=0.0)


def test_repetition_penalty_equals_transformers_processor(rng):
    import torch
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = rng.normal(size=(3, 11)).astype(np.float32)
    ids = rng.integers(0, 11, size=(3, 5))
    expected = RepetitionPenaltyLogitsProcessor(1.3)(torch.as_tensor(ids),
                                                     torch.as_tensor(logits)).numpy()
    seen = gen.seen_tokens(jnp.asarray(ids), jnp.ones(ids.shape, bool), 11)
    got = gen.penalize_repetition(jnp.asarray(logits), seen, 1.3)
    # XLA may divide as a multiply by 1/penalty: one float32 ulp apart.
    np.testing.assert_allclose(np.asarray(got), expected, rtol=2e-7, atol=0)
    # Masked-out (padding) positions are not seen.
    mask = np.ones(ids.shape, bool)
    mask[:, :2] = False
    partial = np.asarray(gen.seen_tokens(jnp.asarray(ids), jnp.asarray(mask), 11))
    for row in range(3):
        assert set(np.flatnonzero(partial[row])) == set(ids[row, 2:])


def test_greedy_with_repetition_penalty_matches_transformers(tiny, llama3_dir, rng):
    import torch
    import transformers

    cfg, params = tiny
    ids = rng.integers(3, cfg.vocab_size, size=(2, 6))
    torch_model = transformers.LlamaForCausalLM.from_pretrained(llama3_dir[0]).eval()
    with torch.no_grad():
        expected = torch_model.generate(
            torch.as_tensor(ids), attention_mask=torch.ones(ids.shape, dtype=torch.long),
            do_sample=False, max_new_tokens=12, repetition_penalty=1.3, eos_token_id=None,
            pad_token_id=0)[:, ids.shape[1]:].numpy()
    assert expected.shape == (2, 12)
    out = gen.generate(cfg, params, ids, sampling=gen.SamplingConfig(
        max_new_tokens=12, repetition_penalty=1.3))
    np.testing.assert_array_equal(np.asarray(out.tokens), expected)
    plain = gen.generate(cfg, params, ids, sampling=gen.SamplingConfig(max_new_tokens=12))
    assert (np.asarray(plain.tokens) != expected).any()  # the penalty changed the text


def test_adapter_on_the_unmerged_base_generates_like_the_merged_model(tiny, rng):
    from aes_jax.models import lora as lora_lib
    from aes_jax.models.llama import init_lora

    cfg, params = tiny
    lora_cfg = lora_lib.LoraConfig(rank=4, alpha=8.0, targets=lora_lib.ALL_LINEAR_TARGETS)
    adapters = init_lora(cfg.replace(lora=lora_cfg), jax.random.key(0))
    adapters = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.2 * jax.random.normal(jax.random.key(1), x.shape)
        if path[-1].key == "b" else x, adapters)
    ids = rng.integers(3, cfg.vocab_size, size=(2, 6))
    sampling = gen.SamplingConfig(max_new_tokens=8)
    merged = gen.generate(cfg, lora_lib.merge(params, adapters, lora_cfg), ids, sampling=sampling)
    swapped = gen.generate(cfg.replace(lora=lora_cfg), params, ids, sampling=sampling,
                           lora=adapters)
    base = gen.generate(cfg, params, ids, sampling=sampling)
    np.testing.assert_array_equal(np.asarray(swapped.tokens), np.asarray(merged.tokens))
    assert (np.asarray(base.tokens) != np.asarray(merged.tokens)).any()
    with pytest.raises(ValueError, match="needs cfg.lora"):
        gen.generate(cfg, params, ids, sampling=sampling, lora=adapters)
