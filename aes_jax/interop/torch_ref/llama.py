"""transformers' LlamaForCausalLM on a chosen torch device, and logit comparisons with JAX."""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def torch_device(name: str):
    """'cpu', 'cuda', 'cuda:1' or 'mps', with a clear error when it is not available."""
    import torch

    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device={name}: torch sees no CUDA device")
    if name == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("--device=mps: torch sees no Apple MPS device")
    return torch.device(name)


def load_hf_llama(hf_dir: str | os.PathLike, device: str = "cpu", dtype: str = "float32"):
    """The transformers model for `hf_dir`, in eval mode, from safetensors, offline."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(hf_dir), dtype=getattr(torch, dtype), local_files_only=True, use_safetensors=True)
    return model.to(torch_device(device)).eval()


def hf_logits(model, input_ids: np.ndarray, attention_mask: np.ndarray | None = None,
              position_ids: np.ndarray | None = None) -> np.ndarray:
    """Float32 numpy logits [B, T, V] from a transformers causal LM."""
    import torch

    device = next(model.parameters()).device
    kwargs: dict[str, Any] = {"input_ids": torch.as_tensor(np.asarray(input_ids), device=device)}
    if attention_mask is not None:
        kwargs["attention_mask"] = torch.as_tensor(np.asarray(attention_mask), device=device)
    if position_ids is not None:
        kwargs["position_ids"] = torch.as_tensor(np.asarray(position_ids), device=device)
    with torch.no_grad():
        return model(**kwargs).logits.float().cpu().numpy()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def compare_logits(reference: np.ndarray, candidate: np.ndarray,
                   mask: np.ndarray | None = None) -> dict[str, float]:
    """max |diff|, mean and max KL(reference || candidate) of next-token distributions,
    and top-1 agreement, over the positions where `mask` is true."""
    reference, candidate = np.asarray(reference), np.asarray(candidate)
    if mask is None:
        mask = np.ones(reference.shape[:-1], bool)
    mask = np.asarray(mask, bool)
    ref, cand = reference[mask], candidate[mask]
    log_p, log_q = _log_softmax(ref), _log_softmax(cand)
    kl = (np.exp(log_p) * (log_p - log_q)).sum(axis=-1)
    return {
        "positions": int(mask.sum()),
        "max_abs_diff": float(np.abs(ref - cand).max()),
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
        "top1_agreement": float((ref.argmax(-1) == cand.argmax(-1)).mean()),
    }
