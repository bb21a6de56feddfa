"""Hugging Face <-> aes_jax LLaMA weights, through safetensors (or GGUF) only.

Conversion is transpose/reshape only (HF's half-split RoPE is used natively), so a
round trip HF -> JAX -> HF reproduces every tensor bit for bit. torch is not needed.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import jax
import numpy as np
from safetensors.numpy import save_file

from aes_jax.interop.safetensors_file import open_safetensors
from aes_jax.models.llama import ConfigError, LlamaConfig

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                   "chat_template.jinja", "chat_template.json")
# Buffers some exporters write that carry no learned weights.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)

_PREFIX = "model.layers.{i}."
# HF name suffix -> (path inside one layer's params, kind of reshape)
_LAYER_TENSORS = {
    "self_attn.q_proj.weight": (("self_attn", "q_proj", "kernel"), "in_heads"),
    "self_attn.k_proj.weight": (("self_attn", "k_proj", "kernel"), "in_kv_heads"),
    "self_attn.v_proj.weight": (("self_attn", "v_proj", "kernel"), "in_kv_heads"),
    "self_attn.o_proj.weight": (("self_attn", "o_proj", "kernel"), "out_heads"),
    "mlp.gate_proj.weight": (("mlp", "gate_proj", "kernel"), "transpose"),
    "mlp.up_proj.weight": (("mlp", "up_proj", "kernel"), "transpose"),
    "mlp.down_proj.weight": (("mlp", "down_proj", "kernel"), "transpose"),
    "input_layernorm.weight": (("input_layernorm", "scale"), "copy"),
    "post_attention_layernorm.weight": (("post_attention_layernorm", "scale"), "copy"),
}


class CheckpointError(ValueError):
    """A checkpoint on disk that is incomplete or does not match its config."""


# ----------------------------------------------------------------------------- name/shape maps


def hf_tensor_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a transformers LlamaForCausalLM checkpoint of `cfg` holds, with its shape."""
    d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    per_layer = {
        "self_attn.q_proj.weight": (q, d), "self_attn.k_proj.weight": (kv, d),
        "self_attn.v_proj.weight": (kv, d), "self_attn.o_proj.weight": (d, q),
        "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d),
        "mlp.down_proj.weight": (d, f),
        "input_layernorm.weight": (d,), "post_attention_layernorm.weight": (d,),
    }
    shapes = {"model.embed_tokens.weight": (cfg.vocab_size, d), "model.norm.weight": (d,)}
    for i in range(cfg.num_hidden_layers):
        shapes.update({_PREFIX.format(i=i) + k: s for k, s in per_layer.items()})
    if not cfg.tie_word_embeddings:
        shapes["lm_head.weight"] = (cfg.vocab_size, d)
    return shapes


def _to_jax_layout(w: np.ndarray, kind: str, cfg: LlamaConfig) -> np.ndarray:
    hd = cfg.head_dim
    if kind == "in_heads":  # [H*hd, D] -> [D, H, hd]
        return w.T.reshape(w.shape[1], cfg.num_attention_heads, hd)
    if kind == "in_kv_heads":
        return w.T.reshape(w.shape[1], cfg.num_key_value_heads, hd)
    if kind == "out_heads":  # [D, H*hd] -> [H, hd, D]
        return w.T.reshape(cfg.num_attention_heads, hd, w.shape[0])
    if kind == "transpose":
        return w.T
    return w


def _to_hf_layout(w: np.ndarray, kind: str) -> np.ndarray:
    if kind in ("in_heads", "in_kv_heads"):  # [D, H, hd] -> [H*hd, D]
        return w.reshape(w.shape[0], -1).T
    if kind == "out_heads":  # [H, hd, D] -> [D, H*hd]
        return w.reshape(-1, w.shape[-1]).T
    if kind == "transpose":
        return w.T
    return w


def _set(tree: dict, path: Iterable[str], value: Any) -> None:
    *parents, leaf = path
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def _get(tree: dict, path: Iterable[str]) -> Any:
    for p in path:
        tree = tree[p]
    return tree


def params_from_hf_tensors(cfg: LlamaConfig, tensors: dict[str, np.ndarray]) -> dict:
    """HF state dict (numpy) -> aes_jax params pytree (numpy), stacked when cfg.scan_layers."""
    params: dict = {"embed_tokens": tensors["model.embed_tokens.weight"],
                    "norm": {"scale": tensors["model.norm.weight"]}}
    if not cfg.tie_word_embeddings:
        params["lm_head"] = tensors["lm_head.weight"].T
    layers = [dict() for _ in range(cfg.num_hidden_layers)]
    for i, layer in enumerate(layers):
        for suffix, (path, kind) in _LAYER_TENSORS.items():
            _set(layer, path, _to_jax_layout(tensors[_PREFIX.format(i=i) + suffix], kind, cfg))
    if cfg.scan_layers:
        params["layers"] = stack_layers(layers)
    else:
        params.update({f"layers_{i}": layer for i, layer in enumerate(layers)})
    return params


def hf_tensors_from_params(cfg: LlamaConfig, params: dict) -> dict[str, np.ndarray]:
    """aes_jax params (scanned or not) -> HF state dict of contiguous numpy arrays."""
    params = jax.tree.map(np.asarray, params)
    out = {"model.embed_tokens.weight": params["embed_tokens"],
           "model.norm.weight": params["norm"]["scale"]}
    if not cfg.tie_word_embeddings:
        out["lm_head.weight"] = params["lm_head"].T
    layers = (unstack_layers(params["layers"], cfg.num_hidden_layers) if "layers" in params
              else [params[f"layers_{i}"] for i in range(cfg.num_hidden_layers)])
    for i, layer in enumerate(layers):
        for suffix, (path, kind) in _LAYER_TENSORS.items():
            out[_PREFIX.format(i=i) + suffix] = _to_hf_layout(_get(layer, path), kind)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def stack_layers(layers: list[dict]) -> dict:
    """Per-layer param trees -> one tree with a leading layer axis (the nn.scan layout)."""
    return jax.tree.map(lambda *xs: np.stack(xs), *layers)


def unstack_layers(stacked: dict, num_layers: int) -> list[dict]:
    return [jax.tree.map(lambda x, i=i: np.asarray(x)[i], stacked) for i in range(num_layers)]


def set_scan_layers(cfg: LlamaConfig, params: dict, scan_layers: bool) -> tuple[LlamaConfig, dict]:
    """Re-lays params for the scanned or unrolled model; values are unchanged."""
    if cfg.scan_layers == scan_layers:
        return cfg, params
    new_cfg = cfg.replace(scan_layers=scan_layers)
    return new_cfg, params_from_hf_tensors(new_cfg, hf_tensors_from_params(cfg, params))


# ----------------------------------------------------------------------------- loading


def read_hf_config(model_dir: PathLike, **runtime) -> LlamaConfig:
    config_path = Path(model_dir) / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{model_dir}: no config.json in this directory "
                              "(expected a Hugging Face model directory or a .gguf file)")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{config_path}: not valid JSON ({e})") from e
    return LlamaConfig.from_hf_dict(raw, source=str(config_path), **runtime)


def _weight_files(model_dir: Path) -> dict[str, Path]:
    """tensor name -> safetensors file that should hold it (from the index when sharded)."""
    index_path = model_dir / INDEX_FILE
    if index_path.is_file():
        weight_map = json.loads(index_path.read_text())["weight_map"]
        files = {name: model_dir / fname for name, fname in weight_map.items()}
        for path in sorted(set(files.values())):
            if not path.is_file():
                names = sorted(n for n, p in files.items() if p == path)
                raise CheckpointError(
                    f"{path}: shard listed in {index_path} is missing "
                    f"({len(names)} tensors, e.g. {names[:3]})")
        return files
    single = model_dir / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{model_dir}: neither {SINGLE_FILE} nor {INDEX_FILE} found "
                              "(only safetensors checkpoints are read; convert .bin files first)")
    with open_safetensors(single) as f:
        return {name: single for name in f.keys()}


def read_safetensors(model_dir: PathLike, cfg: LlamaConfig) -> dict[str, np.ndarray]:
    """Reads and checks every tensor `cfg` needs; errors name the file and the tensor."""
    model_dir = Path(model_dir)
    files = _weight_files(model_dir)
    expected = hf_tensor_shapes(cfg)
    unexpected = sorted(n for n in files if n not in expected
                        and not n.endswith(_IGNORED_SUFFIXES)
                        and not (n == "lm_head.weight" and cfg.tie_word_embeddings))
    if unexpected:
        raise CheckpointError(f"{model_dir}: tensors not part of a LLaMA model: {unexpected[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''}")
    missing = [n for n in expected if n not in files]
    if missing:
        raise CheckpointError(f"{model_dir}: missing tensor {missing[0]!r}"
                              f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}")
    tensors = {}
    by_file: dict[Path, list[str]] = {}
    for name in expected:
        by_file.setdefault(files[name], []).append(name)
    for path, names in by_file.items():
        with open_safetensors(path) as f:
            for name in names:
                t = f.get_tensor(name)
                if tuple(t.shape) != expected[name]:
                    raise CheckpointError(f"{path}: tensor {name!r} has shape {tuple(t.shape)}, "
                                          f"expected {expected[name]} from config.json")
                tensors[name] = t
    return tensors


def load_llama(path: PathLike, param_dtype: str | None = None,
               **runtime) -> tuple[LlamaConfig, dict]:
    """HF directory (safetensors, sharded or not) or a .gguf file -> (LlamaConfig, params).

    Params keep the checkpoint's dtype unless `param_dtype` is given. `runtime` sets the
    non-architecture fields of LlamaConfig (dtype, scan_layers, remat).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_file():
        if path.suffix != ".gguf":
            raise CheckpointError(f"{path}: expected a Hugging Face model directory or a .gguf file")
        from aes_jax.interop.gguf_llama import read_llama_gguf
        raw_config, tensors = read_llama_gguf(path)
        cfg = LlamaConfig.from_hf_dict(raw_config, source=str(path), **runtime)
        expected = hf_tensor_shapes(cfg)
        tensors = {k: v for k, v in tensors.items() if k in expected}
    else:
        cfg = read_hf_config(path, **runtime)
        tensors = read_safetensors(path, cfg)
    stored = str(next(iter(tensors.values())).dtype)
    cfg = cfg.replace(param_dtype=param_dtype or stored)
    if param_dtype:
        tensors = {k: v.astype(param_dtype) for k, v in tensors.items()}
    params = params_from_hf_tensors(cfg, tensors)
    return cfg, jax.device_put(params)


# ----------------------------------------------------------------------------- saving


def _shard(tensors: dict[str, np.ndarray], max_shard_bytes: int) -> list[dict[str, np.ndarray]]:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, t in tensors.items():
        if shards[-1] and size + t.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t
        size += t.nbytes
    return shards


def save_llama(cfg: LlamaConfig, params: dict, out_dir: PathLike,
               tokenizer_source: PathLike | None = None,
               generation_config: dict | None = None,
               max_shard_bytes: int = 5 * 1024**3) -> Path:
    """Writes a transformers-loadable directory: config.json, safetensors (sharded with an
    index above `max_shard_bytes`), generation_config.json when known, tokenizer files
    copied from `tokenizer_source` (whose generation_config.json is reused if present)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = hf_tensors_from_params(cfg, params)
    dtype = str(next(iter(tensors.values())).dtype)
    config = cfg.to_hf_dict() | {"torch_dtype": dtype}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    metadata = {"format": "pt"}  # transformers refuses safetensors without it
    shards = _shard(tensors, max_shard_bytes)
    for stale in list(out.glob("model*.safetensors")) + [out / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    if len(shards) == 1:
        save_file(tensors, out / SINGLE_FILE, metadata=metadata)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, out / fname, metadata=metadata)
            weight_map.update({name: fname for name in shard})
        index = {"metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
                 "weight_map": weight_map}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")

    if tokenizer_source is not None:
        src = Path(tokenizer_source)
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, out / name)
        if generation_config is None and (src / "generation_config.json").is_file():
            generation_config = json.loads((src / "generation_config.json").read_text())
    if generation_config is None and cfg.eos_token_id is not None:
        generation_config = {k: v for k, v in (("bos_token_id", config["bos_token_id"]),
                                               ("eos_token_id", config["eos_token_id"]),
                                               ("pad_token_id", config["pad_token_id"]))
                             if v is not None}
    if generation_config is not None:
        (out / "generation_config.json").write_text(json.dumps(generation_config, indent=2) + "\n")
    return out
