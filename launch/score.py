"""Score essays with a trained run and write a CSV.

TRM-AES runs score a TSV of new essays:

    python -m launch.score --ckpt=RUN_DIR essays.tsv [--out=scores.csv] [--step=N] [--ema]

essays.tsv: tab-separated with a header holding at least essay_id, essay_set and essay
(the official ASAP layout qualifies; score columns, if any, are ignored).

LLaMA-AES runs decode greedily, either a split of the run's dataset or a JSONL file in the
PyTorch original's format ({"instruction", "output"}; "output" may be empty when the gold
scores are unknown):

    python -m launch.score --ckpt=RUN_DIR --split=test [--out=scores.csv] [--limit=N]
    python -m launch.score --ckpt=RUN_DIR essays.jsonl

The CSV holds per trait the gold digit, the greedy answer's digit and the expected-score
digit (probability-weighted mean over the digit tokens at the step that wrote the score,
rounded), plus the raw text. Unreadable answers are counted; their traits get the most
frequent training digit (printed). With gold scores a metrics JSON is written beside it.
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
BATCH = flags.DEFINE_integer("batch_size", 32, "Essays per forward pass / generation batch.")
SPLIT = flags.DEFINE_string("split", None, "llama_aes: score this split of the run's dataset "
                            "instead of a file.")
LIMIT = flags.DEFINE_integer("limit", 0, "llama_aes: only the first N essays; 0 = all.")
FULL_ANSWER = flags.DEFINE_bool("full_answer", False, "llama_aes: generate the feedback too "
                                "(default: stop at the end of the score line).")
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


def score_generative(config, task, argv) -> None:
    """LLaMA-AES: greedy + expected-score decoding of a split or a JSONL file."""
    import json

    from aes_jax.eval import llm_scoring
    from aes_jax.eval.run_eval import restore_params

    if SPLIT.value and len(argv) > 1:
        raise app.UsageError("give --split or a JSONL file, not both")
    if SPLIT.value:
        inputs = task.scoring_inputs(SPLIT.value, limit=LIMIT.value)
        out = Path(OUT.value) if OUT.value else Path(CKPT.value) / "eval" / f"scores_{SPLIT.value}.csv"
    elif len(argv) == 2:
        inputs = task.jsonl_inputs(argv[1], limit=LIMIT.value)
        out = Path(OUT.value) if OUT.value else Path(argv[1]).with_suffix(".scores.csv")
    else:
        raise app.UsageError("give --split=NAME or one JSONL file")
    step, trainable, frozen = restore_params(CKPT.value, config, task, STEP.value, EMA.value)
    result = llm_scoring.score_inputs(task, trainable, frozen, inputs, BATCH.value,
                                      config.sampling.max_new_tokens,
                                      score_line_only=not FULL_ANSWER.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    llm_scoring.write_scores_csv(task, result, out)
    report = {"run": CKPT.value, "step": step, **llm_scoring.scoring_report(task, result)}
    print(json.dumps(report, indent=2))
    if report["num_with_gold"]:
        out.with_suffix(".metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"scored {len(inputs)} essays with {CKPT.value} (step {step}) -> {out}")


def main(argv):
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from aes_jax.data import pipeline
    from aes_jax.eval.run_eval import load_run, restore_params, write_predictions_csv

    config, task = load_run(CKPT.value)
    if hasattr(task, "scoring_inputs"):
        return score_generative(config, task, argv)
    if len(argv) != 2:
        raise app.UsageError("give exactly one essays TSV file")
    path = Path(argv[1])
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
