"""Broken checkpoints fail with errors that name the file and the tensor."""

import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from aes_jax.interop import hf
from aes_jax.models.llama import ConfigError


@pytest.fixture
def checkpoint(llama3_dir, tmp_path):
    """A writable sharded copy of the tiny llama3 checkpoint."""
    src, _ = llama3_dir
    cfg, params = hf.load_llama(src)
    return hf.save_llama(cfg, params, tmp_path / "ckpt", max_shard_bytes=200_000)


def test_directory_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(hf.CheckpointError, match=f"{tmp_path}: no config.json"):
        hf.load_llama(tmp_path)


def test_missing_path_and_wrong_file_type(tmp_path):
    with pytest.raises(hf.CheckpointError, match="no such file"):
        hf.load_llama(tmp_path / "nope")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(hf.CheckpointError, match="weights.bin: expected a Hugging Face"):
        hf.load_llama(tmp_path / "weights.bin")


def test_config_that_is_not_llama(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps(config | {"model_type": "gpt2"}))
    with pytest.raises(ConfigError, match=r"config\.json: model_type is 'gpt2'"):
        hf.load_llama(checkpoint)


def test_missing_shard(checkpoint):
    index = json.loads((checkpoint / hf.INDEX_FILE).read_text())
    shard = sorted(set(index["weight_map"].values()))[1]
    (checkpoint / shard).unlink()
    with pytest.raises(hf.CheckpointError, match=f"{shard}: shard listed in .* is missing"):
        hf.load_llama(checkpoint)


def test_tensor_of_wrong_shape(checkpoint):
    index = json.loads((checkpoint / hf.INDEX_FILE).read_text())
    name = "model.layers.1.self_attn.k_proj.weight"
    shard = checkpoint / index["weight_map"][name]
    tensors = load_file(shard)
    tensors[name] = np.zeros((16, 64), np.float32)
    save_file(tensors, shard, metadata={"format": "pt"})
    with pytest.raises(hf.CheckpointError,
                       match=rf"{shard.name}: tensor '{name}' has shape \(16, 64\), expected \(32, 64\)"):
        hf.load_llama(checkpoint)


def test_missing_and_unexpected_tensors(llama3_dir, tmp_path):
    src, _ = llama3_dir
    shutil.copytree(src, tmp_path / "c")
    tensors = load_file(tmp_path / "c" / hf.SINGLE_FILE)
    del tensors["model.layers.2.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "c" / hf.SINGLE_FILE, metadata={"format": "pt"})
    with pytest.raises(hf.CheckpointError, match="missing tensor 'model.layers.2.mlp.up_proj.weight'"):
        hf.load_llama(tmp_path / "c")
    tensors["model.layers.2.mlp.up_proj.weight"] = np.zeros((96, 64), np.float32)
    tensors["model.layers.0.self_attn.q_proj.bias"] = np.zeros(64, np.float32)
    save_file(tensors, tmp_path / "c" / hf.SINGLE_FILE, metadata={"format": "pt"})
    with pytest.raises(hf.CheckpointError, match="not part of a LLaMA model.*q_proj.bias"):
        hf.load_llama(tmp_path / "c")


def test_no_weights_file(llama3_dir, tmp_path):
    src, _ = llama3_dir
    (tmp_path / "config.json").write_bytes((src / "config.json").read_bytes())
    with pytest.raises(hf.CheckpointError, match="neither model.safetensors nor"):
        hf.load_llama(tmp_path)
