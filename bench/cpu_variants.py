"""JAX-only timing of the SmolLM2 training step's forward + backward under each speed
switch (attention implementation, blockwise loss, scan, remat policy), one variant per
subprocess so XLA flags can differ too: the figures that chose the defaults.

    python -m bench.cpu_variants [--seq_len=1024] [--batch=1] [--steps=3] \
        [--variants=baseline,attn_einsum,...] [--out=bench/results/cpu_variants.json]

Each row: compile seconds, median step seconds, tokens/s and the step's loss (the same
for every variant within float32 rounding: checked against the first row). Not a test.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from absl import app, flags

from bench.table import log, print_aligned

SEQ_LEN = flags.DEFINE_integer("seq_len", 1024, "Tokens per sequence.")
BATCH = flags.DEFINE_integer("batch", 1, "Sequences per step.")
STEPS = flags.DEFINE_integer("steps", 3, "Timed steps per variant (after one warm-up).")
VARIANTS = flags.DEFINE_list("variants", [], "Variant names (default: all).")
OUT = flags.DEFINE_string("out", "bench/results/cpu_variants.json", "Where to write the JSON.")
WORKER = flags.DEFINE_string("worker", "", "Internal: run one variant, print its JSON.")

# name -> (runtime overrides of the model part, extra XLA_FLAGS)
VARIANT_TABLE = {
    "baseline": ({}, ""),
    "attn_einsum": ({"attention": "einsum"}, ""),
    "attn_xla": ({"attention": "xla"}, ""),
    "attn_chunked": ({"attention": "chunked"}, ""),
    "attn_chunked_256": ({"attention": "chunked", "attention_block": 256}, ""),
    "attn_chunked_128": ({"attention": "chunked", "attention_block": 128}, ""),
    "attn_chunked_256_unrolled": ({"attention": "chunked", "attention_block": 256,
                                   "scan_layers": False}, ""),
    "loss_full_logits": ({"loss_block_tokens": 0}, ""),
    "loss_blocks_512": ({"loss_block_tokens": 512}, ""),
    "loss_blocks_256": ({"loss_block_tokens": 256}, ""),
    "unrolled_layers": ({"scan_layers": False}, ""),
    "remat_full": ({"remat": "full"}, ""),
    "remat_dots": ({"remat": "dots_with_no_batch_dims_saveable"}, ""),
    # XLA:CPU backends for dots and fusions (jaxlib's own flags; numerics unchanged)
    "xla_onednn": ({}, "--xla_cpu_use_onednn=true "
                       "--xla_cpu_experimental_onednn_custom_call=true"),
    "xla_xnnpack": ({}, "--xla_cpu_use_xnnpack=true"),
    "xla_xnn_greedy": ({}, "--xla_cpu_experimental_xnn_graph_fusion_mode="
                           "XNN_GRAPH_FUSION_MODE_GREEDY"),
    "xla_vector_512": ({}, "--xla_cpu_prefer_vector_width=512"),
}


def run_variant(name: str, seq_len: int, batch: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec

    overrides, _ = VARIANT_TABLE[name]
    part = CausalLM(CausalLMSpec(use_lora=False, **overrides))
    trainable, frozen = part.init(jax.random.key(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(0, part.cfg.vocab_size,
                                                        (batch, seq_len + 1)), jnp.int32)

    def loss(tr, x):
        nll = part.token_nll(tr, frozen, x[:, :-1], x[:, 1:])
        return jnp.mean(nll)

    start = time.perf_counter()
    step = jax.jit(jax.value_and_grad(loss)).lower(trainable, ids).compile()
    compile_s = time.perf_counter() - start
    value, _ = jax.block_until_ready(step(trainable, ids))  # warm-up
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(step(trainable, ids))
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"variant": name, "overrides": overrides, "compile_s": compile_s,
            "step_s": times, "median_step_s": median, "tokens_per_s": batch * seq_len / median,
            "loss": float(value)}


def main(argv):
    del argv
    if WORKER.value:
        print("RESULT " + json.dumps(run_variant(WORKER.value, SEQ_LEN.value, BATCH.value,
                                                 STEPS.value)), flush=True)
        return
    names = VARIANTS.value or list(VARIANT_TABLE)
    rows = []
    for name in names:
        if name not in VARIANT_TABLE:
            raise app.UsageError(f"--variants: unknown {name!r}; known: {list(VARIANT_TABLE)}")
        env = dict(os.environ)
        flags_extra = VARIANT_TABLE[name][1]
        if flags_extra:
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flags_extra).strip()
        log(f"variant {name}")
        done = subprocess.run(
            [sys.executable, "-m", "bench.cpu_variants", f"--worker={name}",
             f"--seq_len={SEQ_LEN.value}", f"--batch={BATCH.value}", f"--steps={STEPS.value}"],
            capture_output=True, text=True, env=env)
        result = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode or not result:
            raise RuntimeError(f"variant {name} failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(result[-1][len("RESULT "):]))
        log(f"  {rows[-1]['tokens_per_s']:.0f} tokens/s, compile {rows[-1]['compile_s']:.1f}s, "
            f"loss {rows[-1]['loss']:.6f}")
    first = rows[0]["loss"]
    for row in rows:
        row["loss_diff_vs_first"] = abs(row["loss"] - first)
        row["speed_vs_first"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]
    print_aligned([("variant", "tokens/s", "x first", "compile s", "loss", "|dloss|")] + [
        (r["variant"], f"{r['tokens_per_s']:.0f}", f"{r['speed_vs_first']:.2f}",
         f"{r['compile_s']:.1f}", f"{r['loss']:.6f}", f"{r['loss_diff_vs_first']:.1e}")
        for r in rows])
    out = Path(OUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"seq_len": SEQ_LEN.value, "batch": BATCH.value,
                               "steps": STEPS.value, "cpu_count": os.cpu_count(),
                               "rows": rows}, indent=2) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
