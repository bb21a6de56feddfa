"""TRM-AES on real ASAP essays vs simple baselines, trained and scored in one run on CPU.

    HF_HUB_OFFLINE=1 python -m bench.trm_quality --prompts=3 --config_variant=cpu \\
        [--total_steps=N] [--eval_every=N] [--max_tokens=256] \\
        [--set=optimizer.lr=3e-3 --set=model.h_cycles=3 ...] [--tag=NAME] \\
        [--workdir=bench/results/trm_quality] [--data_dir=../shared/data/asap_traits]

Data: ASAP prompts with ASAP++ traits, ``DATA_DIR/prompt_{p}/{train,dev,test}.tsv`` (see
../shared/data/README.md), with the files' own train/dev/test split. Without that folder
the script prints why and exits with status 0 (a skip, not a failure). The data are read
in place and never copied into the repository; the tokenised dataset is built with
``aes_jax.data.asap_records.build_dataset`` under WORKDIR/data/ (reused while prompts,
max_tokens and the source files' hashes are unchanged).

TRM: ``configs/trm_aes.py:VARIANT`` with data.dataset_dir set, total_steps/eval_every
overridden when given, checkpoint_every = eval_every and keep_checkpoints large enough to
keep every checkpoint; trained from scratch with ``aes_jax.train.loop.train`` in
WORKDIR/runs/TAG/. Every checkpoint is evaluated on dev with
``aes_jax.runs.evaluate_run(..., split="dev", step=s)``; the one with the best dev
mean QWK (ties: lower dev mean RMSE, then the earlier step) is evaluated on test. The last
checkpoint's test score is reported too, as a row of its own, for reference only.
One TRM model is trained on all the selected prompts together (normalised targets).

Baselines, fitted per prompt on train, hyper-parameter chosen on dev by mean QWK (ties:
lower dev RMSE), scored on test:
  constant   the train mean score, rounded (QWK is 0 by construction)
  length     ridge regression on the word count (alpha on dev)
  tfidf      ridge on TF-IDF word 1-2 grams (sublinear tf, min_df 2, fitted on train)
             + standardised length features (log words, chars, sentences, distinct
             words; mean word length), alpha on dev

QWK is per prompt on the prompt's own range (predictions rounded half up and clipped),
RMSE on the raw predictions on the score scale, both from aes_jax.eval.metrics; "mean" is
the plain mean over prompts. Writes WORKDIR/TAG.json and WORKDIR/TAG.png (test QWK and
RMSE per prompt and method). This is a benchmark, not a test.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags
from absl import logging as absl_logging

from bench.llama_forward import load_average, log, print_aligned, write_json

REPO = Path(__file__).resolve().parents[1]

DATA_DIR = flags.DEFINE_string(
    "data_dir", str(REPO.parent / "shared" / "data" / "asap_traits"),
    "ASAP++ folder holding prompt_{p}/{train,dev,test}.tsv.")
PROMPTS = flags.DEFINE_list("prompts", ["3"], "Prompts to train and score on, e.g. 3 or "
                            "1,2,3,4,5,6 (3-6 are the short-essay prompts).")
VARIANT = flags.DEFINE_enum("config_variant", "cpu", ["demo", "cpu", "paper"],
                            "configs/trm_aes.py variant.")
TOTAL_STEPS = flags.DEFINE_integer("total_steps", None, "Train steps; default the variant's.")
EVAL_EVERY = flags.DEFINE_integer("eval_every", None, "Steps between dev evaluations and "
                                  "checkpoints; default the variant's eval_every.")
MAX_TOKENS = flags.DEFINE_integer("max_tokens", 256, "Longest token sequence of the built "
                                  "dataset (longer essays are truncated).")
SET = flags.DEFINE_multi_string("set", [], "Config override KEY=VALUE (dotted key, e.g. "
                                "optimizer.lr=3e-3, model.hidden_size=192); repeatable. The "
                                "value is parsed as the existing field's type.")
WORKDIR = flags.DEFINE_string("workdir", str(REPO / "bench" / "results" / "trm_quality"),
                              "Where the dataset, runs, JSON and PNG go.")
TAG = flags.DEFINE_string("tag", None, "Run name (runs/TAG, TAG.json, TAG.png); default "
                          "derived from prompts, variant, steps and overrides.")
RESUME = flags.DEFINE_bool("resume", False, "Resume runs/TAG if it has checkpoints "
                           "(default: delete it and train from scratch).")
SKIP_TRM = flags.DEFINE_bool("skip_trm", False, "Baselines only.")
BOOTSTRAP = flags.DEFINE_integer("bootstrap", 2000, "Paired bootstrap resamples of the test "
                                 "essays for TRM - baseline QWK differences (0: off).")

SPLITS = ("train", "dev", "test")
LENGTH_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 7))
TFIDF_ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
METHOD_LABELS = {"constant": "constant (train mean)", "length": "ridge(word count)",
                 "tfidf": "ridge(tfidf 1-2g + length)"}

# ----------------------------------------------------------------------------- data


def data_files(data_dir: Path, prompts: list[int]) -> list[Path] | None:
    files = [data_dir / f"prompt_{p}" / f"{s}.tsv" for p in prompts for s in SPLITS]
    return files if all(f.is_file() for f in files) else None


def ensure_dataset(files: list[Path], prompts: list[int], max_tokens: int,
                   out_dir: Path) -> dict[str, Any]:
    """The tokenised dataset (file splits), rebuilt only when its inputs changed."""
    from aes_jax.data import asap_records

    manifest_path = out_dir / "manifest.json"
    if manifest_path.is_file():
        m = json.loads(manifest_path.read_text())
        same = (m.get("prompts") == prompts and m.get("max_tokens") == max_tokens
                and sorted((s["path"], s["sha256"]) for s in m.get("sources", []))
                == sorted((str(f), hashlib.sha256(f.read_bytes()).hexdigest()) for f in files))
        if same:
            log(f"dataset: reusing {out_dir}")
            return m
    log(f"dataset: building {out_dir} from {len(files)} files (max_tokens={max_tokens})")
    m = asap_records.build_dataset(asap_records.BuildOptions(
        inputs=files, output_dir=out_dir, prompts=tuple(prompts), max_tokens=max_tokens,
        overwrite=True))
    over = m["overlength"]["over_limit"]
    log(f"dataset: splits {m['splits']}; truncated to {max_tokens} tokens: {over or 'none'}; "
        f"skipped rows: {m['skipped'] or 'none'}")
    return m


def read_essays(files: list[Path], prompts: list[int]) -> dict[str, list]:
    """split -> essays (the same reader and rows the dataset builder uses)."""
    from aes_jax.data import asap

    result = asap.read_asap(files)
    out: dict[str, list] = {s: [] for s in SPLITS}
    for e in result.essays:
        if e.prompt in prompts:
            out[e.split].append(e)
    return out


# ----------------------------------------------------------------------------- baselines

_SENT = re.compile(r"[.!?]+(?:\s|$)")


def length_features(texts: list[str]) -> np.ndarray:
    rows = []
    for t in texts:
        words = t.split()
        n = max(len(words), 1)
        rows.append([np.log1p(len(words)), np.log1p(len(t)), np.log1p(len(_SENT.findall(t)) + 1),
                     np.log1p(len({w.lower() for w in words})),
                     sum(len(w) for w in words) / n])
    return np.asarray(rows, np.float64)


def word_counts(texts: list[str]) -> np.ndarray:
    return np.asarray([[len(t.split())] for t in texts], np.float64)


def _score(gold: np.ndarray, raw: np.ndarray, prompt: int) -> dict[str, float]:
    from aes_jax.data import asap
    from aes_jax.eval import metrics

    lo, hi = asap.score_range(prompt)
    return metrics.per_prompt_report(np.full(len(gold), prompt), gold, raw,
                                     {prompt: (lo, hi)})["per_prompt"][prompt]


def fit_select(make_xy, alphas, y_train, y_dev, y_test, prompt):
    """Ridge for each alpha on train; the alpha with the best dev QWK (then lower dev RMSE)
    predicts test. make_xy() -> (X_train, X_dev, X_test)."""
    from sklearn.linear_model import Ridge

    x_tr, x_dev, x_te = make_xy()
    best = None
    for alpha in alphas:
        model = Ridge(alpha=alpha).fit(x_tr, y_train)
        dev = _score(y_dev, model.predict(x_dev), prompt)
        key = (dev["qwk"], -dev["rmse"])
        if best is None or key > best[0]:
            best = (key, alpha, model, dev)
    _, alpha, model, dev = best
    test_raw = model.predict(x_te)
    return {"alpha": alpha, "dev": dev, "test": _score(y_test, test_raw, prompt)}, test_raw


def run_baselines(essays: dict[str, list], prompts: list[int]
                  ) -> tuple[dict[str, Any], dict[str, dict[int, dict[int, float]]]]:
    """(report, test predictions {method: {prompt: {essay_id: raw prediction}}})."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import StandardScaler

    out: dict[str, Any] = {m: {"per_prompt": {}} for m in METHOD_LABELS}
    preds: dict[str, dict[int, dict[int, float]]] = {m: {} for m in METHOD_LABELS}
    for p in prompts:
        by = {s: [e for e in essays[s] if e.prompt == p] for s in SPLITS}
        text = {s: [e.text for e in by[s]] for s in SPLITS}
        y = {s: np.asarray([e.score for e in by[s]], np.int64) for s in SPLITS}
        ids = [e.essay_id for e in by["test"]]

        const = float(np.floor(y["train"].mean() + 0.5))
        out["constant"]["per_prompt"][p] = {
            "value": const, "train_mean": float(y["train"].mean()),
            "dev": _score(y["dev"], np.full(len(y["dev"]), const), p),
            "test": _score(y["test"], np.full(len(y["test"]), const), p)}
        preds["constant"][p] = dict.fromkeys(ids, const)

        def length_xy():
            scaler = StandardScaler().fit(word_counts(text["train"]))
            return tuple(scaler.transform(word_counts(text[s])) for s in SPLITS)

        out["length"]["per_prompt"][p], raw = fit_select(length_xy, LENGTH_ALPHAS, y["train"],
                                                         y["dev"], y["test"], p)
        preds["length"][p] = dict(zip(ids, raw.tolist()))

        def tfidf_xy():
            vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                  lowercase=True).fit(text["train"])
            scaler = StandardScaler().fit(length_features(text["train"]))
            return tuple(sparse.hstack([vec.transform(text[s]), sparse.csr_matrix(
                scaler.transform(length_features(text[s])))]).tocsr() for s in SPLITS)

        out["tfidf"]["per_prompt"][p], raw = fit_select(tfidf_xy, TFIDF_ALPHAS, y["train"],
                                                        y["dev"], y["test"], p)
        preds["tfidf"][p] = dict(zip(ids, raw.tolist()))
        out["tfidf"]["per_prompt"][p]["ngram_range"] = [1, 2]
        for m in METHOD_LABELS:
            r = out[m]["per_prompt"][p]
            log(f"baseline {m:8s} p{p}: dev QWK {r['dev']['qwk']:.4f}, test QWK "
                f"{r['test']['qwk']:.4f}, test RMSE {r['test']['rmse']:.4f}"
                + (f" (alpha {r['alpha']:g})" if "alpha" in r else ""))
    for m in METHOD_LABELS:
        pp = out[m]["per_prompt"]
        out[m]["test_mean_qwk"] = float(np.mean([pp[p]["test"]["qwk"] for p in prompts]))
        out[m]["test_mean_rmse"] = float(np.mean([pp[p]["test"]["rmse"] for p in prompts]))
        out[m]["dev_mean_qwk"] = float(np.mean([pp[p]["dev"]["qwk"] for p in prompts]))
        out[m]["n_test"] = {p: pp[p]["test"]["n"] for p in prompts}
    return out, preds


def read_predictions_csv(path: Path) -> dict[int, dict[int, tuple[int, float]]]:
    """evaluate_run's predictions CSV -> {prompt: {essay_id: (gold, predicted_raw)}}."""
    import csv

    out: dict[int, dict[int, tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(int(row["prompt"]), {})[int(row["essay_id"])] = (
                int(row["gold"]), float(row["predicted_raw"]))
    return out


def paired_bootstrap(trm: dict[int, dict[int, tuple[int, float]]],
                     base: dict[int, dict[int, float]], prompts: list[int], resamples: int,
                     seed: int = 0) -> dict[str, Any]:
    """Test mean QWK(TRM) - QWK(baseline) with a 95% interval from resampling each
    prompt's test essays with replacement (the same essays for both sides)."""
    from aes_jax.data import asap
    from aes_jax.eval import metrics

    rng = np.random.default_rng(seed)
    observed, diffs = 0.0, np.zeros(resamples)
    for p in prompts:
        if set(trm[p]) != set(base[p]):
            raise AssertionError(f"prompt {p}: the TRM and baseline test essays differ")
        ids = sorted(trm[p])
        lo, hi = asap.score_range(p)
        gold = np.asarray([trm[p][i][0] for i in ids])
        a = metrics.round_and_clip([trm[p][i][1] for i in ids], lo, hi)
        b = metrics.round_and_clip([base[p][i] for i in ids], lo, hi)
        observed += (metrics.qwk(gold, a, lo, hi) - metrics.qwk(gold, b, lo, hi)) / len(prompts)
        for k in range(resamples):
            idx = rng.integers(0, len(ids), len(ids))
            diffs[k] += (metrics.qwk(gold[idx], a[idx], lo, hi)
                         - metrics.qwk(gold[idx], b[idx], lo, hi)) / len(prompts)
    return {"observed": observed, "ci95": [float(np.percentile(diffs, 2.5)),
                                           float(np.percentile(diffs, 97.5))],
            "share_not_better": float(np.mean(diffs <= 0)), "resamples": resamples}


# ----------------------------------------------------------------------------- TRM


def parse_value(text: str, current: Any) -> Any:
    if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
            raise app.UsageError(f"--set: {text!r} is not a bool")
        return text.lower() in ("true", "1")
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if isinstance(current, str):
        return text
    return json.loads(text)


def apply_overrides(config, items: list[str]) -> dict[str, Any]:
    applied = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise app.UsageError(f"--set={item!r}: expected KEY=VALUE")
        node = config
        *parents, leaf = key.strip().split(".")
        for name in parents:
            node = node[name]
        if leaf not in node:
            raise app.UsageError(f"--set={item!r}: the config has no field {key!r}")
        node[leaf] = parse_value(text.strip(), node[leaf])
        applied[key.strip()] = node[leaf]
    return applied


def trm_config(dataset_dir: Path, max_tokens: int):
    from configs.trm_aes import get_config

    config = get_config(VARIANT.value)
    config.data.dataset_dir = str(dataset_dir)
    config.data.max_tokens = max_tokens
    config.data.eval_split = "dev"
    if TOTAL_STEPS.value is not None:
        config.total_steps = TOTAL_STEPS.value
    if EVAL_EVERY.value is not None:
        config.eval_every = EVAL_EVERY.value
    overrides = apply_overrides(config, SET.value)
    config.eval_every = max(1, min(int(config.eval_every), int(config.total_steps)))
    config.checkpoint_every = config.eval_every
    config.log_every = min(int(config.log_every), config.eval_every)
    # Every checkpoint is a candidate for the dev selection: keep them all.
    config.keep_checkpoints = config.total_steps // config.checkpoint_every + 2
    return config, overrides


EVAL_KEYS = ("eval_mean_qwk", "eval_trait_mean_qwk", "eval_mean_steps")


class MetricsTail(threading.Thread):
    """Prints each new metrics.jsonl record as a progress line while the loop trains."""

    def __init__(self, path: Path, total: int, t0: float):
        super().__init__(daemon=True)
        self.path, self.total, self.t0 = path, total, t0
        self.seen = 0
        self.stop = threading.Event()

    def poll(self) -> None:
        if not self.path.is_file():
            return
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        for line in lines[self.seen:]:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:  # a line still being written
                return
            self.seen += 1
            took = time.perf_counter() - self.t0
            extra = "".join(f", {k[5:]} {r[k]:.4f}" for k in EVAL_KEYS if k in r)
            log(f"train step {r['step']}/{self.total} ({took:.0f}s in loop, "
                f"{took / max(r['step'], 1):.2f}s/step): loss {r['loss']:.4f}, "
                f"grad_norm {r['grad_norm']:.3f}, lr {r['learning_rate']:.2e}{extra}")

    def run(self) -> None:
        while not self.stop.wait(2.0):
            self.poll()
        self.poll()


def checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit())


def trm_row(result: dict[str, Any], prompts: list[int]) -> dict[str, Any]:
    per = {p: {"qwk": result[f"qwk_p{p}"], "rmse": result[f"rmse_p{p}"]} for p in prompts}
    # With config.train_traits the task also reports ASAP++ trait QWKs (JSON only; the
    # baselines and the table are about the holistic score).
    traits = {k: v for k, v in result.items() if k.startswith("qwk_") and k[4:5] != "p"}
    traits.update({k: v for k, v in result.items() if k == "trait_mean_qwk"})
    return {"per_prompt": per, "mean_qwk": result["mean_qwk"],
            "mean_rmse": float(np.mean([per[p]["rmse"] for p in prompts])),
            "mean_steps": result["mean_steps"], "step": result["step"], "traits": traits}


def run_trm(dataset_dir: Path, run_dir: Path, prompts: list[int]) -> dict[str, Any]:
    import jax

    from aes_jax import tasks
    from aes_jax.runs import evaluate_run
    from aes_jax.train import loop

    config, overrides = trm_config(dataset_dir, MAX_TOKENS.value)
    if run_dir.exists() and not RESUME.value:
        log(f"trm: removing the previous run {run_dir} (--resume keeps it)")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    m = dict(config.model)
    log(f"trm: {VARIANT.value} config, {config.total_steps} steps of batch "
        f"{config.global_batch_size}, eval/checkpoint every {config.eval_every}, model {m}, "
        f"lr {config.optimizer.lr}, overrides {overrides or 'none'}; jax {jax.__version__} on "
        f"{jax.devices()[0].platform} ({len(jax.devices())} device(s))")

    resumed_at = max(checkpoint_steps(run_dir), default=None)
    t0 = time.perf_counter()
    tail = MetricsTail(run_dir / "metrics.jsonl", config.total_steps, t0)
    tail.start()
    try:
        last = loop.train(tasks.build(config, run_dir), config, run_dir)
    finally:
        tail.stop.set()
        tail.join()
    train_s = time.perf_counter() - t0
    log(f"trm: training done in {train_s:.0f}s (last logged: step {last.get('step')}, "
        f"loss {last.get('loss', float('nan')):.4f})")

    t1 = time.perf_counter()
    steps = checkpoint_steps(run_dir)
    dev = {}
    for s in steps:
        r = evaluate_run(run_dir, split="dev", step=s, out_dir=run_dir / "eval" / f"dev_step{s}")
        dev[s] = trm_row(r, prompts)
        log(f"trm: dev step {s}: mean QWK {r['mean_qwk']:.4f}, mean RMSE "
            f"{dev[s]['mean_rmse']:.4f}, mean supervision steps {r['mean_steps']:.2f}")
    best = max(steps, key=lambda s: (dev[s]["mean_qwk"], -dev[s]["mean_rmse"], -s))
    select_s = time.perf_counter() - t1
    log(f"trm: best dev checkpoint: step {best} (dev mean QWK {dev[best]['mean_qwk']:.4f}); "
        f"dev selection took {select_s:.0f}s over {len(steps)} checkpoints")

    t2 = time.perf_counter()
    test_best = trm_row(evaluate_run(run_dir, split="test", step=best,
                                     out_dir=run_dir / "eval" / "test_best"), prompts)
    test_last = (test_best if best == steps[-1] else
                 trm_row(evaluate_run(run_dir, split="test", step=steps[-1],
                                      out_dir=run_dir / "eval" / "test_last"), prompts))
    test_s = time.perf_counter() - t2
    # The loop's own dev evaluation at the same steps must agree with evaluate_run's.
    loop_dev = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "eval_mean_qwk" in r:
            loop_dev[int(r["step"])] = r["eval_mean_qwk"]
    mismatch = {s: (loop_dev[s], dev[s]["mean_qwk"]) for s in steps
                if s in loop_dev and abs(loop_dev[s] - dev[s]["mean_qwk"]) > 1e-6}
    if mismatch:
        log(f"WARNING: the loop's dev QWK differs from evaluate_run's at {mismatch}")
    return {"config": json.loads(config.to_json_best_effort()), "overrides": overrides,
            "run_dir": str(run_dir), "checkpoints": steps, "dev": dev, "best_step": best,
            "test_best": test_best, "test_last": test_last,
            "test_predictions_csv": str(run_dir / "eval" / "test_best" / "predictions_test.csv"),
            "resumed_at": resumed_at, "train_s": train_s, "select_s": select_s,
            "test_eval_s": test_s,
            "wall_s": train_s + select_s + test_s,
            "loop_dev_qwk": loop_dev, "loop_vs_evaluate_run_mismatch": mismatch}


# ----------------------------------------------------------------------------- output


def table(prompts: list[int], baselines: dict, trm: dict | None,
          baseline_s: float) -> list[dict[str, Any]]:
    rows = []
    for m, label in METHOD_LABELS.items():
        b = baselines[m]
        rows.append({"method": label, "key": m,
                     "qwk": {p: b["per_prompt"][p]["test"]["qwk"] for p in prompts},
                     "rmse": {p: b["per_prompt"][p]["test"]["rmse"] for p in prompts},
                     "mean_qwk": b["test_mean_qwk"], "mean_rmse": b["test_mean_rmse"],
                     "dev_mean_qwk": b["dev_mean_qwk"], "wall_s": None})
    rows[-1]["wall_s"] = baseline_s  # all three baselines together
    if trm is not None:
        for key, res, label in (("trm_best", trm["test_best"], f"TRM (best dev, step "
                                 f"{trm['best_step']})"),
                                ("trm_last", trm["test_last"], f"TRM (last, step "
                                 f"{trm['checkpoints'][-1]}; reference)")):
            if key == "trm_last" and trm["best_step"] == trm["checkpoints"][-1]:
                continue  # the same checkpoint as the row above
            rows.append({"method": label, "key": key,
                         "qwk": {p: res["per_prompt"][p]["qwk"] for p in prompts},
                         "rmse": {p: res["per_prompt"][p]["rmse"] for p in prompts},
                         "mean_qwk": res["mean_qwk"], "mean_rmse": res["mean_rmse"],
                         "dev_mean_qwk": trm["dev"][res["step"]]["mean_qwk"],
                         "wall_s": trm["wall_s"] if key == "trm_best" else None})
    return rows


def print_table(rows: list[dict[str, Any]], prompts: list[int]) -> None:
    multi = len(prompts) > 1
    cols = (["method"] + [f"QWK p{p}" for p in prompts] + (["mean QWK"] if multi else [])
            + [f"RMSE p{p}" for p in prompts] + (["mean RMSE"] if multi else [])
            + ["dev QWK", "wall s"])
    lines = [cols]
    for r in rows:
        lines.append([r["method"]] + [f"{r['qwk'][p]:.4f}" for p in prompts]
                     + ([f"{r['mean_qwk']:.4f}"] if multi else [])
                     + [f"{r['rmse'][p]:.4f}" for p in prompts]
                     + ([f"{r['mean_rmse']:.4f}"] if multi else [])
                     + [f"{r['dev_mean_qwk']:.4f}",
                        "" if r["wall_s"] is None else f"{r['wall_s']:.0f}"])
    print_aligned(lines)


def bar_chart(rows: list[dict[str, Any]], prompts: list[int], title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [f"p{p}" for p in prompts] + (["mean"] if len(prompts) > 1 else [])
    fig = Figure(figsize=(max(7.0, 1.6 * len(groups) * len(rows) / 2), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    width = 0.8 / len(rows)
    x = np.arange(len(groups))
    for ax, metric in zip(axes, ("qwk", "rmse")):
        for k, r in enumerate(rows):
            vals = [r[metric][p] for p in prompts] + (
                [r[f"mean_{metric}"]] if len(prompts) > 1 else [])
            bars = ax.bar(x + (k - (len(rows) - 1) / 2) * width, vals, width, label=r["method"])
            for b, v in zip(bars, vals):
                ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                            va="bottom", fontsize=6)
        ax.set_xticks(x, groups)
        what = "QWK (higher is better)" if metric == "qwk" else "RMSE (lower is better)"
        ax.set_title(f"test {what}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(rows)), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.05 + 0.05 * ((len(rows) + 2) // 3), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)


def default_tag(prompts: list[int], config) -> str:
    tag = f"p{''.join(map(str, prompts))}_{VARIANT.value}_s{config.total_steps}"
    for item in SET.value:
        key, _, value = item.partition("=")
        if key.strip() != "total_steps":
            tag += f"_{key.strip().split('.')[-1]}{value.strip()}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "", tag)


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    try:
        prompts = sorted({int(p) for p in PROMPTS.value})
    except ValueError:
        raise app.UsageError(f"--prompts={','.join(PROMPTS.value)}: expected integers 1-6")
    if not prompts or any(p not in range(1, 7) for p in prompts):
        raise app.UsageError(f"--prompts={','.join(PROMPTS.value)}: the ASAP++ folder has "
                             "prompts 1-6")
    data_dir = Path(DATA_DIR.value).resolve()
    files = data_files(data_dir, prompts)
    if files is None:
        print(f"trm_quality: SKIPPED: the real essay data is not here ({data_dir}/prompt_P/"
              f"{{train,dev,test}}.tsv for prompts {prompts}). It is kept outside the "
              "repository (../shared/data, see its README); pass --data_dir=DIR to point at a "
              "copy.", file=sys.stderr, flush=True)
        sys.exit(0)
    if any(p < 3 for p in prompts) and MAX_TOKENS.value < 512:
        log(f"note: prompts 1-2 are long essays; --max_tokens={MAX_TOKENS.value} truncates "
            "many of them")

    workdir = Path(WORKDIR.value).resolve()
    t_start = time.perf_counter()
    load_start = load_average()
    dataset_dir = workdir / "data" / f"p{''.join(map(str, prompts))}_t{MAX_TOKENS.value}"
    manifest = ensure_dataset(files, prompts, MAX_TOKENS.value, dataset_dir)

    log("baselines: reading essays")
    t0 = time.perf_counter()
    essays = read_essays(files, prompts)
    for s in SPLITS:  # the baselines must see exactly the essays the TRM sees
        counts = {str(p): sum(e.prompt == p for e in essays[s]) for p in prompts}
        if counts != manifest["counts"].get(s):
            raise AssertionError(f"{s}: baselines read {counts} essays, the dataset has "
                                 f"{manifest['counts'].get(s)}")
    baselines, baseline_preds = run_baselines(essays, prompts)
    baseline_s = time.perf_counter() - t0
    log(f"baselines: done in {baseline_s:.1f}s")

    config, _ = trm_config(dataset_dir, MAX_TOKENS.value)
    tag = TAG.value or default_tag(prompts, config)
    trm = None if SKIP_TRM.value else run_trm(dataset_dir, workdir / "runs" / tag, prompts)

    rows = table(prompts, baselines, trm, baseline_s)
    total_s = time.perf_counter() - t_start
    print()
    print(f"ASAP prompt(s) {prompts}, test split ({sum(manifest['counts']['test'].values())} "
          f"essays); TRM {VARIANT.value} config, tag {tag}")
    print_table(rows, prompts)
    verdict = None
    if trm is not None:
        trm_q, len_q = trm["test_best"]["mean_qwk"], baselines["length"]["test_mean_qwk"]
        in_time = trm["wall_s"] < 30 * 60
        verdict = (f"TRM {'BEATS' if trm_q > len_q else 'does NOT beat'} the length baseline "
                   f"on test mean QWK ({trm_q:.4f} vs {len_q:.4f}; tf-idf "
                   f"{baselines['tfidf']['test_mean_qwk']:.4f}) in {trm['wall_s'] / 60:.1f} min "
                   f"of training + dev selection + test evaluation "
                   f"({'within' if in_time else 'OVER'} "
                   "the 30-minute CPU budget)" + (f"; NOTE: resumed at step {trm['resumed_at']}, "
                                                  "so the time is this process's only"
                                                  if trm["resumed_at"] else ""))
        print(verdict, flush=True)
        if BOOTSTRAP.value:
            trm_preds = read_predictions_csv(Path(trm["test_predictions_csv"]))
            trm["bootstrap_vs"] = {}
            for m in ("length", "tfidf"):
                bs = paired_bootstrap(trm_preds, baseline_preds[m], prompts, BOOTSTRAP.value)
                trm["bootstrap_vs"][m] = bs
                print(f"  test mean QWK, TRM - {m}: {bs['observed']:+.4f}, 95% paired bootstrap "
                      f"interval [{bs['ci95'][0]:+.4f}, {bs['ci95'][1]:+.4f}] "
                      f"({bs['resamples']} resamples of the test essays; TRM not better in "
                      f"{100 * bs['share_not_better']:.1f}%)", flush=True)
    load_end = load_average()
    log(f"total {total_s:.0f}s; load average at start {load_start}, at end {load_end}")

    import jax
    payload = {
        "tag": tag, "prompts": prompts, "config_variant": VARIANT.value,
        "data_dir": str(data_dir), "dataset_dir": str(dataset_dir),
        "dataset": {"splits": manifest["splits"], "counts": manifest["counts"],
                    "max_tokens": manifest["max_tokens"],
                    "truncated": manifest["overlength"]["truncated"],
                    "skipped": manifest["skipped"], "layout": manifest["tokenizer"]["layout"]},
        "rows": rows, "baselines": baselines, "trm": trm, "verdict": verdict,
        "baseline_s": baseline_s, "total_s": total_s, "argv": sys.argv,
        "host": {"jax": jax.__version__, "jax_platform": jax.devices()[0].platform,
                 "cpu_count": os.cpu_count(), "loadavg_at_start": load_start,
                 "loadavg_at_end": load_end},
    }
    out_json, out_png = workdir / f"{tag}.json", workdir / f"{tag}.png"
    write_json(out_json, payload)
    bar_chart(rows, prompts, f"ASAP prompt(s) {','.join(map(str, prompts))} test: TRM "
              f"{VARIANT.value} ({tag}) vs baselines", out_png)
    log(f"wrote {out_json} and {out_png}")


if __name__ == "__main__":
    app.run(main)
