"""LlamaConfig <-> config.json in both layouts found in the wild, and RoPE frequencies."""

import numpy as np
import pytest
import torch

from aes_jax.models.llama import ConfigError, LlamaConfig, rope_inv_freq
from tests.conftest import LLAMA3_ROPE

BASE = dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
            num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
            rms_norm_eps=1e-5, max_position_embeddings=131072, tie_word_embeddings=False,
            bos_token_id=128000, eos_token_id=[128001, 128008, 128009], torch_dtype="bfloat16")
V4_ROPE = dict(rope_theta=500000.0, rope_scaling={
    "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192})
V5_ROPE = dict(rope_parameters={"rope_theta": 500000.0, **V4_ROPE["rope_scaling"]})


def test_transformers4_and_5_layouts_agree():
    v4 = LlamaConfig.from_hf_dict(BASE | V4_ROPE)
    v5 = LlamaConfig.from_hf_dict(BASE | V5_ROPE)
    assert v4 == v5
    assert v4.head_dim == 128 and v4.rope_theta == 500000.0
    assert v4.rope_scaling.factor == 8.0 and v4.rope_scaling.original_max_position_embeddings == 8192
    assert v4.stop_token_ids == (128001, 128008, 128009)


def test_hf_dict_round_trip():
    cfg = LlamaConfig.from_hf_dict(BASE | V4_ROPE)
    again = LlamaConfig.from_hf_dict(cfg.to_hf_dict())
    assert again == cfg
    assert cfg.to_hf_dict()["rope_scaling"] == V4_ROPE["rope_scaling"]


def test_transformers_reads_our_config_the_same_way():
    from transformers import LlamaConfig as HFConfig

    cfg = LlamaConfig.from_hf_dict(BASE | V5_ROPE)
    theirs = HFConfig(**{k: v for k, v in cfg.to_hf_dict().items() if k != "architectures"})
    assert theirs.rope_parameters["rope_type"] == "llama3"
    assert theirs.rope_parameters["rope_theta"] == 500000.0
    assert theirs.num_key_value_heads == 8 and theirs.head_dim == 128


@pytest.mark.parametrize("rope", [
    {"rope_type": "default", "rope_theta": 10000.0},
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    LLAMA3_ROPE,
    {**LLAMA3_ROPE, "rope_theta": 500000.0, "original_max_position_embeddings": 8192},
])
def test_inv_freq_matches_transformers(rope):
    from transformers import LlamaConfig as HFConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    hf_cfg = HFConfig(vocab_size=32, hidden_size=128, num_attention_heads=2, head_dim=64,
                      max_position_embeddings=131072, rope_parameters=dict(rope))
    expected = LlamaRotaryEmbedding(hf_cfg).inv_freq.to(torch.float32).numpy()
    ours = rope_inv_freq(LlamaConfig.from_hf_dict(hf_cfg.to_dict()))
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


@pytest.mark.parametrize("bad, message", [
    ({"model_type": "mistral"}, "model_type is 'mistral'"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"attention_bias": True}, "attention_bias"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type='yarn'"),
    ({"num_key_value_heads": 5}, "num_key_value_heads=5"),
])
def test_unsupported_configs_are_named(bad, message):
    with pytest.raises(ConfigError, match=message):
        LlamaConfig.from_hf_dict(BASE | bad, source="some/config.json")
    with pytest.raises(ConfigError, match="missing required keys"):
        LlamaConfig.from_hf_dict({"model_type": "llama"}, source="some/config.json")
