"""HF directory or .gguf file -> orbax checkpoint.

    python -m launch.convert --hf=PATH --out=DIR [--param_dtype=float32]
"""

from absl import flags, logging

from aes_jax.interop import hf, orbax_ckpt
from launch import cli

FLAGS = flags.DEFINE_string("hf", None, "HF model directory or .gguf file.", required=True)
OUT = flags.DEFINE_string("out", None, "Output checkpoint directory (must not hold one).",
                          required=True)
PARAM_DTYPE = flags.DEFINE_string("param_dtype", None,
                                  "Cast params to this dtype; default keeps the stored dtype.")


def main(argv):
    del argv
    cfg, params = hf.load_llama(FLAGS.value, param_dtype=PARAM_DTYPE.value)
    source = FLAGS.value if not FLAGS.value.endswith(".gguf") else None
    out = orbax_ckpt.save_model(OUT.value, cfg, params, tokenizer_source=source)
    logging.info("Wrote %s (%d layers, hidden %d)", out, cfg.num_hidden_layers, cfg.hidden_size)
    print(f"converted {FLAGS.value} -> {out}")


if __name__ == "__main__":
    cli.run(main)
