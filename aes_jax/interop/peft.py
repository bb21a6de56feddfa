"""PEFT (Hugging Face `peft`) LoRA adapter directories <-> aes_jax `lora` trees, torch-free.

A PEFT adapter directory holds `adapter_config.json` and `adapter_model.safetensors` with
keys like `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in] and
`...lora_B.weight` [out, r]. Our adapters keep the kernel's head structure, a [*in, r] and
b [r, *out], so conversion is the same flatten/transpose `hf.py` applies to kernels:
lora_A = a.reshape(-1, r).T and lora_B = b.reshape(r, -1).T. The scale (alpha / r, or
alpha / sqrt(r) with rsLoRA) and dropout-on-the-input are the same in both.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors.numpy import save_file

from aes_jax.interop.safetensors_file import open_safetensors
from aes_jax.interop.hf import CheckpointError, PathLike, stack_layers, unstack_layers
from aes_jax.models import lora as lora_lib
from aes_jax.models.llama import LlamaConfig

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"

_KEY = "base_model.model.model.layers.{i}.{parent}.{leaf}.lora_{ab}.weight"
# Leaf module name -> its parent inside a decoder layer, in PEFT's (= transformers') naming.
PARENTS = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
            "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}
_ATTENTION = frozenset({"q_proj", "k_proj", "v_proj", "o_proj"})
_ALL_LINEAR = frozenset(PARENTS)
# Non-layer modules PEFT could adapt but our LoRA has no slot for.
_OTHER_MODULES = ("lm_head", "model.embed_tokens", "model.norm")
# adapter_config.json options that change what the weights mean; any non-empty value is
# refused rather than silently giving a different model.
_UNSUPPORTED_OPTIONS = ("fan_in_fan_out", "use_dora", "layers_to_transform", "rank_pattern",
                        "alpha_pattern", "lora_bias", "modules_to_save", "layer_replication",
                        "target_parameters", "trainable_token_indices", "use_qalora",
                        "alora_invocation_tokens", "use_bdlora")


class AdapterError(CheckpointError):
    """A PEFT adapter directory that is incomplete or that aes_jax cannot represent."""


# ----------------------------------------------------------------------------- shapes


def module_shapes(cfg: LlamaConfig) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Leaf module name -> (in_shape, out_shape) of its kernel, as `llama.Projection` holds it."""
    d, f = cfg.hidden_size, cfg.intermediate_size
    q, kv = (cfg.num_attention_heads, cfg.head_dim), (cfg.num_key_value_heads, cfg.head_dim)
    return {"q_proj": ((d,), q), "k_proj": ((d,), kv), "v_proj": ((d,), kv), "o_proj": (q, (d,)),
            "gate_proj": ((d,), (f,)), "up_proj": ((d,), (f,)), "down_proj": ((f,), (d,))}


def _peft_shapes(cfg: LlamaConfig, leaf: str, rank: int) -> dict[str, tuple[int, int]]:
    in_shape, out_shape = module_shapes(cfg)[leaf]
    return {"A": (rank, int(np.prod(in_shape))), "B": (int(np.prod(out_shape)), rank)}


def targets_regex(modules: frozenset[str] | set[str]) -> str:
    """A `LoraConfig.targets` regex adapting exactly `modules` (leaf names) in every layer;
    the library's named patterns when they fit, so configs compare equal."""
    if modules == _ATTENTION:
        return lora_lib.ATTENTION_TARGETS
    if modules == _ALL_LINEAR:
        return lora_lib.ALL_LINEAR_TARGETS
    alternatives = "|".join(f"{PARENTS[m]}/{m}" for m in sorted(modules))
    return f"({alternatives})$"


# ----------------------------------------------------------------------------- saving


def _per_layer(cfg: LlamaConfig, lora: dict) -> list[dict]:
    """The lora tree as one dict per layer, from either the scanned or the unrolled layout."""
    layer_keys = {f"layers_{i}" for i in range(cfg.num_hidden_layers)}
    stray = sorted(k for k in lora if k != "layers" and k not in layer_keys)
    if stray:
        raise ValueError(f"lora tree has adapters outside the decoder layers: {stray} "
                         "(PEFT export covers layer projections only)")
    if "layers" in lora:
        return unstack_layers(lora["layers"], cfg.num_hidden_layers)
    return [jax.tree.map(np.asarray, lora.get(f"layers_{i}", {}))
            for i in range(cfg.num_hidden_layers)]


def _adapted_modules(layer: dict) -> dict[str, dict[str, np.ndarray]]:
    """leaf name -> {"a", "b"} for one layer's lora dict, checking the nesting."""
    found = {}
    for parent, modules in layer.items():
        for leaf, ab in modules.items():
            if PARENTS.get(leaf) != parent or set(ab) != {"a", "b"}:
                raise ValueError(f"unexpected lora entry {parent}/{leaf} with keys {sorted(ab)}")
            found[leaf] = ab
    return found


def _check_shapes(cfg: LlamaConfig, leaf: str, a: np.ndarray, b: np.ndarray, where: str) -> None:
    in_shape, out_shape = module_shapes(cfg)[leaf]
    r = cfg.lora.rank
    if a.shape != in_shape + (r,) or b.shape != (r,) + out_shape:
        raise ValueError(f"{where}: a {a.shape}, b {b.shape}; expected a {in_shape + (r,)}, "
                         f"b {(r,) + out_shape} for rank {r}")


def _adapter_config(cfg: LlamaConfig, modules: list[str],
                    base_model_name_or_path: str | None) -> dict[str, Any]:
    lc = cfg.lora
    alpha = int(lc.alpha) if float(lc.alpha).is_integer() else lc.alpha
    return {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lc.rank, "lora_alpha": alpha,
        "lora_dropout": lc.dropout, "target_modules": modules, "use_rslora": lc.use_rslora,
        "bias": "none", "fan_in_fan_out": False, "use_dora": False, "lora_bias": False,
        "layers_to_transform": None, "layers_pattern": None, "rank_pattern": {},
        "alpha_pattern": {}, "modules_to_save": None, "init_lora_weights": True,
        "base_model_name_or_path": base_model_name_or_path, "revision": None,
        "inference_mode": True,
    }


def save_peft_adapter(cfg: LlamaConfig, lora: dict, out_dir: PathLike,
                      base_model_name_or_path: str | None = None) -> Path:
    """Writes `lora` (scanned or unrolled) as a PEFT LoRA directory that
    `peft.PeftModel.from_pretrained(base, out_dir)` loads. Every layer must adapt the same
    modules, since PEFT's `target_modules` applies to all layers alike."""
    if cfg.lora is None:
        raise ValueError("cfg.lora is None: rank/alpha of the adapters are unknown")
    layers = [_adapted_modules(layer) for layer in _per_layer(cfg, lora)]
    modules = sorted(layers[0])
    if not modules:
        raise ValueError("lora tree holds no adapters")
    for i, layer in enumerate(layers):
        if sorted(layer) != modules:
            raise ValueError(f"layer {i} adapts {sorted(layer)} but layer 0 adapts {modules}; "
                             "PEFT's target_modules cannot express per-layer differences")

    tensors = {}
    for i, layer in enumerate(layers):
        for leaf, ab in layer.items():
            a, b = np.asarray(ab["a"]), np.asarray(ab["b"])
            _check_shapes(cfg, leaf, a, b, f"layer {i} {leaf}")
            r = a.shape[-1]
            key = dict(i=i, parent=PARENTS[leaf], leaf=leaf)
            tensors[_KEY.format(ab="A", **key)] = np.ascontiguousarray(a.reshape(-1, r).T)
            tensors[_KEY.format(ab="B", **key)] = np.ascontiguousarray(b.reshape(r, -1).T)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = _adapter_config(cfg, modules, base_model_name_or_path)
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    save_file(tensors, out / WEIGHTS_FILE, metadata={"format": "pt"})
    return out


# ----------------------------------------------------------------------------- loading


def _read_config(adapter_dir: Path) -> tuple[Path, dict[str, Any]]:
    path = adapter_dir / CONFIG_FILE
    if not path.is_file():
        raise AdapterError(f"{path}: not found (expected a PEFT adapter directory)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AdapterError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise AdapterError(f"{path}: expected a JSON object")
    return path, config


def _is_set(value: Any) -> bool:
    # 0 is a meaningful layers_to_transform, so only None/False/empty count as unset.
    if value is None or value is False:
        return False
    return not (isinstance(value, (str, list, dict, tuple)) and len(value) == 0)


def _check_options(path: Path, config: dict[str, Any]) -> None:
    if config.get("peft_type") != "LORA":
        raise AdapterError(f"{path}: peft_type is {config.get('peft_type')!r}, expected 'LORA'")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{path}: bias={config['bias']!r} is not supported (only 'none')")
    used = [f"{k}={config[k]!r}" for k in _UNSUPPORTED_OPTIONS if _is_set(config.get(k))]
    if used:
        raise AdapterError(f"{path}: unsupported LoRA options: {', '.join(used)}")
    for key in ("r", "lora_alpha", "target_modules"):
        if config.get(key) is None:
            raise AdapterError(f"{path}: missing {key!r}")


def _peft_targets(target_modules: str | list[str], exclude: str | list[str] | None,
                  name: str) -> bool:
    """PEFT's `check_target_module_exists` for a full module name (no layer indexes)."""
    if exclude:
        if isinstance(exclude, str):
            if re.fullmatch(exclude, name):
                return False
        elif name in exclude or any(name.endswith(f".{e}") for e in exclude):
            return False
    if isinstance(target_modules, str):
        if target_modules.lower() == "all-linear":
            return name.split(".")[-1] in _ALL_LINEAR
        return re.fullmatch(target_modules, name) is not None
    return name in target_modules or any(name.endswith(f".{t}") for t in target_modules)


def _targeted_modules(path: Path, config: dict[str, Any], num_layers: int) -> frozenset[str]:
    """Leaf names the config adapts, identical in every layer (else an error)."""
    targets, exclude = config["target_modules"], config.get("exclude_modules")
    other = [m for m in _OTHER_MODULES if _peft_targets(targets, exclude, m)]
    if other:
        raise AdapterError(f"{path}: target_modules={targets!r} adapts {other}; "
                           "only decoder-layer projections are supported")
    per_layer = [frozenset(leaf for leaf, parent in PARENTS.items()
                           if _peft_targets(targets, exclude, f"model.layers.{i}.{parent}.{leaf}"))
                 for i in range(num_layers)]
    if not per_layer[0]:
        raise AdapterError(f"{path}: target_modules={targets!r} matches no LLaMA projection")
    if any(s != per_layer[0] for s in per_layer):
        raise AdapterError(f"{path}: target_modules={targets!r} selects different modules in "
                           "different layers, which aes_jax LoRA cannot express")
    return per_layer[0]


def _weights_file(adapter_dir: Path) -> Path:
    path = adapter_dir / WEIGHTS_FILE
    if path.is_file():
        return path
    if (adapter_dir / LEGACY_WEIGHTS_FILE).is_file():
        raise AdapterError(f"{adapter_dir / LEGACY_WEIGHTS_FILE}: pickled adapters are not read; "
                           f"re-save with safetensors ({WEIGHTS_FILE})")
    raise AdapterError(f"{path}: not found")


def _read_tensors(path: Path, cfg: LlamaConfig, modules: frozenset[str],
                  rank: int) -> list[dict]:
    """Reads and checks every expected tensor; returns the per-layer lora dicts."""
    with open_safetensors(path) as f:
        present = set(f.keys())
        expected = {}
        for i in range(cfg.num_hidden_layers):
            for leaf in modules:
                for ab, shape in _peft_shapes(cfg, leaf, rank).items():
                    key = _KEY.format(i=i, parent=PARENTS[leaf], leaf=leaf, ab=ab)
                    expected[key] = (i, leaf, ab, shape)
        missing = sorted(k for k in expected if k not in present)
        if missing:
            raise AdapterError(f"{path}: missing tensor {missing[0]!r}"
                               f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''}")
        unexpected = sorted(present - set(expected))
        if unexpected:
            raise AdapterError(f"{path}: tensors not covered by adapter_config.json "
                               f"target_modules: {unexpected[:3]}"
                               f"{' ...' if len(unexpected) > 3 else ''}")
        layers: list[dict] = [{} for _ in range(cfg.num_hidden_layers)]
        shapes = module_shapes(cfg)
        for key, (i, leaf, ab, shape) in expected.items():
            t = f.get_tensor(key)
            if tuple(t.shape) != shape:
                raise AdapterError(f"{path}: tensor {key!r} has shape {tuple(t.shape)}, expected "
                                   f"{shape} (r={rank} from adapter_config.json)")
            in_shape, out_shape = shapes[leaf]
            value = (t.T.reshape(in_shape + (rank,)) if ab == "A"
                     else t.T.reshape((rank,) + out_shape))
            slot = layers[i].setdefault(PARENTS[leaf], {}).setdefault(leaf, {})
            slot["a" if ab == "A" else "b"] = np.ascontiguousarray(value)
    return layers


def load_peft_adapter(adapter_dir: PathLike, cfg: LlamaConfig) -> tuple[LlamaConfig, dict]:
    """PEFT LoRA directory -> (cfg with `lora` set from adapter_config.json, lora tree in the
    layout `cfg.scan_layers` asks for). Tensors keep the dtype they are stored in."""
    adapter_dir = Path(adapter_dir)
    config_path, config = _read_config(adapter_dir)
    _check_options(config_path, config)
    modules = _targeted_modules(config_path, config, cfg.num_hidden_layers)
    try:
        lora_cfg = lora_lib.LoraConfig(
            rank=int(config["r"]), alpha=float(config["lora_alpha"]),
            dropout=float(config.get("lora_dropout") or 0.0), targets=targets_regex(modules),
            use_rslora=bool(config.get("use_rslora", False)))
    except ValueError as e:
        raise AdapterError(f"{config_path}: {e}") from e
    layers = _read_tensors(_weights_file(adapter_dir), cfg, modules, lora_cfg.rank)
    if cfg.scan_layers:
        tree = {"layers": stack_layers(layers)}
    else:
        tree = {f"layers_{i}": layer for i, layer in enumerate(layers)}
    return cfg.replace(lora=lora_cfg), jax.device_put(tree)
