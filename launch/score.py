"""Score new essays with a trained TRM-AES run and write a CSV.

    python -m launch.score --ckpt=RUN_DIR essays.tsv [--out=scores.csv] [--step=N] [--ema]

essays.tsv: tab-separated with a header holding at least essay_id, essay_set and essay
(the official ASAP layout qualifies; score columns, if any, are ignored).
"""

import csv
import sys
from pathlib import Path

import jax
from absl import app, flags, logging

CKPT = flags.DEFINE_string("ckpt", None, "Training run directory (config.json, checkpoints/).",
                           required=True)
OUT = flags.DEFINE_string("out", None, "Output CSV; default <input>.scores.csv.")
STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
EMA = flags.DEFINE_bool("ema", False, "Use the EMA params.")
BATCH = flags.DEFINE_integer("batch_size", 32, "Essays per forward pass.")
REQUIRED = ("essay_id", "essay_set", "essay")


def read_essays(path: Path) -> list[tuple[int, int, str]]:
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: header lacks column(s) {missing}; expected at least "
                             f"{list(REQUIRED)} (tab-separated)")
        essays = []
        for line, row in enumerate(reader, start=2):
            try:
                essays.append((int(row["essay_id"]), int(row["essay_set"]), row["essay"] or ""))
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}:{line}: essay_id and essay_set must be integers "
                                 f"({e})") from e
    if not essays:
        raise ValueError(f"{path}: no essays after the header")
    return essays


def main(argv):
    if len(argv) != 2:
        raise app.UsageError("give exactly one essays TSV file")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from aes_jax.data import pipeline
    from aes_jax.eval.run_eval import load_run, restore_params, write_predictions_csv

    path = Path(argv[1])
    config, task = load_run(CKPT.value)
    if not hasattr(task, "encode_essays"):
        raise app.UsageError(f"{CKPT.value}: task {config.task!r} does not score essays")
    step, trainable, frozen = restore_params(CKPT.value, config, task, STEP.value, EMA.value)
    records = task.encode_essays(read_essays(path))
    eval_step = jax.jit(task.eval_step)
    outputs = [jax.device_get(eval_step(trainable, frozen, batch))
               for batch in pipeline.eval_batches(records, batch_size=BATCH.value,
                                                  map_fn=task._example)]
    rows = task.predictions(outputs)
    out = Path(OUT.value) if OUT.value else path.with_suffix(".scores.csv")
    write_predictions_csv({k: v for k, v in rows.items() if k != "gold"}, out)
    print(f"scored {len(rows['essay_id'])} essays with {CKPT.value} (step {step}) -> {out}")


if __name__ == "__main__":
    app.run(main)
