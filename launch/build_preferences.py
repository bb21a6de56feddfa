"""Preference pairs for DPO from the SFT generator and the verifier.

    python -m launch.build_preferences --generator_run=runs/sft --verifier_run=runs/verifier \
        --output_dir=prefs [--questions=bank.jsonl] [--nli_model=DIR]

For each question: one candidate per --temperatures (top-p 0.95, top-k 50, repetition
penalty 1.1 by default), the gold explanation added, all scored by the verifier (or the
hybrid 0.5 NLI entailment + 0.5 (verifier - 1) / 4 with --nli_model); chosen = best,
rejected = worst, kept when the gap >= --min_score_gap; --hard_negative_share of the
questions get a hard negative (the generator told a wrong option is correct) as rejected.
Writes DIR/pairs.jsonl (TRL's prompt/chosen/rejected columns + scores + source) and
DIR/stats.json (pairs kept, dropped, gap histogram, hard-negative share, questions/s).
Then: python -m launch.train --config=configs/rlearner_dpo.py \
    --config.data.pairs_file=DIR/pairs.jsonl --config.dpo.sft_adapter=SFT_EXPORT/adapter
"""

from __future__ import annotations

from absl import flags

from launch import cli

GENERATOR_RUN = flags.DEFINE_string("generator_run", None, "The SFT (explain_sft) run dir.",
                                    required=True)
VERIFIER_RUN = flags.DEFINE_string("verifier_run", None, "The explain_verifier run dir.",
                                   required=True)
QUESTIONS = flags.DEFINE_string("questions", "", "Question bank JSONL or the original's JSON; "
                                "empty = the demo bank's --split.")
SPLIT = flags.DEFINE_enum("split", "train", ["train", "test", "all"], "Demo bank split.")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where pairs.jsonl and stats.json go.",
                                 required=True)
TEMPERATURES = flags.DEFINE_list("temperatures", ["0.3", "0.5", "0.7", "0.9", "1.1", "1.3"],
                                 "One candidate per temperature.")
TOP_P = flags.DEFINE_float("top_p", 0.95, "Nucleus sampling mass.")
TOP_K = flags.DEFINE_integer("top_k", 50, "Top-k filter (0 = off).")
REPETITION_PENALTY = flags.DEFINE_float("repetition_penalty", 1.1, "1.0 = off.")
MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 160, "Tokens per candidate.")
MIN_SCORE_GAP = flags.DEFINE_float("min_score_gap", 0.3, "Keep a pair when best - worst >= it.")
HARD_NEGATIVE_SHARE = flags.DEFINE_float("hard_negative_share", 0.2, "Share of questions "
                                         "with a wrong-option explanation as rejected.")
NO_GOLD = flags.DEFINE_bool("no_gold", False, "Leave the human explanation out of the pool.")
NLI_MODEL = flags.DEFINE_string("nli_model", "", "A local HF NLI cross-encoder dir: hybrid score.")
BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Questions per generation batch.")
SEED = flags.DEFINE_integer("seed", 0, "Sampling and hard-negative seed.")
STEP = cli.define_step_flag()


def main(argv):
    del argv
    from aes_jax.data.explanations import load_questions
    from aes_jax.eval.explainer import Explainer
    from aes_jax.eval.preference_builder import BuildOptions, build_preferences

    try:
        temperatures = tuple(float(t) for t in TEMPERATURES.value)
    except ValueError:
        cli.fail(f"--temperatures={','.join(TEMPERATURES.value)}: expected numbers")
    options = BuildOptions(temperatures=temperatures, top_p=TOP_P.value, top_k=TOP_K.value,
                           repetition_penalty=REPETITION_PENALTY.value,
                           max_new_tokens=MAX_NEW_TOKENS.value, include_gold=not NO_GOLD.value,
                           min_score_gap=MIN_SCORE_GAP.value,
                           hard_negative_share=HARD_NEGATIVE_SHARE.value, seed=SEED.value,
                           batch_size=BATCH_SIZE.value)
    questions = load_questions(QUESTIONS.value or None, SPLIT.value)
    explainer = Explainer.from_runs({"sft": GENERATOR_RUN.value}, VERIFIER_RUN.value,
                                    STEP.value or None)
    nli = None
    if NLI_MODEL.value:
        from aes_jax.interop.torch_ref.text_scorers import NliScorer

        nli = NliScorer(NLI_MODEL.value)
    _, stats = build_preferences(explainer, questions, options, OUTPUT_DIR.value, nli=nli)
    print(f"{stats['pairs']} pairs from {stats['questions']} questions "
          f"({stats['dropped_small_gap']} dropped: gap < {options.min_score_gap:g}; "
          f"{stats['hard_negatives']} hard negatives; {stats['questions_per_s']:.2f} "
          f"questions/s) -> {OUTPUT_DIR.value}/pairs.jsonl, stats.json")


if __name__ == "__main__":
    cli.run(main)
