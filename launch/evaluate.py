"""Evaluate a training run on a split; writes RUN/eval/ (metrics JSON, predictions CSV,
confusion matrices per prompt, learning curve) and prints the metrics as a table.

    python -m launch.evaluate --run=WORKDIR [--split=test] [--step=best|last|N] [--ema]
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from absl import flags

from launch import cli

RUN = flags.DEFINE_string("run", None, "Training run directory.", required=True)
SPLIT = flags.DEFINE_string("split", "test", "Dataset split to evaluate.")
STEP = cli.define_step_flag()
EMA = flags.DEFINE_bool("ema", False, "Evaluate the EMA params.")
OUT = flags.DEFINE_string("out", None, "Output directory; default RUN/eval.")

_ABOUT = ("run", "split", "step", "ema", "files")


def metrics_table(result: Mapping[str, Any]) -> list[str]:
    """The metrics of `evaluate_run` as aligned `name  value` lines (4 decimals)."""
    from aes_jax.eval.tables import aligned

    def shown(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4f}"
        return str(v)

    rows = [["metric", result["split"]]]
    rows += [[k, shown(v)] for k, v in result.items() if k not in _ABOUT]
    return aligned(rows)


def main(argv):
    del argv
    from aes_jax.runs import checkpointed_task, evaluate_run, load_run

    # A staged run (Pair2Score) is evaluated on its final stage's checkpoints.
    _, ckpt_dir = checkpointed_task(RUN.value, load_run(RUN.value)[1])
    step = cli.chosen_step(str(ckpt_dir), STEP.value)
    result = evaluate_run(RUN.value, SPLIT.value, step, EMA.value, OUT.value)
    print(f"{RUN.value}, step {result['step']}{' (EMA)' if EMA.value else ''}, "
          f"split {SPLIT.value}:")
    for line in metrics_table(result):
        print("  " + line)
    for path in result["files"]:
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
