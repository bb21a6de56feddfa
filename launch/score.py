"""Score essays with a trained run and write a CSV: new essays from a file, or a split of
the run's dataset (with gold scores, so metrics are written too).

    python -m launch.score --ckpt=RUN_DIR essays.tsv|essays.jsonl [--out=scores.csv]
        [--strict] [--encoding=auto]
    python -m launch.score --ckpt=RUN_DIR --split=test [--out=scores.csv] [--limit=N]
        [--step=best|last|N] [--ema] [--batch_size=32] [--full_answer]

The file format is the task's:
- TRM-AES: a tab-separated file with a header holding at least essay_id, essay_set and
  essay (the official ASAP layout qualifies; score columns, if any, are ignored), read as
  launch.build_dataset reads ASAP files (aes_jax/data/essays_tsv.py): a quote is text
  unless the whole field is quoted (a quoted essay may span lines); when essay is the
  last column, tabs inside it are kept. Rows that cannot be scored (too few/many columns,
  a non-integer essay_id or essay_set, an empty essay, a prompt the model was not trained
  on, a repeated essay_id) are skipped and counted, or stop the run with --strict. The
  CSV holds essay_id, prompt, [gold,] predicted_raw, predicted.
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
For an essays file the printed report (and metrics JSON) has an "input" entry: rows read,
essays, rows skipped per reason with file:line examples, how the lines were decoded.
Every row of the file is in the CSV or counted there.
"""

import json
from pathlib import Path

from absl import app, flags

from aes_jax.data.read_report import skip_lines
from launch import cli

CKPT = flags.DEFINE_string("ckpt", None, "Training run directory (config.json, checkpoints/).",
                           required=True)
OUT = flags.DEFINE_string("out", None, "Output CSV; default <input>.scores.csv, or "
                          "RUN/eval/scores_<split>.csv with --split.")
STEP = cli.define_step_flag()
EMA = flags.DEFINE_bool("ema", False, "Use the EMA params.")
BATCH = flags.DEFINE_integer("batch_size", 32, "Essays per forward pass / generation batch.")
SPLIT = flags.DEFINE_string("split", None, "Score this split of the run's dataset instead of "
                            "a file.")
LIMIT = flags.DEFINE_integer("limit", 0, "Only the first N essays; 0 = all.")
FULL_ANSWER = flags.DEFINE_bool("full_answer", False, "Generative scorers (llama_aes): "
                                "generate the feedback too (default: stop at the end of the "
                                "score line).")
STRICT = flags.DEFINE_bool("strict", False, "Essays file: stop at the first row that cannot "
                           "be scored (naming file:line) instead of skipping and counting it.")
ENCODING = flags.DEFINE_string("encoding", "auto", "Essays file: 'auto' reads UTF-8, and the "
                               "bytes that are not valid UTF-8 as cp1252; a codec name "
                               "reads every line with it (undecodable bytes become U+FFFD, "
                               "counted).")


def _input_summary(report: dict) -> str:
    """The read report as lines, like launch.build_dataset's summary."""
    lines = []
    for f in report["files"]:
        decoded = ", ".join(f"{c} {n}" for c, n in f["decoded_lines"].items())
        lines.append(f"read {f['path']}: {f['rows']} rows, {f['essays']} essays"
                     + (f", {f['blank_lines']} blank lines" if f["blank_lines"] else "")
                     + (f"; lines decoded: {decoded}" if decoded else ""))
        if f["replacement_chars"]:
            lines.append(f"  undecodable bytes replaced by U+FFFD: {f['replacement_chars']}")
    lines += skip_lines(report)
    if report.get("not_scored_beyond_limit"):
        lines.append(f"  not scored (beyond --limit): {report['not_scored_beyond_limit']}")
    return "\n".join(lines)


def main(argv):
    from aes_jax.runs import load_run, restore_params
    from aes_jax.tasks.capabilities import Scorer

    if SPLIT.value and len(argv) > 1:
        raise app.UsageError("give --split or one essays file, not both")
    if not SPLIT.value and len(argv) != 2:
        raise app.UsageError("give --split=NAME or exactly one essays file")
    if SPLIT.value and (STRICT.present or ENCODING.present):
        raise app.UsageError("--strict and --encoding apply to an essays file, not --split")
    config, task = load_run(CKPT.value)
    if not isinstance(task, Scorer):
        raise app.UsageError(f"{CKPT.value}: task {config.task!r} does not score essays")
    read_report = None
    if SPLIT.value:
        essays = task.split_essays(SPLIT.value, limit=LIMIT.value)
        out = Path(OUT.value or Path(CKPT.value) / "eval" / f"scores_{SPLIT.value}.csv")
    else:
        read = task.read_essays(argv[1], limit=LIMIT.value, strict=STRICT.value,
                                encoding=ENCODING.value)
        essays, read_report = read.essays, read.report
        out = Path(OUT.value) if OUT.value else Path(argv[1]).with_suffix(".scores.csv")
    step, trainable, frozen = restore_params(CKPT.value, config, task,
                                             cli.chosen_step(CKPT.value, STEP.value), EMA.value)
    scored = task.score(trainable, frozen, essays, batch_size=BATCH.value,
                        full_answer=FULL_ANSWER.value)
    meta = {"run": CKPT.value, "step": step}
    if read_report is not None:
        meta["input"] = read_report
    report = task.write_scores(scored, out, meta)
    print(json.dumps(report, indent=2))
    if read_report is not None:
        print(_input_summary(read_report))
    print(f"scored {len(essays)} essays with {CKPT.value} (step {step}) -> {out}")


if __name__ == "__main__":
    cli.run(main)
