"""HF -> JAX -> HF and HF -> orbax -> HF reproduce every tensor bit for bit."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from aes_jax.interop import hf, orbax_ckpt


def read_all_tensors(model_dir) -> dict[str, np.ndarray]:
    index = model_dir / hf.INDEX_FILE
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values()))
             if index.exists() else [hf.SINGLE_FILE])
    tensors = {}
    for name in files:
        tensors.update(load_file(model_dir / name))
    return tensors


def assert_bit_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        np.testing.assert_array_equal(a[name], b[name], err_msg=name, strict=True)


@pytest.mark.parametrize("fixture", ["llama3_dir", "tied_dir"])
@pytest.mark.parametrize("scan_layers", [True, False])
def test_hf_jax_hf_bit_identical_and_loadable(request, tmp_path, fixture, scan_layers):
    from transformers import AutoModelForCausalLM

    src, _ = request.getfixturevalue(fixture)
    cfg, params = hf.load_llama(src, scan_layers=scan_layers)
    out = hf.save_llama(cfg, params, tmp_path / "out")
    assert_bit_identical(read_all_tensors(src), read_all_tensors(out))
    model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.config.tie_word_embeddings == cfg.tie_word_embeddings
    assert json.loads((out / "generation_config.json").read_text())["eos_token_id"] == 2


def test_sharded_save_and_load(llama3_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    src, _ = llama3_dir
    cfg, params = hf.load_llama(src)
    out = hf.save_llama(cfg, params, tmp_path / "sharded", max_shard_bytes=100_000)
    index = json.loads((out / hf.INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and not (out / hf.SINGLE_FILE).exists()
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in read_all_tensors(src).values())
    assert_bit_identical(read_all_tensors(src), read_all_tensors(out))
    _, reloaded = hf.load_llama(out)  # sharded input path
    assert_bit_identical(hf.hf_tensors_from_params(cfg, params),
                         hf.hf_tensors_from_params(cfg, reloaded))
    _, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


def test_bfloat16_checkpoint_stays_bfloat16(llama3_dir, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    src, _ = llama3_dir
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(tmp_path / "bf16")
    cfg, params = hf.load_llama(tmp_path / "bf16")
    assert cfg.param_dtype == "bfloat16" and params["embed_tokens"].dtype.name == "bfloat16"
    out = hf.save_llama(cfg, params, tmp_path / "out")
    assert_bit_identical(read_all_tensors(tmp_path / "bf16"), read_all_tensors(out))
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_orbax_convert_export_cli_bit_identical(llama3_dir, tmp_path):
    src, _ = llama3_dir
    ckpt, out = tmp_path / "ckpt", tmp_path / "hf_out"
    for args in (["launch.convert", f"--hf={src}", f"--out={ckpt}"],
                 ["launch.export", f"--ckpt={ckpt}", f"--out={out}"]):
        subprocess.run([sys.executable, "-m", *args], check=True, capture_output=True)
    assert_bit_identical(read_all_tensors(src), read_all_tensors(out))
    cfg, _, _ = orbax_ckpt.load_model(ckpt)
    assert cfg == hf.read_hf_config(src)


def test_smollm2_round_trip(smollm2_dir, tmp_path):
    """The real checkpoint, tokenizer files included."""
    cfg, params = hf.load_llama(smollm2_dir)
    out = hf.save_llama(cfg, params, tmp_path / "smol", tokenizer_source=smollm2_dir)
    assert_bit_identical(read_all_tensors(smollm2_dir), read_all_tensors(out))
    assert (out / "tokenizer.json").read_bytes() == (smollm2_dir / "tokenizer.json").read_bytes()
