"""Score essays with a trained run and write a CSV: new essays from a file, or a split of
the run's dataset (with gold scores, so metrics are written too).

    python -m launch.score --ckpt=RUN_DIR essays.tsv|essays.jsonl [--out=scores.csv]
    python -m launch.score --ckpt=RUN_DIR --split=test [--out=scores.csv] [--limit=N]
        [--step=N] [--ema] [--batch_size=32] [--full_answer]

The file format is the task's:
- TRM-AES: a tab-separated file with a header holding at least essay_id, essay_set and
  essay (the official ASAP layout qualifies; score columns, if any, are ignored). The CSV
  holds essay_id, prompt, [gold,] predicted_raw, predicted.
- LLaMA-AES: a JSONL file in the PyTorch original's format ({"instruction", "output"};
  "output" may be empty when the gold scores are unknown). Answers are decoded greedily;
  the CSV holds per trait the gold digit, the greedy answer's digit and the expected-score
  digit (probability-weighted mean over the digit tokens at the step that wrote the score,
  rounded), plus the raw text. Both read each trait from the same generated token (the
  one where the parser found its digit); a trait the parser cannot read (or a digit out
  of range) is unreadable for both, counted, and gets the most frequent training digit
  (printed; self-consistency banks record the same digits).
With gold scores a metrics JSON is written beside the CSV (LLaMA-AES: `expected.mcrmse`
on the rounded expected digits, `expected.mcrmse_continuous` on the unrounded values).
"""

import json
from pathlib import Path

from absl import app, flags, logging

CKPT = flags.DEFINE_string("ckpt", None, "Training run directory (config.json, checkpoints/).",
                           required=True)
OUT = flags.DEFINE_string("out", None, "Output CSV; default <input>.scores.csv, or "
                          "RUN/eval/scores_<split>.csv with --split.")
STEP = flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
EMA = flags.DEFINE_bool("ema", False, "Use the EMA params.")
BATCH = flags.DEFINE_integer("batch_size", 32, "Essays per forward pass / generation batch.")
SPLIT = flags.DEFINE_string("split", None, "Score this split of the run's dataset instead of "
                            "a file.")
LIMIT = flags.DEFINE_integer("limit", 0, "Only the first N essays; 0 = all.")
FULL_ANSWER = flags.DEFINE_bool("full_answer", False, "Generative scorers (llama_aes): "
                                "generate the feedback too (default: stop at the end of the "
                                "score line).")


def main(argv):
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from aes_jax.runs import load_run, restore_params
    from aes_jax.tasks.capabilities import Scorer

    if SPLIT.value and len(argv) > 1:
        raise app.UsageError("give --split or one essays file, not both")
    if not SPLIT.value and len(argv) != 2:
        raise app.UsageError("give --split=NAME or exactly one essays file")
    config, task = load_run(CKPT.value)
    if not isinstance(task, Scorer):
        raise app.UsageError(f"{CKPT.value}: task {config.task!r} does not score essays")
    if SPLIT.value:
        essays = task.split_essays(SPLIT.value, limit=LIMIT.value)
        out = Path(OUT.value or Path(CKPT.value) / "eval" / f"scores_{SPLIT.value}.csv")
    else:
        essays = task.read_essays(argv[1], limit=LIMIT.value)
        out = Path(OUT.value) if OUT.value else Path(argv[1]).with_suffix(".scores.csv")
    step, trainable, frozen = restore_params(CKPT.value, config, task, STEP.value, EMA.value)
    scored = task.score(trainable, frozen, essays, batch_size=BATCH.value,
                        full_answer=FULL_ANSWER.value)
    report = task.write_scores(scored, out, {"run": CKPT.value, "step": step})
    print(json.dumps(report, indent=2))
    print(f"scored {len(essays)} essays with {CKPT.value} (step {step}) -> {out}")


if __name__ == "__main__":
    app.run(main)
