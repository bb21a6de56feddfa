"""RLearner on the project-written demo bank with the packaged SmolLM2-135M-Instruct (not a
test): SFT vs DPO (sigmoid, cDPO, IPO) vs PPO vs ILearner K = 1, 3, 5, every explanation
metric and the latency per question, in one run; DPO steps/s and tokens/s with the
reference log-probs per step and precomputed; PPO's time per iteration (rollout, scoring,
updates) and its reward curve (OUT/ppo/reward_curve.png).

    python -m bench.rlearner_quality --out=bench_out/rlearner
    # CPU smoke run of the plumbing: a tiny random LLaMA, byte tokens
    python -m bench.rlearner_quality --tiny --sft_steps=4 --verifier_steps=4 --dpo_steps=4 \
        --pref_questions=8 --test_questions=4 --out=/tmp/rl_bench

Steps, in OUT/: `sft` and `verifier` (launch.train on the bank's training questions), the
SFT adapter exported (`sft_export/`), preference pairs from them (`prefs/`, on
--pref_questions training questions), one DPO run per loss on those pairs after the SFT
adapter (`dpo_<loss>/`) plus the sigmoid run with precomputed reference log-probs
(`dpo_sigmoid_precomputed/`, for speed), PPO from the SFT run with the verifier as the
reward (`ppo/`, --ppo_steps iterations of --ppo_batch rollouts), then every model explains the --test_questions
held-out questions (greedy, one base with the adapters swapped). Next to them, from the
same run: the base model without an adapter, and two trivial baselines: the correct
option's text as the explanation, and the human explanation itself (the ceiling of the
reference-based metrics). Paired bootstrap 95% intervals of each model's verifier score
and BERTScore minus SFT's. Writes OUT/report.md, OUT/results.json, OUT/explanations.png.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags, logging

from bench.table import log

OUT = flags.DEFINE_string("out", "bench_out/rlearner", "Output folder.")
TINY = flags.DEFINE_bool("tiny", False, "A tiny random LLaMA with byte tokens (smoke runs).")
SFT_STEPS = flags.DEFINE_integer("sft_steps", 30, "SFT steps.")
VERIFIER_STEPS = flags.DEFINE_integer("verifier_steps", 30, "Verifier steps.")
DPO_STEPS = flags.DEFINE_integer("dpo_steps", 10, "Steps of each DPO run.")
BATCH = flags.DEFINE_integer("batch", 8, "Global batch of SFT / verifier, generation batch.")
DPO_BATCH = flags.DEFINE_integer("dpo_batch", 4, "Pairs per DPO step (2x as many rows).")
SFT_LR = flags.DEFINE_float("sft_lr", 5e-4, "SFT / verifier peak lr.")
DPO_LR = flags.DEFINE_float("dpo_lr", 1e-4, "DPO peak lr (LoRA, a few steps: larger than "
                            "TRL's 5e-7 for full fine-tuning).")
DPO_TYPES = flags.DEFINE_list("dpo_types", ["sigmoid", "cdpo", "ipo"], "DPO losses "
                              "(cdpo = sigmoid with label smoothing 0.1).")
BETA = flags.DEFINE_float("beta", 0.1, "DPO beta.")
MIN_SCORE_GAP = flags.DEFINE_float("min_score_gap", 0.3, "Preference pairs: keep best - worst "
                                   ">= it (the original's 0.3).")
PREF_QUESTIONS = flags.DEFINE_integer("pref_questions", 40, "Training questions given "
                                      "candidates for the preference pairs (0 = all 160).")
TEMPERATURES = flags.DEFINE_list("temperatures", ["0.3", "0.5", "0.7", "0.9", "1.1", "1.3"],
                                 "One candidate per temperature.")
TEST_QUESTIONS = flags.DEFINE_integer("test_questions", 40, "Held-out questions explained "
                                      "(0 = all 40).")
DPO_PAIRS = flags.DEFINE_enum("dpo_pairs", "verifier", ["verifier", "ratings"], "DPO trains "
                              "on the verifier-ranked pairs built here, or on pairs from the "
                              "bank's human ratings (best vs worst rated explanation).")
PPO_STEPS = flags.DEFINE_integer("ppo_steps", 8, "PPO iterations (0 = no PPO run).")
PPO_BATCH = flags.DEFINE_integer("ppo_batch", 8, "Rollouts (questions) per PPO iteration.")
PPO_LR = flags.DEFINE_float("ppo_lr", 1e-4, "PPO peak lr (LoRA).")
PPO_EPOCHS = flags.DEFINE_integer("ppo_epochs", 2, "PPO epochs per iteration.")
PPO_MINIBATCHES = flags.DEFINE_integer("ppo_minibatches", 2, "PPO minibatches per epoch.")
PPO_KL = flags.DEFINE_float("ppo_kl", 0.05, "PPO KL coefficient (k1, in the reward).")
REUSE = flags.DEFINE_bool("reuse", False, "Keep finished runs and preference pairs of an "
                          "earlier call with the same --out (launch.train only reports them).")
ILEARNER_KS = flags.DEFINE_list("ilearner_ks", ["1", "3", "5"], "ILearner rounds.")
MAX_PROMPT = flags.DEFINE_integer("max_prompt_tokens", 320, "Prompt tokens (longer: the end).")
MAX_COMPLETION = flags.DEFINE_integer("max_completion_tokens", 96, "Explanation tokens.")
VERIFIER_TOKENS = flags.DEFINE_integer("verifier_tokens", 384, "Verifier input tokens.")
BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "Paired bootstrap resamples.")
SEED = flags.DEFINE_integer("seed", 0, "Sampling / bootstrap seed.")

REPO = Path(__file__).resolve().parents[1]
# The original's Cardiff table (LLaMA-2-13B), the issue: verifier, BERTScore, s/question.
REFERENCE = {"SFT": (3.20, 0.807, 19.9), "DPO v2": (3.06, 0.830, 5.8),
             "PPO (125 steps)": (3.08, 0.825, 7.2)}


def train(config: str, workdir: Path, *overrides: str) -> float:
    """launch.train in a subprocess (output in WORKDIR.log); its wall seconds (kept in
    WORKDIR.wall, which --reuse reads instead of training again)."""
    wall_path = workdir.parent / f"{workdir.name}.wall"
    if REUSE.value and wall_path.is_file():
        return float(wall_path.read_text())
    start = time.perf_counter()
    log_path = workdir.parent / f"{workdir.name}.log"
    with open(log_path, "w") as out:
        done = subprocess.run([sys.executable, "-m", "launch.train", f"--config={config}",
                               f"--workdir={workdir}", *overrides], stdout=out,
                              stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"launch.train failed ({done.returncode}) for {workdir}; see "
                           f"{log_path}")
    wall = time.perf_counter() - start
    wall_path.write_text(f"{wall}\n")
    return wall


def common_overrides(steps: int, lr: float, batch: int) -> list[str]:
    evals = max(steps // 2, 1)
    return [f"--config.total_steps={steps}", f"--config.global_batch_size={batch}",
            f"--config.eval_every={evals}", f"--config.checkpoint_every={evals}",
            f"--config.log_every={max(steps // 10, 1)}", f"--config.optimizer.lr={lr}",
            f"--config.optimizer.warmup_steps={max(steps // 10, 1)}"]


def speed(workdir: Path) -> dict[str, float]:
    """Median tokens/s and steps/s over the log windows after the first (the compile)."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    windows = [r for r in records if "tokens_per_s" in r]
    windows = windows[1:] or windows
    out = {k: float(np.median([r[k] for r in windows if k in r]))
           for k in ("tokens_per_s", "steps_per_s") if any(k in r for r in windows)}
    evals = [r for r in records if "eval_loss" in r]
    if evals:
        out["eval"] = {k: v for k, v in evals[-1].items() if k.startswith("eval_")}
    return out


def ppo_speed(workdir: Path) -> dict[str, Any]:
    """Medians over the iterations after the first (the compiles) and the reward curve."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steady = records[1:] or records
    out: dict[str, Any] = {k: float(np.median([r[k] for r in steady]))
                           for k in ("iteration_s", "rollout_s", "score_s", "update_s",
                                     "tokens_per_s", "rollout_tokens_per_s")}
    out.update(iterations=len(records), updates=int(records[-1]["optimizer_steps"]),
               reward_first=records[0]["reward_mean"], reward_last=records[-1]["reward_mean"],
               kl_last=records[-1]["kl"], curve=str(workdir / "reward_curve.png"),
               eval={r["step"]: r["eval_reward_mean"] for r in records
                     if "eval_reward_mean" in r})
    return out


def paired_interval(a: list[float], b: list[float], seed: int) -> list[float]:
    """95% bootstrap interval of mean(a - b) over questions."""
    diff = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(seed)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(BOOTSTRAP.value)]
    return [float(np.mean(diff)), float(np.percentile(means, 2.5)),
            float(np.percentile(means, 97.5))]


def main(argv):
    del argv
    import jax

    logging.set_verbosity(logging.WARNING)  # orbax logs every restore at INFO

    from aes_jax.data.explanations import load_questions
    from aes_jax.eval import explanation_metrics as em
    from aes_jax.eval.explainer import Explainer, Explanation
    from aes_jax.eval.generate import SamplingConfig
    from aes_jax.data.preferences import pairs_from_ratings, write_preferences
    from aes_jax.eval.preference_builder import BuildOptions, build_preferences
    from aes_jax.interop import assets
    from aes_jax.interop.torch_ref.text_scorers import BertScore
    from bench.rlearner_report import write_report

    out = Path(OUT.value).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tiny = ",tiny" if TINY.value else ""

    def config(name: str, arg: str = "") -> str:
        arg = (arg + tiny).strip(",")
        return f"configs/{name}.py" + (f":{arg}" if arg else "")

    lengths = [f"--config.data.max_prompt_tokens={MAX_PROMPT.value}",
               f"--config.data.max_completion_tokens={MAX_COMPLETION.value}"]
    walls: dict[str, float] = {}
    log("SFT: training")
    walls["sft"] = train(config("rlearner_sft"), out / "sft", *lengths,
                         *common_overrides(SFT_STEPS.value, SFT_LR.value, BATCH.value))
    log("verifier: training")
    walls["verifier"] = train(config("rlearner_verifier"), out / "verifier",
                              f"--config.data.max_prompt_tokens={VERIFIER_TOKENS.value}",
                              *common_overrides(VERIFIER_STEPS.value, SFT_LR.value, BATCH.value))
    if not (REUSE.value and (out / "sft_export" / "adapter").is_dir()):
        subprocess.run([sys.executable, "-m", "launch.export", f"--run={out / 'sft'}",
                        f"--out={out / 'sft_export'}"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)
    sampling = SamplingConfig(max_new_tokens=MAX_COMPLETION.value, repetition_penalty=1.1)
    explainer = Explainer.from_runs({"sft": out / "sft"}, out / "verifier")
    train_q = load_questions(None, "train")
    train_q = train_q[:PREF_QUESTIONS.value] if PREF_QUESTIONS.value else train_q
    stats_path = out / "prefs" / "stats.json"
    if REUSE.value and stats_path.is_file():
        pref_stats = json.loads(stats_path.read_text())
        log(f"preference pairs: reusing {stats_path}")
    else:
        log(f"preference pairs: {len(train_q)} questions x {len(TEMPERATURES.value)} "
            "temperatures")
        options = BuildOptions(temperatures=tuple(float(t) for t in TEMPERATURES.value),
                               max_new_tokens=MAX_COMPLETION.value, seed=SEED.value,
                               min_score_gap=MIN_SCORE_GAP.value, batch_size=BATCH.value)
        _, pref_stats = build_preferences(explainer, train_q, options, out / "prefs")
    pairs_file = out / "prefs" / "pairs.jsonl"
    if DPO_PAIRS.value == "ratings":
        rated, rated_stats = pairs_from_ratings(load_questions(None, "train"),
                                                MIN_SCORE_GAP.value)
        pairs_file = write_preferences(out / "prefs_ratings" / "pairs.jsonl", rated)
        pref_stats = {**pref_stats, "dpo_trained_on": f"human ratings: {rated_stats.line()}"}
    elif pref_stats["pairs"] < 2 * DPO_BATCH.value:
        raise RuntimeError(f"only {pref_stats['pairs']} preference pairs kept (see "
                           f"{stats_path}); need >= {2 * DPO_BATCH.value} (a stronger "
                           "verifier, or --dpo_pairs=ratings)")
    dpo_runs = {}
    for name in [*DPO_TYPES.value, "sigmoid_precomputed"]:
        loss = {"cdpo": "sigmoid", "sigmoid_precomputed": "sigmoid"}.get(name, name)
        arg = (f"loss_type={loss},beta={BETA.value}"
               + (",label_smoothing=0.1" if name == "cdpo" else "")
               + (",precompute" if name == "sigmoid_precomputed" else ""))
        log(f"DPO {name}: training")
        walls[f"dpo_{name}"] = train(
            config("rlearner_dpo", arg), out / f"dpo_{name}", *lengths,
            f"--config.data.pairs_file={pairs_file}",
            f"--config.dpo.sft_adapter={out / 'sft_export' / 'adapter'}",
            *common_overrides(DPO_STEPS.value, DPO_LR.value, DPO_BATCH.value))
        dpo_runs[name] = out / f"dpo_{name}"
    generators = {"sft": out / "sft", **{f"dpo_{n}": d for n, d in dpo_runs.items()
                                         if n != "sigmoid_precomputed"}}
    if PPO_STEPS.value:
        log(f"PPO: {PPO_STEPS.value} iterations of {PPO_BATCH.value} rollouts")
        evals = max(PPO_STEPS.value // 2, 1)
        walls["ppo"] = train(
            config("rlearner_ppo"), out / "ppo",
            f"--config.data.max_prompt_tokens={MAX_PROMPT.value}",
            f"--config.sampling.max_new_tokens={MAX_COMPLETION.value}",
            f"--config.ppo.sft_run={out / 'sft'}", f"--config.reward.verifier_run={out / 'verifier'}",
            f"--config.total_steps={PPO_STEPS.value}", f"--config.global_batch_size={PPO_BATCH.value}",
            f"--config.eval_every={evals}", f"--config.checkpoint_every={evals}",
            f"--config.eval_batch_size={BATCH.value}", "--config.data.eval_questions=8",
            "--config.log_every=1", f"--config.optimizer.lr={PPO_LR.value}",
            "--config.optimizer.warmup_steps=1", f"--config.rl.epochs={PPO_EPOCHS.value}",
            f"--config.rl.minibatches={PPO_MINIBATCHES.value}", f"--config.rl.kl_coef={PPO_KL.value}")
        generators["ppo"] = out / "ppo"
    # Room for ILearner's prompts, which repeat the last explanation after the question.
    explainer = Explainer.from_runs(generators, out / "verifier", max_prompt_tokens=(
        MAX_PROMPT.value + MAX_COMPLETION.value + 48))
    test_q = load_questions(None, "test")
    test_q = test_q[:TEST_QUESTIONS.value] if TEST_QUESTIONS.value else test_q
    bert = BertScore(assets.minilm_dir())
    rng = jax.random.key(SEED.value)
    outputs: dict[str, list[Explanation]] = {}
    for name in ["base", *generators]:
        log(f"explaining {len(test_q)} held-out questions: {name}")
        outputs[name] = explainer.explain(test_q, name, sampling, rng, BATCH.value)
    for k in ILEARNER_KS.value:
        log(f"ILearner K={k} (SFT generator + verifier)")
        outputs[f"ilearner_k{k}"] = explainer.ilearner(test_q, int(k), "sft", sampling, rng,
                                                       BATCH.value)
    outputs["answer_text"] = [Explanation(f"The correct answer is {q.answer}: {q.answer_text}.",
                                          0.0) for q in test_q]
    outputs["human"] = [Explanation(q.explanation, 0.0) for q in test_q]
    metrics = {}
    for name, explained in outputs.items():
        metrics[name] = em.evaluate_model(test_q, [e.text for e in explained],
                                          [e.seconds for e in explained],
                                          verifier=explainer.score, bertscore=bert,
                                          keep_rows=True)
        (out / "explanations").mkdir(exist_ok=True)
        with open(out / "explanations" / f"{name}.jsonl", "w") as f:
            for q, e in zip(test_q, explained):
                f.write(json.dumps({"id": q.id, "explanation": e.text, "seconds": e.seconds,
                                    "rounds": list(e.rounds)}) + "\n")
    intervals = {name: {key: paired_interval(m["rows"][key], metrics["sft"]["rows"][key],
                                             SEED.value)
                        for key in ("verifier", "bertscore_human")}
                 for name, m in metrics.items() if name != "sft"}
    dpo_speed = {name: speed(d) for name, d in dpo_runs.items()}
    results = {"settings": {k: flags.FLAGS[k].value for k in MY_FLAGS},
               "model": "tiny random LLaMA" if TINY.value else "SmolLM2-135M-Instruct",
               "walls": walls, "preferences": pref_stats,
               "runs": {name: speed(out / name) for name in ("sft", "verifier")},
               "dpo_speed": dpo_speed, "reference": REFERENCE,
               "ppo": ppo_speed(out / "ppo") if PPO_STEPS.value else None,
               "metrics": {n: {k: v for k, v in m.items() if k != "rows"}
                           for n, m in metrics.items()},
               "intervals_vs_sft": intervals}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    for path in write_report(results, out):
        log(f"wrote {path}")


MY_FLAGS = ("tiny", "sft_steps", "verifier_steps", "dpo_steps", "batch", "dpo_batch", "dpo_pairs",
            "sft_lr", "dpo_lr", "ppo_steps", "ppo_batch", "ppo_lr", "ppo_epochs", "ppo_minibatches",
            "ppo_kl",
            "dpo_types", "beta", "min_score_gap", "pref_questions", "temperatures", "test_questions",
            "ilearner_ks", "max_prompt_tokens", "max_completion_tokens", "verifier_tokens",
            "seed")

if __name__ == "__main__":
    app.run(main)
