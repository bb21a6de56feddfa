"""Export to Hugging Face formats.

    # a model converted with launch.convert -> HF dir
    python -m launch.export --ckpt=CKPT_DIR --out=HF_DIR [--max_shard_gb=5]
    # a training run -> what its task exports (LoRA: PEFT adapter + merged model)
    python -m launch.export --run=WORKDIR [--step=best|last|N] [--ema] --out=OUT_DIR
"""

from pathlib import Path

from absl import app, flags

from launch import cli

CKPT = flags.DEFINE_string("ckpt", None, "Checkpoint directory written by launch.convert.")
RUN = flags.DEFINE_string("run", None, "Training run directory (has config.json, checkpoints/).")
STEP = cli.define_step_flag()
EMA = flags.DEFINE_bool("ema", False, "With --run: export the EMA params instead of the live ones.")
OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
MAX_SHARD_GB = flags.DEFINE_float("max_shard_gb", 5.0, "Shard safetensors above this size.")


def export_converted(ckpt: str, out: str) -> list[Path]:
    from aes_jax.interop import hf, orbax_ckpt

    cfg, params, tokenizer_dir = orbax_ckpt.load_model(ckpt)
    return [hf.save_llama(cfg, params, out, tokenizer_source=tokenizer_dir,
                          max_shard_bytes=int(MAX_SHARD_GB.value * 1024**3))]


def export_run(run: str, out: str, step: str, use_ema: bool) -> list[Path]:
    from aes_jax.runs import checkpointed_task, load_run, restore_params
    from aes_jax.tasks.capabilities import Exporter

    config, task = load_run(run)
    task, ckpt_dir = checkpointed_task(run, task)  # Pair2Score: its last stage's checkpoints
    ckpt_dir = str(ckpt_dir)
    if not isinstance(task, Exporter):
        raise app.UsageError(f"{run}: task {config.task!r} has no export")
    step, trainable, frozen = restore_params(ckpt_dir, config, task,
                                             cli.chosen_step(ckpt_dir, step), use_ema)
    print(f"exporting {run} step {step}{' (EMA)' if use_ema else ''}")
    return task.export(trainable, frozen, out)


def main(argv):
    del argv
    if (CKPT.value is None) == (RUN.value is None):
        raise app.UsageError("give exactly one of --ckpt or --run")
    paths = (export_converted(CKPT.value, OUT.value) if CKPT.value
             else export_run(RUN.value, OUT.value, STEP.value, EMA.value))
    for path in paths:
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
