"""A trained StepER run answers multi-hop questions: its stepwise loop (retrieve, reason,
re-query with the last step, aggregate) next to the single-step retrieval (vanilla KD)
and no-retrieval baselines, with EM / F1 / Acc (official HotpotQA normalisation), mean
steps and latency per question.

    python -m launch.answer --run=runs/steper_demo --split=test --output=out/answers.jsonl
    python -m launch.answer --run=runs/steper_hotpot --questions=hotpot_dev.json \
        --output=out/hotpot_answers.jsonl [--modes=stepwise] [--limit=500]

Writes ANSWERS.jsonl (per question and mode: every step with its passages, the answer,
EM, F1, seconds), ANSWERS.metrics.json and ANSWERS.png, and prints the table.
"""

from __future__ import annotations

from absl import flags

from launch import cli

RUN = flags.DEFINE_string("run", None, "A steper training run dir.", required=True)
STEP = cli.define_step_flag()
SPLIT = flags.DEFINE_string("split", "test", "The records' split whose questions to answer.")
QUESTIONS = flags.DEFINE_string("questions", "", "HotpotQA / 2Wiki JSON or MuSiQue JSONL "
                                "instead of --split.")
OUTPUT = flags.DEFINE_string("output", None, "ANSWERS.jsonl path.", required=True)
MODES = flags.DEFINE_list("modes", ["stepwise", "single", "none"], "stepwise | single "
                          "(one retrieval, vanilla KD) | none (no retrieval).")
RETRIEVER = flags.DEFINE_enum("retriever", "bm25", ["bm25", "dense"], "bm25 (the records' "
                              "index) or dense (MiniLM over the same passages).")
K = flags.DEFINE_integer("k", 0, "Passages per step (0 = the run's data.k).")
MAX_STEPS = flags.DEFINE_integer("max_steps", 5, "Steps in all (init, expansions, aggregation).")
BATCH = flags.DEFINE_integer("batch_size", 8, "Questions per generation batch.")
LIMIT = flags.DEFINE_integer("limit", 0, "Questions (0 = all).")


def main(argv):
    del argv
    from aes_jax.eval import steper_answers as sa

    examples = sa.questions_for(RUN.value, SPLIT.value, QUESTIONS.value, LIMIT.value)
    if not examples:
        cli.fail("no questions to answer")
    answerer = sa.answerer_for(RUN.value, cli.chosen_step(RUN.value, STEP.value),
                               k=K.value or None, max_steps=MAX_STEPS.value,
                               batch_size=BATCH.value, retriever=RETRIEVER.value)
    metrics, traces = sa.evaluate(answerer, examples, MODES.value)
    for line in sa.table_lines(metrics):
        print(line)
    for path in sa.write_answers(OUTPUT.value, examples, traces, metrics):
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
