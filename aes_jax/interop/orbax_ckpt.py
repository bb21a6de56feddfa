"""A converted model as an orbax checkpoint: params + the LlamaConfig + tokenizer files.

Layout of DIR:
    params/            orbax StandardCheckpointer tree (the aes_jax param pytree)
    llama_config.json  {"hf_config": config.json contents, "runtime": dtype/scan/remat/attention}
    tokenizer/         tokenizer and generation files copied from the source HF dir
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from aes_jax.interop.hf import TOKENIZER_FILES, CheckpointError, PathLike
from aes_jax.models.llama import Llama, LlamaConfig

CONFIG_FILE = "llama_config.json"
_RUNTIME_FIELDS = ("dtype", "param_dtype", "scan_layers", "remat", "attention",
                   "attention_block")


def save_model(out_dir: PathLike, cfg: LlamaConfig, params: dict,
               tokenizer_source: PathLike | None = None) -> Path:
    out = Path(out_dir).absolute()
    if (out / "params").exists():
        raise CheckpointError(f"{out}: already holds a checkpoint; choose an empty directory")
    out.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(out / "params", params)
        ckptr.wait_until_finished()
    runtime = {f: getattr(cfg, f) for f in _RUNTIME_FIELDS}
    (out / CONFIG_FILE).write_text(
        json.dumps({"hf_config": cfg.to_hf_dict(), "runtime": runtime}, indent=2) + "\n")
    if tokenizer_source is not None:
        (out / "tokenizer").mkdir(exist_ok=True)
        for name in TOKENIZER_FILES + ("generation_config.json",):
            src = Path(tokenizer_source) / name
            if src.is_file():
                shutil.copy2(src, out / "tokenizer" / name)
    return out


def load_model(ckpt_dir: PathLike) -> tuple[LlamaConfig, dict, Path | None]:
    """-> (cfg, params, tokenizer dir or None). Restores exactly the dtypes that were saved."""
    ckpt = Path(ckpt_dir).absolute()
    config_path = ckpt / CONFIG_FILE
    if not config_path.is_file():
        raise CheckpointError(f"{ckpt}: no {CONFIG_FILE}; not a checkpoint written by launch.convert")
    meta = json.loads(config_path.read_text())
    cfg = LlamaConfig.from_hf_dict(meta["hf_config"], source=str(config_path), **meta["runtime"])
    abstract = jax.eval_shape(
        lambda: Llama(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          nn.meta.unbox(abstract["params"]))
    with ocp.StandardCheckpointer() as ckptr:
        params = ckptr.restore(ckpt / "params", target)
    tokenizer = ckpt / "tokenizer"
    return cfg, params, tokenizer if tokenizer.is_dir() else None

