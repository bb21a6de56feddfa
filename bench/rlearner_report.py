"""The RLearner benchmark's report: explanation metrics per model with paired intervals
against SFT, what DPO and PPO did and did not improve, PPO's reward and time per iteration, preference-pair stats, DPO speed with and
without precomputed reference log-probs, and the original's Cardiff table. `--from_json`
re-prints a saved run: python -m bench.rlearner_report --from_json=OUT/results.json"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from absl import app, flags

from aes_jax.eval import explanation_metrics as em

SHOWN = ("verifier", "bertscore_human", "bertscore_answer", "bleu", "answer_coverage",
         "mean_words", "seconds_per_question")


def _f(x: Any, digits: int = 3) -> str:
    return "-" if x is None else (f"{x:.{digits}f}" if isinstance(x, float) else str(x))


def verdicts(results: dict) -> list[str]:
    """One line per DPO model and metric: better / worse / not separable from SFT."""
    lines = []
    for name, by_metric in results["intervals_vs_sft"].items():
        if not name.startswith("dpo_") and name != "ppo":
            continue
        for metric, (mean, lo, hi) in by_metric.items():
            word = ("better than SFT" if lo > 0 else "worse than SFT" if hi < 0
                    else "not separable from SFT")
            lines.append(f"{name} {metric}: {mean:+.3f} [{lo:+.3f}, {hi:+.3f}] -> {word}")
    return lines


def markdown(results: dict) -> str:
    m = results["metrics"]
    rows = ["| model | " + " | ".join(SHOWN) + " | verifier - SFT [95%] | BERTScore - SFT [95%] |",
            "|" + "---|" * (len(SHOWN) + 3)]
    for name, r in m.items():
        iv = results["intervals_vs_sft"].get(name, {})
        cells = [_f(r.get(k)) for k in SHOWN]
        extra = [f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]" if v else "-"
                 for v in (iv.get("verifier"), iv.get("bertscore_human"))]
        rows.append(f"| {name} | " + " | ".join(cells + extra) + " |")
    speed = results["dpo_speed"]
    srows = ["| DPO run | steps/s | tokens/s | eval loss | eval reward accuracy |", "|---|---|---|---|---|"]
    for name, s in speed.items():
        ev = s.get("eval", {})
        srows.append(f"| {name} | {_f(s.get('steps_per_s'))} | {_f(s.get('tokens_per_s'), 1)} | "
                     f"{_f(ev.get('eval_loss'))} | {_f(ev.get('eval_rewards/accuracies'))} |")
    per, pre = speed.get("sigmoid", {}), speed.get("sigmoid_precomputed", {})
    ratio = (pre.get("steps_per_s", 0) / per["steps_per_s"]) if per.get("steps_per_s") else None
    p = results["preferences"]
    ref = results["reference"]
    out = [f"# RLearner benchmark ({results['model']})", "",
           "Settings: " + ", ".join(f"{k}={v}" for k, v in results["settings"].items()), "",
           "## Explanations of the held-out demo questions", "", *rows, "",
           "`human` is the reference explanation itself (the ceiling of BLEU/BERTScore); "
           "`answer_text` states the correct option only; `base` is the model without an "
           "adapter. Intervals: paired bootstrap over questions.", "",
           "## What DPO and PPO did", "", *[f"- {line}" for line in verdicts(results)], "",
           "## Preference pairs", "",
           f"{p['pairs']} pairs from {p['questions']} questions ({p['dropped_small_gap']} "
           f"dropped: gap < {p['min_score_gap']}), {p['hard_negatives']} hard negatives, "
           f"mean gap {p['mean_gap']:.2f}, gaps {p['gap_histogram']}, "
           f"{p['questions_per_s']:.3f} questions/s."
           + (f" DPO trained on {p['dpo_trained_on']}." if p.get("dpo_trained_on") else ""), "",
           "## DPO speed", "", *srows, "",
           f"Precomputed reference log-probs: {_f(ratio, 2)}x the steps/s of the per-step "
           "reference." if ratio else "", "",
           *ppo_lines(results.get("ppo")),
           "## Wall time per run (s)", "",
           ", ".join(f"{k} {v:.0f}" for k, v in results["walls"].items()), "",
           "## The original (Cardiff table, LLaMA-2-13B)", "",
           *[f"- {k}: verifier {v[0]}, BERTScore {v[1]}, {v[2]} s per question"
             for k, v in ref.items()], ""]
    return "\n".join(out)


def ppo_lines(ppo: dict | None) -> list[str]:
    if not ppo:
        return []
    evals = ", ".join(f"iteration {k}: {v:.3f}" for k, v in ppo["eval"].items())
    return ["## PPO", "",
            f"{ppo['iterations']} iterations ({ppo['updates']} optimiser updates); rollout "
            f"reward {ppo['reward_first']:.3f} at iteration 1 -> {ppo['reward_last']:.3f} at "
            f"the last, KL to SFT {ppo['kl_last']:.4f}; held-out greedy reward {evals}. "
            f"Median per iteration: {ppo['iteration_s']:.1f} s = rollout "
            f"{ppo['rollout_s']:.1f} s ({ppo['rollout_tokens_per_s']:.1f} generated tokens/s) "
            f"+ scoring {ppo['score_s']:.1f} s + updates {ppo['update_s']:.1f} s "
            f"({ppo['tokens_per_s']:.1f} tokens/s). Reward curve: {ppo['curve']}.", ""]


def write_report(results: dict, out: Path) -> list[Path]:
    written = em.write_report(results["metrics"], out / "explanations",
                              notes=["see report.md"])
    path = out / "report.md"
    path.write_text(markdown(results) + "\n")
    print(markdown(results))
    return [path, *written]


FROM_JSON = flags.DEFINE_string("from_json", None, "A results.json of bench.rlearner_quality.")


def main(argv):
    del argv
    print(markdown(json.loads(Path(FROM_JSON.value).read_text())))


if __name__ == "__main__":
    app.run(main)
