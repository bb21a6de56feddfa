"""Evaluate a training run on a split; writes RUN/eval/ (metrics JSON, predictions CSV,
confusion matrices per prompt, learning curve).

    python -m launch.evaluate --run=WORKDIR [--split=test] [--step=N] [--ema]
"""

import json

from absl import app, flags, logging

RUN = flags.DEFINE_string("run", None, "Training run directory.", required=True)
SPLIT = flags.DEFINE_string("split", "test", "Dataset split to evaluate.")
STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
EMA = flags.DEFINE_bool("ema", False, "Evaluate the EMA params.")
OUT = flags.DEFINE_string("out", None, "Output directory; default RUN/eval.")


def main(argv):
    del argv
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from aes_jax.runs import evaluate_run

    result = evaluate_run(RUN.value, SPLIT.value, STEP.value, EMA.value, OUT.value)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
