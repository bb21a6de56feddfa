"""The README's main job on the embedded default model (no download):

1. converts the packaged SmolLM2-135M-Instruct (GGUF) to an HF dir and to a JAX
   orbax checkpoint in WORKDIR/checkpoint,
2. checks JAX logits against transformers on a chat prompt,
3. answers the prompt with the JAX model (greedy, KV cache).

    python -m launch.quickstart [--workdir=runs/quickstart] [--max_new_tokens=64]
"""

import json
import shutil
import time
from pathlib import Path

import jax
from absl import flags

from aes_jax.eval import generate as gen
from aes_jax.interop import assets, hf, orbax_ckpt
from launch import cli
from launch.parity import PROMPT, chat_ids, run_parity

WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Where outputs go (overwritten).")
MAX_NEW = flags.DEFINE_integer("max_new_tokens", 64, "Tokens to generate.")


def main(argv):
    del argv
    from transformers import AutoTokenizer

    workdir = Path(WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    hf_dir = assets.smollm2_dir()
    print(f"[1/3] SmolLM2-135M-Instruct HF dir: {hf_dir} ({time.time() - t0:.1f}s)")
    cfg, params = hf.load_llama(hf_dir)
    shutil.rmtree(workdir / "checkpoint", ignore_errors=True)
    orbax_ckpt.save_model(workdir / "checkpoint", cfg, params, tokenizer_source=hf_dir)
    print(f"      JAX orbax checkpoint: {workdir / 'checkpoint'}")

    t0 = time.time()
    report = run_parity(str(hf_dir), "cpu", "float32", PROMPT.value)
    (workdir / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"[2/3] JAX vs torch on {report['tokens']} tokens: max |dlogit| "
          f"{report['max_abs_diff']:.2e}, mean KL {report['mean_kl']:.2e}, "
          f"top-1 agreement {report['top1_agreement']:.0%} ({time.time() - t0:.1f}s)")

    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    ids = chat_ids(tokenizer, PROMPT.value)
    sampling = gen.SamplingConfig(max_new_tokens=MAX_NEW.value, stop_token_ids=cfg.stop_token_ids,
                                  pad_token_id=cfg.pad_token_id or 0)
    t0 = time.time()
    out = gen.generate(cfg, params, ids, rng=jax.random.key(0), sampling=sampling)
    answer = tokenizer.decode(gen.strip_after_stop(out, cfg.stop_token_ids)[0])
    (workdir / "generation.txt").write_text(f"PROMPT: {PROMPT.value}\n\nANSWER: {answer}\n")
    print(f"[3/3] JAX greedy answer ({int(out.lengths[0])} tokens, {time.time() - t0:.1f}s "
          f"incl. compile):\n{answer}")
    print(f"Outputs in {workdir}: checkpoint/, parity.json, generation.txt")


if __name__ == "__main__":
    cli.run(main)
