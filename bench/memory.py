"""Peak scratch memory of attention and of the LM loss, forward + backward, by sequence
length: what XLA allocates for one jitted gradient (its compiled memory analysis, the
temp buffers beyond inputs and outputs), not a timing. Shows which paths grow with T^2.

    python -m bench.memory [--seq_lens=1024,2048,4096,8192] [--out=bench/results/memory.json]

Attention rows: q [1, T, 9, 64], k / v [1, T, 3, 64] (SmolLM2-135M's heads), float32 (plus
bf16 rows), the gradient of sum(attention) w.r.t. q, k, v, per implementation
(`aes_jax.models.attention`; cudnn only on GPU). Loss rows: hidden [1, T, 576] and a
[49152, 576] head (SmolLM2's), the gradient of the mean NLL, full logits vs blockwise.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
from absl import app, flags

from aes_jax.losses import lm
from aes_jax.losses.blockwise import blockwise_token_nll
from aes_jax.models import attention as attn
from bench.table import log, print_aligned

SEQ_LENS = flags.DEFINE_list("seq_lens", ["1024", "2048", "4096", "8192"], "Sequence lengths.")
OUT = flags.DEFINE_string("out", "bench/results/memory.json", "Where to write the JSON.")
HEADS, KV_HEADS, HEAD_DIM, HIDDEN, VOCAB = 9, 3, 64, 576, 49152


def scratch_bytes(fn, *shapes) -> int:
    """XLA's temp allocation for `fn` compiled on these argument shapes."""
    return int(jax.jit(fn).lower(*shapes).compile().memory_analysis().temp_size_in_bytes)


def attention_bytes(implementation: str, t: int, dtype) -> int:
    q = jax.ShapeDtypeStruct((1, t, HEADS, HEAD_DIM), dtype)
    kv = jax.ShapeDtypeStruct((1, t, KV_HEADS, HEAD_DIM), dtype)

    def loss(q, k, v):
        mask = attn.CausalMask(jnp.ones((1, t), bool), jnp.arange(t))
        return jnp.sum(attn.attention(q, k, v, mask, implementation).astype(jnp.float32))
    return scratch_bytes(jax.grad(loss, argnums=(0, 1, 2)), q, kv, kv)


def loss_bytes(blockwise: bool, t: int) -> int:
    hidden = jax.ShapeDtypeStruct((1, t, HIDDEN), jnp.float32)
    head = jax.ShapeDtypeStruct((VOCAB, HIDDEN), jnp.float32)
    labels = jnp.zeros((1, t), jnp.int32)

    def loss(h, w):
        if blockwise:
            return jnp.mean(blockwise_token_nll(h, w, labels))
        return jnp.mean(lm.token_nll(jnp.einsum("btd,vd->btv", h, w), labels))
    return scratch_bytes(jax.grad(loss, argnums=(0, 1)), hidden, head)


def main(argv):
    del argv
    lens = [int(x) for x in SEQ_LENS.value]
    impls = ["einsum", "xla", "chunked"] + (["cudnn"] if jax.default_backend() == "gpu" else [])
    rows = []
    for dtype in (jnp.float32, jnp.bfloat16):
        for impl in impls:
            if impl == "cudnn" and dtype == jnp.float32:
                continue
            for t in lens:
                rows.append({"what": "attention fwd+bwd", "path": impl,
                             "dtype": jnp.dtype(dtype).name, "seq_len": t,
                             "bytes": attention_bytes(impl, t, dtype)})
                log(f"{rows[-1]}")
    for blockwise in (False, True):
        for t in lens:
            rows.append({"what": "LM loss fwd+bwd", "path": "blockwise" if blockwise else "full",
                         "dtype": "float32", "seq_len": t, "bytes": loss_bytes(blockwise, t)})
            log(f"{rows[-1]}")
    for row in rows:  # growth from the shortest length: ~2x per doubling = linear
        base = next(r for r in rows if r["what"] == row["what"] and r["path"] == row["path"]
                    and r["dtype"] == row["dtype"] and r["seq_len"] == lens[0])
        row["growth_vs_first"] = row["bytes"] / max(base["bytes"], 1)
    print_aligned([("what", "path", "dtype", "T", "MiB", f"x vs T={lens[0]}")] + [
        (r["what"], r["path"], r["dtype"], str(r["seq_len"]), f"{r['bytes'] / 2**20:.1f}",
         f"{r['growth_vs_first']:.2f}") for r in rows])
    out = Path(OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": jax.default_backend(),
                               "jax_devices": [str(d) for d in jax.devices()],
                               "rows": rows}, indent=2) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
