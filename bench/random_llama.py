"""A random-weight LLaMA-3.2-1B-shaped checkpoint for the GPU speed rows: the real model's
architecture without its (gated) weights, written as an HF directory that both sides load.

    python -m bench.random_llama OUT_DIR [--seed=0] [--dtype=bfloat16]

Shape (LLaMA-3.2-1B's config.json): 16 layers, hidden 2048, MLP 8192, 32 heads, 8 KV
heads (head_dim 64), vocab 128256, tied embeddings, rope_theta 500000 with llama3 RoPE
scaling (factor 32, low/high frequency factors 1/4, original context 8192). Weights are
transformers' own init (normal, std 0.02), so logits are near-uniform: fine for speed and
for the two-sides-agree checks, meaningless as a language model.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# No absl flags here: bench.llama_forward imports this module, and its flags would clash.

LLAMA32_1B_SHAPE: dict[str, Any] = dict(
    vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
    num_attention_heads=32, num_key_value_heads=8, head_dim=64, hidden_act="silu",
    max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
    rope_theta=500000.0,
    rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    bos_token_id=128000, eos_token_id=128001, initializer_range=0.02)


def write_random_llama(out_dir: Path, seed: int = 0, dtype: str = "bfloat16",
                       **overrides: Any) -> Path:
    """Saves a random LlamaForCausalLM of LLAMA32_1B_SHAPE (+ `overrides`, e.g. fewer layers
    for a quick check) under `out_dir` as safetensors; returns `out_dir`."""
    import torch
    import transformers

    config = transformers.LlamaConfig(**{**LLAMA32_1B_SHAPE, **overrides})
    torch.manual_seed(seed)
    # Built directly in the target dtype: the 1B model in float32 would need 5 GB of host
    # memory only to be cast down before saving.
    model = transformers.LlamaForCausalLM._from_config(config, dtype=getattr(torch, dtype))
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def main(argv: list[str]) -> None:
    args = [a for a in argv[1:] if not a.startswith("--")]
    opts = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--"))
    unknown = set(opts) - {"seed", "dtype"}
    if len(args) != 1 or unknown:
        sys.exit(f"usage: python -m bench.random_llama OUT_DIR [--seed=0] [--dtype=bfloat16]"
                 f"{'; unknown ' + ', '.join(sorted(unknown)) if unknown else ''}")
    out = write_random_llama(Path(args[0]), int(opts.get("seed", 0)),
                             opts.get("dtype", "bfloat16"))
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main(sys.argv)
