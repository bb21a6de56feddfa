"""Pair2Score on the real ELLIPSE essays with the packaged SmolLM2-135M-Instruct (not a test).

    python -m bench.pair2score_quality --data=../shared/data/ell --out=bench_out/pair2score
    # CPU smoke run of the plumbing: a tiny random LLaMA, a few essays
    python -m bench.pair2score_quality --tiny --essays_per_fold=24 --stage1_steps=4 \
        --stage2_steps=4 --traits=grammar --out=/tmp/p2s_bench

For each trait, run 1 (held-out fold E, seed 36) through `launch.train`, one run
directory per variant under OUT/<trait>/<variant>: baseline (no Stage 1), warm_start,
fusion, and with --in_batch_traits the in-batch all-pairs Stage 1 followed by warm_start.
warm_start and fusion share one Stage 1 (the fusion run starts from a copy of the
warm_start run's relative/ and pairs/, which launch.train reports as finished).

The budget is set by flags: the essays of each fold (a seeded subset, `--essays_per_fold`;
0 = all 3,911), tokens per essay, steps, batch and peak learning rate of each stage (the
original's lrs by default; a budget of a few dozen steps needs larger ones, or the fresh
head never reaches the 1-5 range). Next to the runs, computed here on the same held-out essays: a
constant predictor (the Stage-2 train mean) and a TF-IDF ridge (alpha chosen on the
Stage-2 val essays), each trait's QWK difference to the baseline with a 95% paired
bootstrap interval, and the original's reference means (LLaMA-3.2-1B, 5 runs). Stage
wall times come from each run's `absolute_metrics.json`; tokens/s, steps/s and MFU from
its stages' metrics.jsonl (the median over log windows after the first, which holds the
compile; MFU only where the device's peak is known or --peak_tflops is given).
Writes OUT/report.md, OUT/results.json, OUT/pair2score_quality.png.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from absl import app, flags

from bench.table import log

DATA = flags.DEFINE_string("data", "../shared/data/ell", "ELLIPSE fold_k.csv folder or "
                           "Kaggle train.csv.")
OUT = flags.DEFINE_string("out", "bench_out/pair2score", "Output folder.")
TRAITS = flags.DEFINE_list("traits", ["grammar", "vocabulary", "syntax"], "ELLIPSE traits.")
VARIANTS = flags.DEFINE_list("variants", ["baseline", "warm_start", "fusion"],
                             "Stage-2 variants.")
IN_BATCH_TRAITS = flags.DEFINE_list("in_batch_traits", ["grammar"], "Traits that also run "
                                    "the in-batch all-pairs Stage 1 (then warm_start).")
ESSAYS_PER_FOLD = flags.DEFINE_integer("essays_per_fold", 100, "Seeded subset of each fold's "
                                       "essays; 0 = all.")
SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "Tokens per essay (longer ones are cut).")
STAGE1_STEPS = flags.DEFINE_integer("stage1_steps", 24, "Stage-1 steps.")
STAGE2_STEPS = flags.DEFINE_integer("stage2_steps", 24, "Stage-2 steps.")
BATCH = flags.DEFINE_integer("batch", 8, "Stage 1: pairs per step (in-batch mode: 2x as many "
                             "essays, the same essays per forward); Stage 2: essays per step.")
STAGE1_LR = flags.DEFINE_float("stage1_lr", 2e-4, "Stage-1 peak lr (the original's 2e-4).")
STAGE2_LR = flags.DEFINE_float("stage2_lr", 1e-4, "Stage-2 peak lr (the original's 1e-4).")
HEAD_BIAS = flags.DEFINE_string("head_bias", "torch", "Stage-2 head output bias: torch (the "
                                 "original's init) | train_mean.")
SIZE = flags.DEFINE_string("size", "small", "Pair cache size: large | small | mini.")
TINY = flags.DEFINE_bool("tiny", False, "A tiny random LLaMA with byte tokens (smoke runs).")
PEAK_TFLOPS = flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s per device for MFU; 0 = "
                                 "the device's known peak (none on CPU).")
BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "Paired bootstrap resamples.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the essay subset.")

REPO = Path(__file__).resolve().parents[1]
RUN = 1
# The original's means over its 5 runs (LLaMA-3.2-1B, the issue): baseline, best transfer.
REFERENCE = {"grammar": (0.679, 0.682), "vocabulary": (0.614, 0.620), "syntax": (0.647, 0.650)}
STAGE1_VARIANTS = ("warm_start", "warm_start_frozen", "stack", "fusion")


def subset_folds(src: Path, dst: Path, per_fold: int, seed: int) -> Path:
    """A seeded `per_fold` essays of every fold_k.csv of `src`, written as fold files."""
    from aes_jax.data.ell import fold_files

    if per_fold <= 0:
        return src
    dst.mkdir(parents=True, exist_ok=True)
    for k, path in fold_files(src).items():
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header, rows = next(reader), list(reader)
        if per_fold > len(rows):
            raise ValueError(f"{path}: {len(rows)} essays, fewer than --essays_per_fold="
                             f"{per_fold}")
        keep = sorted(np.random.default_rng([seed, k]).permutation(len(rows))[:per_fold])
        with open(dst / path.name, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows[i] for i in keep)
    log(f"subset: {per_fold} essays of each of {len(fold_files(src))} folds -> {dst}")
    return dst


def train_args(trait: str, variant: str, pair_mode: str, data: Path, workdir: Path
               ) -> list[str]:
    arg = f"trait={trait},variant={variant},size={SIZE.value},run={RUN},pair_mode={pair_mode}"
    s1_batch = 2 * BATCH.value if pair_mode == "in_batch" else BATCH.value
    args = [f"--config=configs/pair2score.py:{arg}{',tiny' if TINY.value else ''}",
            f"--workdir={workdir}", f"--config.data.input={data}",
            f"--config.data.seq_len={SEQ_LEN.value}",
            f"--config.relative.total_steps={STAGE1_STEPS.value}",
            f"--config.relative.global_batch_size={s1_batch}",
            f"--config.absolute.total_steps={STAGE2_STEPS.value}",
            f"--config.absolute.global_batch_size={BATCH.value}",
            f"--config.relative.optimizer.lr={STAGE1_LR.value}",
            f"--config.absolute.optimizer.lr={STAGE2_LR.value}",
            f"--config.head_bias={HEAD_BIAS.value}"]
    if PEAK_TFLOPS.value:
        args.append(f"--config.peak_flops_per_device={PEAK_TFLOPS.value * 1e12}")
    return args


def run_train(args: list[str], workdir: Path) -> dict[str, Any]:
    """launch.train in a subprocess (its output in WORKDIR.log); absolute_metrics.json."""
    workdir.parent.mkdir(parents=True, exist_ok=True)
    log_path = workdir.parent / f"{workdir.name}.log"
    start = time.perf_counter()
    with open(log_path, "a") as out:
        done = subprocess.run([sys.executable, "-m", "launch.train", *args], stdout=out,
                              stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"launch.train failed ({done.returncode}) for {workdir}; see "
                           f"{log_path}")
    result = json.loads((workdir / "absolute_metrics.json").read_text())
    result["wall_seconds"] = time.perf_counter() - start
    return result


def share_stage1(source: Path, workdir: Path) -> None:
    """Start `workdir` from the finished Stage 1 (and pair cache) of `source`."""
    for part in ("pairs", "relative"):
        if (source / part).is_dir() and not (workdir / part).exists():
            shutil.copytree(source / part, workdir / part)


def stage_speed(stage_dir: Path) -> dict[str, float]:
    """Median tokens/s, steps/s, MFU and pairs per step over the log windows after the first."""
    path = stage_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    windows = [r for r in records if "tokens_per_s" in r][1:] or \
        [r for r in records if "tokens_per_s" in r]
    out = {}
    for key in ("tokens_per_s", "steps_per_s", "mfu", "pairs_in_batch"):
        values = [r[key] for r in windows if key in r]
        if values:
            out[key] = float(np.median(values))
    return out


def baselines(workdir: Path) -> dict[str, dict[str, float]]:
    """Constant and TF-IDF ridge on the run's Stage-2 train essays, scored on its held-out
    fold with the run's metrics (0.5 grid, clipped)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    from aes_jax.runs import load_config
    from aes_jax.tasks.pair2score_absolute import score_metrics
    from aes_jax.tasks.pair2score_data import PairStageData
    from aes_jax.tasks.pair2score_options import Pair2ScoreOptions

    options = Pair2ScoreOptions.from_config(load_config(workdir))
    data = PairStageData(options, workdir, tokenizer=None)
    splits = data.stage2_splits
    text = {s: [data.essays[r].text for r in rows] for s, rows in splits.items()}
    y = {s: data.scores[rows].astype(np.float64) for s, rows in splits.items()}
    binning = options.qwk_binning
    out = {"constant": score_metrics(y["test"], np.full(len(y["test"]), y["train"].mean()),
                                     binning)}
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(text["train"])
    x = {s: vec.transform(t) for s, t in text.items()}
    best = None
    for alpha in (0.3, 1.0, 3.0, 10.0, 30.0):
        model = Ridge(alpha=alpha).fit(x["train"], y["train"])
        val = score_metrics(y["val"], model.predict(x["val"]), binning)
        if best is None or (val["qwk"], -val["mae"]) > best[0]:
            best = ((val["qwk"], -val["mae"]), alpha, model)
    _, alpha, model = best
    out["tfidf_ridge"] = {**score_metrics(y["test"], model.predict(x["test"]), binning),
                          "alpha": alpha}
    return out


def read_predictions(workdir: Path) -> dict[str, tuple[float, float]]:
    """text_id -> (gold, raw prediction) from the run's held-out predictions CSV."""
    with open(workdir / "absolute" / "predictions_test.csv", newline="") as f:
        rows = list(csv.reader(f))
    return {r[0]: (float(r[1]), float(r[2])) for r in rows[1:]}


def bootstrap_qwk_difference(a: dict[str, tuple[float, float]],
                             b: dict[str, tuple[float, float]], binning: str,
                             resamples: int, seed: int = 0) -> dict[str, Any]:
    """QWK(a) - QWK(b) on the same held-out essays, with a 95% paired bootstrap interval."""
    from aes_jax.tasks.pair2score_absolute import score_metrics

    if set(a) != set(b):
        raise AssertionError("the two runs' held-out essays differ")
    ids = sorted(a)
    gold = np.asarray([a[i][0] for i in ids])
    pa, pb = np.asarray([a[i][1] for i in ids]), np.asarray([b[i][1] for i in ids])
    qwk = lambda idx, p: score_metrics(gold[idx], p[idx], binning)["qwk"]  # noqa: E731
    every = np.arange(len(ids))
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, len(ids), len(ids))
        diffs.append(qwk(idx, pa) - qwk(idx, pb))
    return {"observed": qwk(every, pa) - qwk(every, pb),
            "ci95": [float(np.nanpercentile(diffs, 2.5)), float(np.nanpercentile(diffs, 97.5))]}


def run_trait(trait: str, data: Path, out: Path) -> dict[str, Any]:
    runs: dict[str, dict[str, Any]] = {}
    order = sorted(VARIANTS.value, key=lambda v: v not in STAGE1_VARIANTS)  # Stage 1 first
    stage1_source = None
    for variant in order:
        workdir = out / trait / variant
        if variant in STAGE1_VARIANTS and stage1_source is not None:
            share_stage1(stage1_source, workdir)
        log(f"{trait} {variant}: training ({workdir})")
        runs[variant] = run_train(train_args(trait, variant, "cached", data, workdir), workdir)
        if variant in STAGE1_VARIANTS and stage1_source is None:
            stage1_source = workdir
    if trait in IN_BATCH_TRAITS.value:
        workdir = out / trait / "in_batch_warm_start"
        log(f"{trait} in-batch Stage 1 + warm_start: training ({workdir})")
        runs["in_batch"] = run_train(train_args(trait, "warm_start", "in_batch", data, workdir),
                                     workdir)
    for name, result in runs.items():
        workdir = out / trait / ("in_batch_warm_start" if name == "in_batch" else name)
        result["run_dir"] = str(workdir)
        result["speed"] = {stage: stage_speed(workdir / stage)
                           for stage in ("relative", "absolute")}
        log(f"{trait} {name}: QWK {result['qwk']:.4f}, MAE {result['mae']:.4f}")
    any_run = Path(next(iter(runs.values()))["run_dir"])
    base = baselines(any_run)
    compare = {}
    if "baseline" in runs:
        ref = read_predictions(Path(runs["baseline"]["run_dir"]))
        binning = runs["baseline"]["qwk_binning"]
        for name, result in runs.items():
            if name != "baseline":
                compare[name] = bootstrap_qwk_difference(
                    read_predictions(Path(result["run_dir"])), ref, binning, BOOTSTRAP.value)
    return {"runs": runs, "baselines": base, "vs_baseline": compare}


def main(argv):
    del argv
    from bench.pair2score_report import write_report

    out = Path(OUT.value).resolve()  # launch.train runs in the repository root
    out.mkdir(parents=True, exist_ok=True)
    data = subset_folds(Path(DATA.value).resolve(), out / "data", ESSAYS_PER_FOLD.value,
                        SEED.value)
    settings = {"data": DATA.value, "essays_per_fold": ESSAYS_PER_FOLD.value,
                "seq_len": SEQ_LEN.value, "stage1_steps": STAGE1_STEPS.value,
                "stage2_steps": STAGE2_STEPS.value, "batch": BATCH.value,
                "stage1_lr": STAGE1_LR.value, "stage2_lr": STAGE2_LR.value,
                "head_bias": HEAD_BIAS.value, "size": SIZE.value,
                "run": RUN, "model": "tiny random LLaMA" if TINY.value
                else "SmolLM2-135M-Instruct (packaged)", "seed": SEED.value}
    results = {"settings": settings, "reference": REFERENCE, "traits": {}}
    for trait in TRAITS.value:
        results["traits"][trait] = run_trait(trait, data, out)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    for path in write_report(results, out):
        log(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
