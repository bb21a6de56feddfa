"""The real SmolLM2-135M-Instruct: JAX vs transformers logits and greedy generation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_jax.eval import generate as gen
from aes_jax.interop import hf
from aes_jax.interop.torch_ref import llama as torch_llama
from aes_jax.models.llama import Llama
from launch.parity import chat_ids

PROMPTS = [
    "Score this essay from 1 to 6: 'Computers help students because they find facts fast.'",
    "Give one sentence of feedback on essay organisation.",
]


@pytest.fixture(scope="module")
def smol(smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir, local_files_only=True)
    cfg, params = hf.load_llama(smollm2_dir)
    torch_model = torch_llama.load_hf_llama(smollm2_dir, device="cpu")
    return tokenizer, cfg, params, torch_model


def test_config_is_smollm2(smol):
    _, cfg, _, _ = smol
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads,
            cfg.num_key_value_heads, cfg.vocab_size) == (30, 576, 9, 3, 49152)
    assert cfg.tie_word_embeddings and cfg.rope_theta == 100000.0


def test_logits_on_chat_prompt(smol):
    tokenizer, cfg, params, torch_model = smol
    ids = chat_ids(tokenizer, PROMPTS[0])
    assert ids.shape[1] > 20
    jax_logits = np.asarray(Llama(cfg).apply({"params": params}, jnp.asarray(ids)))
    report = torch_llama.compare_logits(torch_llama.hf_logits(torch_model, ids), jax_logits)
    assert report["max_abs_diff"] <= 1e-3, report
    assert report["top1_agreement"] == 1.0, report
    assert report["max_kl"] < 1e-8, report


def test_greedy_generation_matches_transformers(smol):
    import torch

    tokenizer, cfg, params, torch_model = smol
    ids = chat_ids(tokenizer, PROMPTS[0])
    with torch.no_grad():
        expected = torch_model.generate(torch.as_tensor(ids), attention_mask=torch.ones_like(
            torch.as_tensor(ids)), do_sample=False, max_new_tokens=32)[0, ids.shape[1]:].tolist()
    sampling = gen.SamplingConfig(max_new_tokens=32, stop_token_ids=cfg.stop_token_ids,
                                  pad_token_id=cfg.pad_token_id)
    out = gen.generate(cfg, params, ids, sampling=sampling)
    got = np.asarray(out.tokens[0, : int(out.lengths[0])]).tolist()
    assert len(expected) >= 16  # a real answer, not an immediate stop
    assert got == expected, (tokenizer.decode(got), tokenizer.decode(expected))


def test_left_padded_batch_generates_like_single_prompts(smol):
    tokenizer, cfg, params, _ = smol
    singles = [chat_ids(tokenizer, p)[0].tolist() for p in PROMPTS]
    sampling = gen.SamplingConfig(max_new_tokens=16, stop_token_ids=cfg.stop_token_ids,
                                  pad_token_id=cfg.pad_token_id)
    ids, mask = gen.left_pad(singles, cfg.pad_token_id)
    assert not mask.all()
    batched = gen.strip_after_stop(gen.generate(cfg, params, ids, mask, sampling=sampling))
    for row, single in enumerate(singles):
        alone = gen.strip_after_stop(gen.generate(cfg, params, np.asarray([single]),
                                                  sampling=sampling))[0]
        assert batched[row] == alone


def test_sampling_is_reproducible_per_key(smol):
    tokenizer, cfg, params, _ = smol
    ids = chat_ids(tokenizer, PROMPTS[1])
    sampling = gen.SamplingConfig(max_new_tokens=12, temperature=1.0, top_k=50, top_p=0.95,
                                  pad_token_id=cfg.pad_token_id)
    a = gen.generate(cfg, params, ids, rng=jax.random.key(1), sampling=sampling).tokens
    b = gen.generate(cfg, params, ids, rng=jax.random.key(1), sampling=sampling).tokens
    c = gen.generate(cfg, params, ids, rng=jax.random.key(2), sampling=sampling).tokens
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
