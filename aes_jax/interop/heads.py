"""Small scoring heads (nested {layer: {name: array}} trees) as safetensors, flat keys
"layer.name", so a head trained here loads anywhere (torch: `safetensors.torch.load_file`)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from safetensors.numpy import save_file

from aes_jax.interop.safetensors_file import open_safetensors


def save_head(head: Mapping[str, Mapping[str, object]], path: str | Path, fmt: str) -> Path:
    """Writes {layer: {name: array}} as `layer.name` tensors; `fmt` goes in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {f"{layer}.{name}": np.asarray(v) for layer, leaves in head.items()
            for name, v in leaves.items()}
    save_file(flat, str(path), metadata={"format": fmt})
    return path


def load_head(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The tree `save_head` wrote (errors name the file when it is not safetensors)."""
    tree: dict[str, dict[str, np.ndarray]] = {}
    with open_safetensors(path) as f:
        for key in f.keys():
            layer, _, name = key.rpartition(".")
            tree.setdefault(layer, {})[name] = f.get_tensor(key)
    return tree
