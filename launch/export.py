"""orbax checkpoint (from launch.convert) -> Hugging Face directory.

    python -m launch.export --ckpt=DIR --out=HF_DIR [--max_shard_gb=5]
"""

from absl import app, flags

from aes_jax.interop import hf, orbax_ckpt

CKPT = flags.DEFINE_string("ckpt", None, "Checkpoint directory written by launch.convert.",
                           required=True)
OUT = flags.DEFINE_string("out", None, "Output HF directory.", required=True)
MAX_SHARD_GB = flags.DEFINE_float("max_shard_gb", 5.0, "Shard safetensors above this size.")


def main(argv):
    del argv
    cfg, params, tokenizer_dir = orbax_ckpt.load_model(CKPT.value)
    out = hf.save_llama(cfg, params, OUT.value, tokenizer_source=tokenizer_dir,
                        max_shard_bytes=int(MAX_SHARD_GB.value * 1024**3))
    print(f"exported {CKPT.value} -> {out}")


if __name__ == "__main__":
    app.run(main)
