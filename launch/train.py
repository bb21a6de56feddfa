"""Train any task from a Python config file.

    python -m launch.train --config=configs/lm_lora.py:tiny --workdir=runs/tiny \\
        [--config.total_steps=50 --config.mesh.fsdp=2 ...] \\
        [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

The resolved config is written to WORKDIR/config.json before training starts. A run
whose WORKDIR already has checkpoints resumes from the latest one.
"""

from pathlib import Path

from absl import app, flags, logging
from ml_collections import config_flags

from aes_jax.train import distributed

CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/lm_lora.py:tiny.",
                                         lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config, logs, checkpoints).",
                              required=True)
DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                "jax.distributed: auto-detect SLURM/TPU pods, force, or skip.")
COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Total processes.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        # orbax logs every checkpoint phase at INFO; --verbosity=0 brings it back.
        logging.set_verbosity(logging.WARNING)
    distributed.initialize(DISTRIBUTED.value, COORDINATOR.value, NUM_PROCESSES.value,
                           PROCESS_ID.value)
    import jax

    from aes_jax import tasks
    from aes_jax.tasks.capabilities import PreparesData
    from aes_jax.train import loop

    workdir = Path(WORKDIR.value)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(CONFIG.value.to_json_best_effort(indent=2) + "\n")
    task = tasks.build(CONFIG.value, workdir)
    if isinstance(task, PreparesData):  # e.g. the demo dataset when the config names none
        task.prepare_data()
    last = loop.train(task, CONFIG.value, workdir)
    if jax.process_index() == 0:
        summary = ", ".join(f"{k} {v:.4f}" for k, v in last.items()
                            if k == "loss" or k.startswith("eval_"))
        print(f"finished step {last.get('step')}: {summary}")
        print(f"run directory: {workdir}")


if __name__ == "__main__":
    app.run(main)
