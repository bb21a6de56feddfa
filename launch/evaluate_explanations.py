"""Scores explanation files from launch.explain, side by side, against the questions.

    python -m launch.evaluate_explanations --predictions=sft=out/sft.jsonl,dpo=out/dpo.jsonl \
        --verifier_run=runs/verifier [--nli_model=DIR] --out=out/explanations

Metrics per model (aes_jax/eval/explanation_metrics.py): sentence BLEU and BERTScore F1
against the human explanation, BERTScore F1 against the correct option, answer coverage,
verifier score, NLI entailment (with --nli_model), seconds per question. Writes OUT.json,
OUT.md and OUT.png (bar chart). BERTScore runs on --bertscore_model, by default the
packaged MiniLM (the only encoder available offline).
"""

from __future__ import annotations

from absl import flags

from launch import cli

PREDICTIONS = flags.DEFINE_list("predictions", None, "name=path.jsonl entries.", required=True)
QUESTIONS = flags.DEFINE_string("questions", "", "Question bank JSONL or the original's JSON; "
                                "empty = the demo bank's --split.")
SPLIT = flags.DEFINE_enum("split", "test", ["train", "test", "all"], "Demo bank split.")
VERIFIER_RUN = flags.DEFINE_string("verifier_run", "", "An explain_verifier run dir.")
NLI_MODEL = flags.DEFINE_string("nli_model", "", "A local HF NLI cross-encoder dir.")
BERTSCORE_MODEL = flags.DEFINE_string("bertscore_model", "", "Local encoder dir for BERTScore; "
                                      "empty = the packaged MiniLM; 'none' = skip it.")
OUT = flags.DEFINE_string("out", None, "Output prefix (.json/.md/.png).", required=True)
STEP = cli.define_step_flag()


def main(argv):
    del argv
    from aes_jax.data.explanations import load_questions
    from aes_jax.eval import explanation_metrics as em

    questions = {q.id: q for q in load_questions(QUESTIONS.value or None, SPLIT.value)}
    files = {}
    for entry in PREDICTIONS.value:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            cli.fail(f"--predictions entry {entry!r}: expected name=path.jsonl")
        files[name] = path
    verifier = nli = bert = None
    if VERIFIER_RUN.value:
        from aes_jax.eval.explainer import Explainer

        verifier = Explainer.from_runs({}, VERIFIER_RUN.value, STEP.value or None).score
    if NLI_MODEL.value:
        from aes_jax.interop.torch_ref.text_scorers import NliScorer

        nli = NliScorer(NLI_MODEL.value)
    if BERTSCORE_MODEL.value != "none":
        from aes_jax.interop import assets
        from aes_jax.interop.torch_ref.text_scorers import BertScore

        bert = BertScore(BERTSCORE_MODEL.value or assets.minilm_dir())
    results = {}
    for name, path in files.items():
        rows = em.read_predictions(path)
        missing = [r["id"] for r in rows if r["id"] not in questions]
        if missing:
            cli.fail(f"{path}: {len(missing)} ids are not among the questions (first: "
                     f"{missing[0]!r}); pass the same --questions / --split as launch.explain")
        qs = [questions[r["id"]] for r in rows]
        results[name] = em.evaluate_model(
            qs, [r["explanation"] for r in rows], [float(r.get("seconds", 0.0)) for r in rows],
            verifier=verifier, bertscore=bert, nli=nli)
    notes = [f"{name}: {files[name]}" for name in files]
    for path in em.write_report(results, OUT.value, notes):
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
