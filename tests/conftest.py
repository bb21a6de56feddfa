"""Shared fixtures: tiny random LLaMA checkpoints written by transformers, and the real
packaged SmolLM2 (converted once per machine into the aes_jax cache)."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent XLA cache for the session, inherited by every CLI subprocess: dozens of
# tests and runs compile the same tiny train steps, which was about half the suite's time
# (pair2score's end-to-end test: 47 s cold, 17 s warm). Fresh per session, so each run
# still compiles everything once; a developer's own JAX_COMPILATION_CACHE_DIR wins.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _xla_cache = tempfile.mkdtemp(prefix="aes_jax_test_xla_cache_")
    atexit.register(shutil.rmtree, _xla_cache, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _xla_cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}

def write_tiny_llama(path, tie: bool, rope: dict | None = None, seed: int = 0, **overrides):
    """A random LlamaForCausalLM saved with save_pretrained; returns (path, torch model)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    kwargs = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                  max_position_embeddings=256, tie_word_embeddings=tie, rms_norm_eps=1e-5,
                  bos_token_id=1, eos_token_id=2, pad_token_id=0,
                  rope_parameters=rope or {"rope_type": "default", "rope_theta": 10000.0})
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**kwargs)).eval()
    # Random init leaves norms at 1; perturb them so a mix-up of norm weights would show.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return path, model

@pytest.fixture(scope="session")
def llama3_dir(tmp_path_factory):
    """LLaMA-3.1 style: llama3 RoPE scaling, GQA 4:2, untied head."""
    return write_tiny_llama(tmp_path_factory.mktemp("llama3"), tie=False, rope=LLAMA3_ROPE)

@pytest.fixture(scope="session")
def tied_dir(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("tied"), tie=True, seed=1)

@pytest.fixture(scope="session")
def smollm2_dir():
    from aes_jax.interop import assets

    return assets.smollm2_dir()

@pytest.fixture
def rng():
    return np.random.default_rng(0)
