"""Torch-free reader for LLaMA-architecture GGUF checkpoints.

The JAX side of this project wants plain float32 numpy arrays under Hugging Face
parameter names plus a ``config.json``-style dict, so that a GGUF file and a
``save_pretrained`` folder can be fed through the same conversion code.  The
transformers GGUF loader does this too, but it needs torch and a full model
instance; this module only needs ``numpy`` and the ``gguf`` package.

Three things differ between a GGUF file and a Hugging Face checkpoint:

* names: llama.cpp uses ``blk.{i}.attn_q.weight`` where HF uses
  ``model.layers.{i}.self_attn.q_proj.weight``;
* storage: GGUF lists dimensions fastest-varying first (the reverse of numpy /
  torch order) and most matrices are block-quantized;
* layout: ``convert_hf_to_gguf.py`` permutes the rows of ``q_proj`` (with the
  query head count) and ``k_proj`` (with the key/value head count) so that the
  two halves of every rotary pair sit next to each other, as llama.cpp's RoPE
  kernel expects.  HF's ``rotate_half`` expects the half-split layout, so the
  permutation has to be undone here.

Llama 3.x files carry their rope scaling as a ``rope_freqs.weight`` tensor of
per-frequency divisors instead of metadata; it is turned back into an HF
``rope_scaling`` dict of type ``llama3`` rather than returned as a tensor.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import gguf
import numpy as np

__all__ = ["GGUFReadError", "read_llama_gguf", "unpermute_rotary_rows"]

GGUF_MAGIC = b"GGUF"
SUPPORTED_ARCHITECTURE = "llama"

# llama.cpp's defaults for keys a llama GGUF may leave out.
_DEFAULT_ROPE_THETA = 10000.0
# Llama 3.x was trained with an 8k context before its rope was rescaled; used
# only to pick one representative of an otherwise scale-free parameter family.
_DEFAULT_LLAMA3_ORIGINAL_CONTEXT = 8192

_GLOBAL_TENSOR_NAMES: dict[str, str] = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_OPTIONAL_GLOBAL_TENSORS = frozenset({"output.weight"})
_ROPE_FREQS_TENSOR = "rope_freqs.weight"

_LAYER_TENSOR_NAMES: dict[str, str] = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_LAYER_NAME_RE = re.compile(r"blk\.(\d+)\.(.+)")


class GGUFReadError(ValueError):
    """A GGUF file could not be turned into a LLaMA checkpoint.

    The message always names the file, so a failure deep inside a conversion
    pipeline still says which checkpoint was at fault.
    """


# ---------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------


def unpermute_rotary_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation, giving HF's half-split rotary layout.

    ``convert_hf_to_gguf.py`` views each head's rows as ``(2, head_dim // 2)``
    (first half / second half of the rotary pairs) and transposes that to
    ``(head_dim // 2, 2)`` so paired rows become adjacent.  Transposing back
    restores the HF order.  Works for 2-D weights and 1-D biases.
    """
    rows = weight.shape[0]
    if n_heads <= 0 or rows % (2 * n_heads) != 0:
        raise ValueError(f"cannot split {rows} rows into {n_heads} heads of rotary pairs")
    half = rows // n_heads // 2
    grouped = weight.reshape(n_heads, half, 2, *weight.shape[1:])
    return np.ascontiguousarray(grouped.swapaxes(1, 2)).reshape(weight.shape)


def hf_tensor_name(gguf_name: str) -> str | None:
    """Map a llama.cpp tensor name to its Hugging Face name (None if unknown)."""
    if gguf_name in _GLOBAL_TENSOR_NAMES:
        return _GLOBAL_TENSOR_NAMES[gguf_name]
    match = _LAYER_NAME_RE.fullmatch(gguf_name)
    if match is None or match.group(2) not in _LAYER_TENSOR_NAMES:
        return None
    return f"model.layers.{int(match.group(1))}.{_LAYER_TENSOR_NAMES[match.group(2)]}"


def expected_gguf_tensor_names(num_layers: int) -> list[str]:
    """Tensor names every llama GGUF with ``num_layers`` blocks must contain."""
    names = [n for n in _GLOBAL_TENSOR_NAMES if n not in _OPTIONAL_GLOBAL_TENSORS]
    for layer in range(num_layers):
        names.extend(f"blk.{layer}.{suffix}" for suffix in _LAYER_TENSOR_NAMES)
    return names


def expected_hf_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """HF/torch shapes implied by ``config``, keyed by HF tensor name.

    Checking every tensor against these catches metadata that disagrees with
    the weights (e.g. a wrong head count) before it turns into a silent
    mis-reshape downstream.
    """
    hidden = config["hidden_size"]
    inter = config["intermediate_size"]
    q_rows = config["num_attention_heads"] * config["head_dim"]
    kv_rows = config["num_key_value_heads"] * config["head_dim"]
    per_layer = {
        "input_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (q_rows, hidden),
        "self_attn.k_proj.weight": (kv_rows, hidden),
        "self_attn.v_proj.weight": (kv_rows, hidden),
        "self_attn.o_proj.weight": (hidden, q_rows),
        "post_attention_layernorm.weight": (hidden,),
        "mlp.gate_proj.weight": (inter, hidden),
        "mlp.up_proj.weight": (inter, hidden),
        "mlp.down_proj.weight": (hidden, inter),
    }
    shapes = {
        "model.embed_tokens.weight": (config["vocab_size"], hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (config["vocab_size"], hidden),
    }
    for layer in range(config["num_hidden_layers"]):
        for suffix, shape in per_layer.items():
            shapes[f"model.layers.{layer}.{suffix}"] = shape
    return shapes


def llama3_rope_scaling_from_freq_factors(
    freq_factors: np.ndarray,
    rope_theta: float,
    rotary_dim: int,
    original_max_position_embeddings: int = _DEFAULT_LLAMA3_ORIGINAL_CONTEXT,
) -> dict[str, Any] | None:
    """Recover HF's ``llama3`` rope_scaling from llama.cpp's ``rope_freqs`` divisors.

    llama.cpp stores, per rotary frequency, the divisor that HF's llama3 rule
    applies: 1 for short wavelengths, ``factor`` for long ones and a smooth
    blend in between.  In the blend region the "smooth" weight is affine in the
    base frequency, ``s = A * inv_freq + B``, which pins down
    ``original_ctx / (high - low)`` and ``low / (high - low)``; the triple
    ``(original_ctx, low, high)`` is only defined up to a common scale, and
    every member of that family gives identical frequencies, so the caller's
    ``original_max_position_embeddings`` selects one.  The fit is verified by
    recomputing the divisors.  Returns None when all divisors are 1.
    """
    factors = np.asarray(freq_factors, dtype=np.float64).reshape(-1)
    if factors.size != rotary_dim // 2:
        raise ValueError(f"expected {rotary_dim // 2} rope frequency factors, got {factors.size}")
    factor = float(factors.max())
    if np.allclose(factors, 1.0, rtol=0.0, atol=1e-6):
        return None
    inv_freq = rope_theta ** (-np.arange(0, rotary_dim, 2, dtype=np.float64) / rotary_dim)
    tol = 1e-6 * factor
    blend = (factors > 1.0 + tol) & (factors < factor - tol)
    if int(blend.sum()) < 2:
        raise ValueError(
            "rope frequency factors have fewer than two blended frequencies, "
            "so the llama3 low/high frequency factors cannot be determined"
        )
    smooth = (1.0 / factors[blend] - 1.0 / factor) / (1.0 - 1.0 / factor)
    slope, intercept = np.polyfit(inv_freq[blend], smooth, 1)
    span = original_max_position_embeddings / (2.0 * math.pi * slope)  # high - low
    low = -intercept * span
    scaling = {
        "rope_type": "llama3",
        "factor": factor,
        "low_freq_factor": round(float(low), 6),
        "high_freq_factor": round(float(low + span), 6),
        "original_max_position_embeddings": int(original_max_position_embeddings),
    }
    rebuilt = llama3_freq_factors(scaling, inv_freq)
    if not np.allclose(rebuilt, factors, rtol=1e-4, atol=0.0):
        raise ValueError("rope frequency factors do not follow the llama3 scaling rule")
    return scaling


def llama3_freq_factors(scaling: Mapping[str, Any], inv_freq: np.ndarray) -> np.ndarray:
    """Per-frequency divisors that HF's llama3 rope rule applies to ``inv_freq``."""
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_ctx = scaling["original_max_position_embeddings"]
    wavelen = 2.0 * math.pi / np.asarray(inv_freq, dtype=np.float64)
    smooth = (old_ctx / wavelen - low) / (high - low)
    blended = 1.0 / ((1.0 - smooth) / factor + smooth)
    return np.where(wavelen < old_ctx / high, 1.0, np.where(wavelen > old_ctx / low, factor, blended))


def _rope_scaling_from_metadata(meta: Mapping[str, Any], arch: str) -> dict[str, Any] | None:
    """Translate ``{arch}.rope.scaling.*`` keys into an HF ``rope_scaling`` dict."""
    kind = meta.get(f"{arch}.rope.scaling.type")
    if kind is None or kind == "none":
        return None
    scaling: dict[str, Any] = {"rope_type": kind, "factor": float(meta.get(f"{arch}.rope.scaling.factor", 1.0))}
    extras = {
        "original_context_length": ("original_max_position_embeddings", int),
        "attn_factor": ("attention_factor", float),
        "yarn_beta_fast": ("beta_fast", float),
        "yarn_beta_slow": ("beta_slow", float),
        "low_freq_factor": ("low_freq_factor", float),
        "high_freq_factor": ("high_freq_factor", float),
    }
    for gguf_suffix, (hf_key, cast) in extras.items():
        value = meta.get(f"{arch}.rope.scaling.{gguf_suffix}")
        if value is not None:
            scaling[hf_key] = cast(value)
    return scaling


def _single_int(value: Any, key: str) -> int:
    """GGUF allows per-layer arrays for some counts; HF llama needs one value."""
    if isinstance(value, list):
        if not value or any(v != value[0] for v in value):
            raise ValueError(f"{key} varies per layer ({value}); llama needs one value")
        value = value[0]
    return int(value)


# ---------------------------------------------------------------------------
# File access
# ---------------------------------------------------------------------------


def _open_reader(path: Path) -> gguf.GGUFReader:
    """Open ``path`` with GGUFReader, turning format problems into errors naming it."""
    with open(path, "rb") as handle:  # FileNotFoundError already names the path
        magic = handle.read(len(GGUF_MAGIC))
    if magic != GGUF_MAGIC:
        raise GGUFReadError(f"{path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        reader = gguf.GGUFReader(path, "r")
    except Exception as exc:  # gguf raises bare ValueError/IndexError on corrupt files
        raise GGUFReadError(f"{path}: corrupt or unsupported GGUF file: {exc}") from exc
    if reader.byte_order != "I":
        raise GGUFReadError(f"{path}: GGUF byte order differs from this machine's; not supported")
    return reader


def _metadata(reader: gguf.GGUFReader, skip_prefixes: Iterable[str] = ("tokenizer.ggml.",)) -> dict[str, Any]:
    """Decode scalar and small metadata fields.

    Tokenizer vocab/merges arrays hold ~10^5 strings and are not needed for the
    model config, so they are skipped apart from the special token ids.
    """
    skip = tuple(skip_prefixes)
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith(skip) and not key.endswith("_token_id"):
            continue
        meta[key] = field.contents()
    return meta


def _require(meta: Mapping[str, Any], key: str, path: Path) -> Any:
    if key not in meta:
        raise GGUFReadError(f"{path}: required metadata key {key!r} is missing")
    return meta[key]


def _build_config(meta: Mapping[str, Any], tensors: Mapping[str, gguf.ReaderTensor], path: Path) -> dict[str, Any]:
    """Build a transformers LlamaConfig-style dict from GGUF metadata."""
    arch = SUPPORTED_ARCHITECTURE
    try:
        hidden = int(_require(meta, f"{arch}.embedding_length", path))
        n_heads = _single_int(_require(meta, f"{arch}.attention.head_count", path), "head_count")
        n_kv = _single_int(meta.get(f"{arch}.attention.head_count_kv", n_heads), "head_count_kv")
        inter = _single_int(_require(meta, f"{arch}.feed_forward_length", path), "feed_forward_length")
    except ValueError as exc:
        if isinstance(exc, GGUFReadError):
            raise
        raise GGUFReadError(f"{path}: {exc}") from exc
    head_dim = int(meta.get(f"{arch}.attention.key_length", meta.get(f"{arch}.rope.dimension_count", hidden // n_heads)))
    vocab = meta.get(f"{arch}.vocab_size")
    if vocab is None and "token_embd.weight" in tensors:
        vocab = int(tensors["token_embd.weight"].shape[-1])  # GGUF dims are reversed: [hidden, vocab]
    if vocab is None:
        raise GGUFReadError(f"{path}: no {arch}.vocab_size metadata and no token_embd.weight tensor")

    config: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(vocab),
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": int(_require(meta, f"{arch}.block_count", path)),
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": float(_require(meta, f"{arch}.attention.layer_norm_rms_epsilon", path)),
        "rope_theta": float(meta.get(f"{arch}.rope.freq_base", _DEFAULT_ROPE_THETA)),
        "rope_scaling": _rope_scaling_from_metadata(meta, arch),
        "max_position_embeddings": int(_require(meta, f"{arch}.context_length", path)),
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": "output.weight" not in tensors,
        "torch_dtype": "float32",
    }
    for hf_key, gguf_key in (
        ("bos_token_id", "tokenizer.ggml.bos_token_id"),
        ("eos_token_id", "tokenizer.ggml.eos_token_id"),
        ("pad_token_id", "tokenizer.ggml.padding_token_id"),
    ):
        if gguf_key in meta:
            config[hf_key] = int(meta[gguf_key])
    return config


def _dequantize(tensor: gguf.ReaderTensor, path: Path) -> np.ndarray:
    """Dequantize one tensor to a float32 array in numpy (reversed GGUF) order.

    F32 tensors come back as views of the memory-mapped file; they are copied
    so the result stays valid (and writable) after the reader is dropped.
    """
    try:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    except NotImplementedError as exc:
        raise GGUFReadError(
            f"{path}: tensor {tensor.name!r} uses quantization type {tensor.tensor_type.name}, "
            "which gguf.quants cannot dequantize"
        ) from exc
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))
    if np.may_share_memory(values, tensor.data) or values.dtype != np.float32:
        values = np.array(values, dtype=np.float32, copy=True)
    if values.size != math.prod(shape):
        raise GGUFReadError(f"{path}: tensor {tensor.name!r} holds {values.size} values, expected shape {shape}")
    return values.reshape(shape)


def _is_known_tensor(gguf_name: str, num_layers: int) -> bool:
    """True for tensors this reader turns into weights or config."""
    if gguf_name == _ROPE_FREQS_TENSOR:
        return True
    if hf_tensor_name(gguf_name) is None:
        return False
    match = _LAYER_NAME_RE.fullmatch(gguf_name)
    return match is None or int(match.group(1)) < num_layers


def _check_tensor_names(names: Iterable[str], num_layers: int, path: Path) -> None:
    """Fail before any dequantizing if tensors are missing or unexpected."""
    present = set(names)
    missing = [n for n in expected_gguf_tensor_names(num_layers) if n not in present]
    if missing:
        hf = hf_tensor_name(missing[0])
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise GGUFReadError(f"{path}: missing tensor {missing[0]!r} (Hugging Face {hf!r}){more}")
    unknown = sorted(n for n in present if not _is_known_tensor(n, num_layers))
    if unknown:
        raise GGUFReadError(
            f"{path}: unexpected tensor(s) for a plain llama model: {', '.join(unknown[:5])}"
            + (f" (and {len(unknown) - 5} more)" if len(unknown) > 5 else "")
        )


# ---------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------


def read_llama_gguf(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Read a LLaMA-architecture GGUF file into an HF config dict and float32 tensors.

    Returns ``(hf_config_dict, tensors)``.  The config mirrors a transformers
    ``LlamaConfig`` ``config.json`` (``rope_theta`` top-level, ``rope_scaling``
    None or a dict).  ``tensors`` maps HF names to float32 numpy arrays in
    HF/torch shape (``[out, in]`` for linear layers), with q/k projections in
    HF's rotary layout; ``lm_head.weight`` is present only when the file has a
    separate ``output.weight`` (otherwise ``tie_word_embeddings`` is True).

    Raises ``GGUFReadError`` (a ``ValueError``) naming the file for non-GGUF
    input, a non-llama architecture, missing/unexpected tensors, shapes that
    contradict the metadata, or a quantization type gguf cannot dequantize.
    """
    path = Path(path)
    reader = _open_reader(path)
    meta = _metadata(reader)
    arch = meta.get("general.architecture")
    if arch != SUPPORTED_ARCHITECTURE:
        raise GGUFReadError(f"{path}: architecture is {arch!r}, only {SUPPORTED_ARCHITECTURE!r} is supported")

    by_name = {t.name: t for t in reader.tensors}
    config = _build_config(meta, by_name, path)
    _check_tensor_names(by_name, config["num_hidden_layers"], path)

    if _ROPE_FREQS_TENSOR in by_name and config["rope_scaling"] is None:
        rotary_dim = int(meta.get(f"{arch}.rope.dimension_count", config["head_dim"]))
        original_ctx = int(meta.get(f"{arch}.rope.scaling.original_context_length", _DEFAULT_LLAMA3_ORIGINAL_CONTEXT))
        try:
            config["rope_scaling"] = llama3_rope_scaling_from_freq_factors(
                _dequantize(by_name[_ROPE_FREQS_TENSOR], path), config["rope_theta"], rotary_dim, original_ctx
            )
        except ValueError as exc:
            if isinstance(exc, GGUFReadError):
                raise
            raise GGUFReadError(f"{path}: tensor {_ROPE_FREQS_TENSOR!r}: {exc}") from exc

    shapes = expected_hf_shapes(config)
    tensors: dict[str, np.ndarray] = {}
    for gguf_name, tensor in by_name.items():
        hf_name = hf_tensor_name(gguf_name)
        if hf_name is None:  # rope_freqs, already folded into the config
            continue
        values = _dequantize(tensor, path)
        if values.shape != shapes[hf_name]:
            raise GGUFReadError(
                f"{path}: tensor {gguf_name!r} has shape {values.shape} (HF order), "
                f"but the metadata implies {shapes[hf_name]}"
            )
        if gguf_name.endswith(".attn_q.weight"):
            values = unpermute_rotary_rows(values, config["num_attention_heads"])
        elif gguf_name.endswith(".attn_k.weight"):
            values = unpermute_rotary_rows(values, config["num_key_value_heads"])
        tensors[hf_name] = values
    return config, tensors
