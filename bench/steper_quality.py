"""StepER on the project-written multi-hop demo corpus (not a test): students trained on
oracle-teacher records, answering held-out questions next to baselines from the same run.

    python -m bench.steper_quality --out=bench_out/steper
    # CPU smoke run of the plumbing: a tiny random LLaMA, byte tokens
    python -m bench.steper_quality --tiny --steps=4 --test_questions=8 --out=/tmp/steper_bench

Rows (EM / F1 / Acc, mean steps, seconds per question): StepER (difficulty-aware
weighting, stepwise inference), fixed weights (1, 1, 1) (stepwise), vanilla KD (a student
trained on single-step records: one retrieval, then the answer; answers single-step), no
retrieval (the vanilla KD student given no passages), the base model without training
(single-step), and the most frequent training answer (a constant). A paired bootstrap 95%
interval of StepER - vanilla KD per metric. Writes OUT/report.md, OUT/results.json and
OUT/steper_quality.png.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from absl import app, flags, logging

from bench.table import log

OUT = flags.DEFINE_string("out", "bench_out/steper", "Output folder.")
TINY = flags.DEFINE_bool("tiny", False, "A tiny random LLaMA with byte tokens (smoke runs).")
STEPS = flags.DEFINE_integer("steps", 12, "Training steps of each student.")
BATCH = flags.DEFINE_integer("batch", 8, "Rows per step; generation batch.")
LR = flags.DEFINE_float("lr", 3e-4, "Peak lr (LoRA).")
TEST_QUESTIONS = flags.DEFINE_integer("test_questions", 32, "Held-out questions answered.")
MAX_PROMPT = flags.DEFINE_integer("max_prompt_tokens", 320, "Prompt tokens (longer: the end).")
MAX_STEPS = flags.DEFINE_integer("max_steps", 4, "Stepwise inference steps in all.")
BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "Paired bootstrap resamples.")
SEED = flags.DEFINE_integer("seed", 0, "Bootstrap seed.")

REPO = Path(__file__).resolve().parents[1]
# The paper's HotpotQA figures, 8B student (EM / F1 / Acc).
REFERENCE = {"vanilla KD": (46.4, 57.3, 54.8), "StepER": (51.0, 62.8, 61.0),
             "fixed weights (1,1,1), Acc": (None, None, 58.4)}


def run(cmd: list[str], log_path: Path) -> float:
    start = time.perf_counter()
    with open(log_path, "w") as out:
        done = subprocess.run([sys.executable, "-m", *cmd], stdout=out,
                              stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[:1])} failed ({done.returncode}); see {log_path}")
    return time.perf_counter() - start


def paired_interval(a, b, seed: int) -> list[float]:
    diff = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(BOOTSTRAP.value)]
    return [float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from aes_jax.data.multihop import read_multihop
    from aes_jax.eval import qa
    from aes_jax.eval import steper_answers as sa
    from aes_jax.eval.stepwise_inference import StepwiseAnswerer
    from aes_jax import runs
    from aes_jax.retrieval.bm25 import BM25
    import jax

    out = Path(OUT.value).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = "configs/steper.py" + (":tiny" if TINY.value else "")
    walls = {}
    for name, extra in (("records", []), ("records_single", ["--single_step"])):
        if not (out / name / "manifest.json").is_file():
            log(f"building {name}")
            walls[name] = run(["launch.build_stepwise", f"--output_dir={out / name}", *extra],
                              out / f"{name}.log")
    common = [f"--config.total_steps={STEPS.value}", f"--config.global_batch_size={BATCH.value}",
              f"--config.eval_every={STEPS.value}", f"--config.checkpoint_every={STEPS.value}",
              f"--config.log_every={max(STEPS.value // 6, 1)}", f"--config.optimizer.lr={LR.value}",
              f"--config.optimizer.warmup_steps={max(STEPS.value // 10, 1)}",
              f"--config.data.max_prompt_tokens={MAX_PROMPT.value}",
              "--config.data.max_completion_tokens=32", "--config.data.demo_limit=0"]
    students = {"steper": (out / "records", ""), "fixed": (out / "records", "weighting=fixed"),
                "vanilla_kd": (out / "records_single", "weighting=fixed")}
    for name, (records, arg) in students.items():
        workdir = out / name
        if (workdir / "checkpoints").is_dir():
            continue
        log(f"training {name}")
        cfg = config + ("," if TINY.value and arg else (":" if arg else "")) + arg
        walls[name] = run(["launch.train", f"--config={cfg}", f"--workdir={workdir}",
                           f"--config.data.records_dir={records}", *common], out / f"{name}.log")

    test = read_multihop(out / "records" / "corpus" / "test.json").examples[:TEST_QUESTIONS.value]
    golds = [e.answer for e in test]
    rows, per_question = {}, {}

    def score(name, answerer, mode):
        log(f"answering {len(test)} questions: {name} ({mode})")
        metrics, traces = sa.evaluate(answerer, test, [mode])
        rows[name] = {**metrics[mode], "mode": mode}
        per_question[name] = {k: [getattr(qa, fn)(t.answer, g) for t, g in
                                  zip(traces[mode], golds)]
                              for k, fn in (("em", "exact_match"), ("f1", "f1"),
                                            ("acc", "accuracy"))}
        sa.write_answers(out / "answers" / f"{name}.jsonl", test, traces, metrics)

    for name, mode in (("steper", "stepwise"), ("fixed", "stepwise"),
                       ("vanilla_kd", "single")):
        score(name, sa.answerer_for(out / name, max_steps=MAX_STEPS.value,
                                    batch_size=BATCH.value, max_new_tokens=32), mode)
    score("no_retrieval", sa.answerer_for(out / "vanilla_kd", batch_size=BATCH.value,
                                          max_new_tokens=32), "none")
    # The students' base (same seed, so the tiny random one too), without any training.
    base_config, base_task = runs.load_run(out / "steper")
    trainable, frozen = base_task.lm.init(jax.random.PRNGKey(base_config.seed))
    base_params = base_task.lm.base_params(trainable, frozen)
    score("base_untrained", StepwiseAnswerer(
        base_task.lm.base_cfg, base_params, base_task.lm.tokenizer,
        BM25.load(out / "records" / "bm25"), max_new_tokens=32,
        max_prompt_tokens=MAX_PROMPT.value, batch_size=BATCH.value), "single")
    train_answers = Counter(e.answer for e in read_multihop(
        out / "records" / "corpus" / "train.json").examples)
    constant = train_answers.most_common(1)[0][0]
    report = qa.qa_report([constant] * len(test), golds)
    rows["constant"] = {**report, "steps": 0.0, "seconds_per_question": 0.0,
                        "mode": f"answer {constant!r}"}
    intervals = {k: paired_interval(per_question["steper"][k], per_question["vanilla_kd"][k],
                                    SEED.value) for k in ("em", "f1", "acc")}
    runs_info = {name: json.loads((out / name / "metrics.jsonl").read_text().splitlines()[-1])
                 for name in students}
    results = {"settings": {k: flags.FLAGS[k].value for k in
                            ("tiny", "steps", "batch", "lr", "test_questions",
                             "max_prompt_tokens", "max_steps")},
               "model": "tiny random LLaMA" if TINY.value else "SmolLM2-135M-Instruct + LoRA",
               "rows": rows, "steper_minus_vanilla_kd": intervals, "walls": walls,
               "last_train_metrics": runs_info, "reference": REFERENCE,
               "records": {n: json.loads((out / n / "manifest.json").read_text())["splits"]
                           ["train"]["records"] for n in ("records", "records_single")}}
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    text = markdown(results)
    (out / "report.md").write_text(text + "\n")
    print(text)
    plot(results, out / "steper_quality.png")
    log(f"wrote {out / 'report.md'}")


def markdown(results: dict) -> str:
    lines = [f"# StepER benchmark ({results['model']}, project-written demo corpus)", "",
             "Settings: " + ", ".join(f"{k}={v}" for k, v in results["settings"].items()), "",
             "| model | inference | EM | F1 | Acc | steps | s / question |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results["rows"].items():
        lines.append(f"| {name} | {r['mode']} | {100 * r['em']:.1f} | {100 * r['f1']:.1f} | "
                     f"{100 * r['acc']:.1f} | {r['steps']:.2f} | "
                     f"{r['seconds_per_question']:.3f} |")
    lines += ["", "StepER - vanilla KD (paired bootstrap 95%, points): " + ", ".join(
        f"{k.upper()} {100 * m:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"
        for k, (m, lo, hi) in results["steper_minus_vanilla_kd"].items()), "",
        "Last training metrics: " + "; ".join(
            f"{n}: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()
                                  if k.startswith(("loss", "sigma", "eval_loss")))
            for n, m in results["last_train_metrics"].items()), "",
        f"Training records: {results['records']}; wall seconds: "
        + ", ".join(f"{k} {v:.0f}" for k, v in results["walls"].items()), "",
        "The paper (HotpotQA, 8B student, EM / F1 / Acc): " + "; ".join(
            f"{k} {v}" for k, v in results["reference"].items())]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = list(results["rows"])
    x = np.arange(len(names))
    for i, key in enumerate(("em", "f1", "acc")):
        ax.bar(x + (i - 1) * 0.25, [100 * results["rows"][n][key] for n in names], 0.25,
               label=key.upper())
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title("StepER on the demo corpus")
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    app.run(main)
