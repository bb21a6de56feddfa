"""Explanations for multiple-choice questions from a trained generator (an SFT, DPO or PPO
run), in one shot or with the ILearner K-round loop (generate, verify, re-prompt with the
score).

    python -m launch.explain --generator_run=runs/sft --output=out/sft_test.jsonl
    python -m launch.explain --generator_run=runs/dpo --questions=my_questions.json \
        --output=out/dpo.jsonl
    python -m launch.explain --generator_run=runs/sft --verifier_run=runs/verifier \
        --ilearner_k=3 --output=out/ilearner3.jsonl

--questions: a question-bank JSONL (aes_jax/data/mcq.py), the original's JSON list
({"instruction", "input", "output"}), or empty = the packaged demo bank's --split (test:
the questions no demo training run saw). Output: one JSON object per question, {"id",
"explanation", "seconds", "generator"} (+ "rounds" for ILearner), and a one-line summary
with the mean latency per question.
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import flags

from launch import cli

GENERATOR_RUN = flags.DEFINE_string("generator_run", "", "An explain_sft, dpo or ppo run dir; "
                                    "empty = the base model without an adapter (needs "
                                    "--verifier_run for its model).")
VERIFIER_RUN = flags.DEFINE_string("verifier_run", "", "An explain_verifier run dir (needed "
                                   "for --ilearner_k).")
QUESTIONS = flags.DEFINE_string("questions", "", "Question bank JSONL or the original's JSON; "
                                "empty = the demo bank's --split.")
SPLIT = flags.DEFINE_enum("split", "test", ["train", "test", "all"], "Demo bank split.")
OUTPUT = flags.DEFINE_string("output", None, "Output JSONL.", required=True)
ILEARNER_K = flags.DEFINE_integer("ilearner_k", 0, "0 = one-shot; K >= 1 = ILearner rounds.")
TEMPERATURE = flags.DEFINE_float("temperature", 0.0, "0 = greedy.")
TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus sampling mass.")
TOP_K = flags.DEFINE_integer("top_k", 0, "0 = off.")
REPETITION_PENALTY = flags.DEFINE_float("repetition_penalty", 1.1, "1.0 = off.")
MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 160, "Tokens per explanation.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Questions per generation batch.")
SEED = flags.DEFINE_integer("seed", 0, "Sampling seed.")
MAX_PROMPT_TOKENS = flags.DEFINE_integer("max_prompt_tokens", 0, "Prompt tokens kept (the "
                                         "end); 0 = the generator run's.")
STEP = cli.define_step_flag()


def main(argv):
    del argv
    import jax

    from aes_jax.data.explanations import load_questions
    from aes_jax.eval.explainer import Explainer
    from aes_jax.eval.generate import SamplingConfig

    if ILEARNER_K.value and not VERIFIER_RUN.value:
        cli.fail("--ilearner_k needs --verifier_run (the loop prompts with the verifier's score)")
    if not GENERATOR_RUN.value and not VERIFIER_RUN.value:
        cli.fail("give --generator_run (or --verifier_run, for the base model without adapter)")
    questions = load_questions(QUESTIONS.value or None, SPLIT.value)
    generators = {"model": GENERATOR_RUN.value} if GENERATOR_RUN.value else {}
    explainer = Explainer.from_runs(generators, VERIFIER_RUN.value or None, STEP.value or None,
                                    max_prompt_tokens=MAX_PROMPT_TOKENS.value or None)
    name = "model" if GENERATOR_RUN.value else "base"
    sampling = SamplingConfig(max_new_tokens=MAX_NEW_TOKENS.value, temperature=TEMPERATURE.value,
                              top_k=TOP_K.value, top_p=TOP_P.value,
                              repetition_penalty=REPETITION_PENALTY.value)
    rng = jax.random.key(SEED.value)
    if ILEARNER_K.value:
        results = explainer.ilearner(questions, ILEARNER_K.value, name, sampling, rng,
                                     BATCH_SIZE.value)
    else:
        results = explainer.explain(questions, name, sampling, rng, BATCH_SIZE.value)
    out = Path(OUTPUT.value)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as f:
        for q, r in zip(questions, results):
            row = {"id": q.id, "explanation": r.text, "seconds": r.seconds,
                   "generator": GENERATOR_RUN.value or "base"}
            if r.rounds:
                row["rounds"] = list(r.rounds)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    mean = sum(r.seconds for r in results) / max(len(results), 1)
    print(f"{len(results)} explanations -> {out} ({mean:.3f} s per question"
          f"{f', ILearner K={ILEARNER_K.value}' if ILEARNER_K.value else ''})")


if __name__ == "__main__":
    cli.run(main)
