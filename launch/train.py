"""Train any task from a Python config file.

    python -m launch.train --config=configs/lm_lora.py:tiny --workdir=runs/tiny \\
        [--config.total_steps=50 --config.mesh.fsdp=2 ...] [--allow_changes=total_steps] \\
        [--coordinator_address=HOST:PORT --num_processes=N --process_id=I]

A new WORKDIR gets the resolved config as WORKDIR/config.json before training starts. A
WORKDIR that has one is a run to resume: the resolved config must equal the stored one
(else the keys that differ are named and nothing is touched), unless --allow_changes
names them; the stored config is then kept as config_before_step_N.json. Ctrl-C or
SIGTERM saves a checkpoint at the current step (exit 130 / 143); the same command resumes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from aes_jax.train import distributed
from launch import cli

CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/lm_lora.py:tiny.",
                                         lock_config=True)
WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (config, logs, checkpoints).",
                              required=True)
ALLOW_CHANGES = flags.DEFINE_list("allow_changes", [], "Config keys (dotted; a prefix such "
                                  "as optimizer covers its fields) that may differ from the "
                                  "resumed run's stored config.json, e.g. total_steps.")
DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                "jax.distributed: auto-detect SLURM/TPU pods, force, or skip.")
COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Total processes.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")


def main(argv):
    del argv
    if CONFIG.value is None:
        cli.fail("--config is required, e.g. --config=configs/trm_aes.py:demo")
    try:  # a config file that failed to load raises on first use, wrapped
        config = CONFIG.value
        text = config.to_json_best_effort(indent=2) + "\n"
    except Exception as e:
        cli.fail(f"--config: {cli.one_line(e)}")
    distributed.initialize(DISTRIBUTED.value, COORDINATOR.value, NUM_PROCESSES.value,
                           PROCESS_ID.value)
    import jax

    from aes_jax import tasks
    from aes_jax.runs import check_resume, record_config
    from aes_jax.tasks.capabilities import PreparesData, StagedTask
    from aes_jax.train import loop, rl_loop
    from aes_jax.train.checkpoint import latest_step
    from aes_jax.train.engine_config import EngineConfig
    from aes_jax.train.interrupt import TrainingInterrupted
    from aes_jax.train.task import RolloutTask

    workdir = Path(WORKDIR.value)
    EngineConfig.from_config(config)  # bad engine settings fail before anything is written
    changes = check_resume(workdir, json.loads(text), ALLOW_CHANGES.value)
    task = tasks.build(config, workdir)  # cheap, writes nothing; checks the task's fields
    if jax.process_index() == 0:
        record_config(workdir, text, changes, latest_step(workdir) or 0)
    if isinstance(task, PreparesData):  # e.g. the demo dataset when the config names none
        task.prepare_data()
    try:
        if isinstance(task, StagedTask):  # each stage by the one loop, in WORKDIR/<stage>
            for stage in task.stages():
                loop.train(stage.task, stage.engine, workdir / stage.name)
            task.finish()
        elif isinstance(task, RolloutTask):  # trained online (PPO / GRPO)
            rl_loop.train_rl(task, config, workdir)
        else:
            loop.train(task, config, workdir)
    except TrainingInterrupted as e:
        print(str(e), file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    if jax.process_index() == 0:
        print(f"run directory: {workdir}")


if __name__ == "__main__":
    cli.run(main)
