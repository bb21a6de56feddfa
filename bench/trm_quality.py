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

Baselines: constant, length, tfidf and tfidf+length ridge, fitted per prompt on train,
hyper-parameter chosen on dev, scored on test (bench/trm_baselines.py says exactly how).
(JSON files written before tfidf-only existed call tfidf+length "tfidf"; --from_json
refits the baselines, so its tables use the names above.)

QWK is per prompt on the prompt's own range (predictions rounded half up and clipped),
RMSE on the raw predictions on the score scale, both from aes_jax.eval.metrics; "mean" is
the plain mean over prompts. The tables, the bootstrap and the chart are in
bench/trm_quality_report.py. After the method table comes the comparison table: one row
per prompt with the TRM's test QWK (best-on-dev and last checkpoint) beside every
baseline's, the margin TRM - best baseline (best = highest test QWK, the hardest one to
beat) with its 95% paired bootstrap interval, and a verdict that says where the TRM loses.
Writes WORKDIR/TAG.json (every number, the comparison included) and WORKDIR/TAG.png (test
QWK and RMSE per prompt and method). This is a benchmark, not a test.

    python -m bench.trm_quality --from_json=A.json,B.json,...

re-prints the comparison for saved runs (their prompts together, baselines refitted from
the data, the TRM's saved test predictions re-read for the intervals); nothing is trained.
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

from bench.llama_forward import load_average, log, write_json
from bench.trm_baselines import METHOD_LABELS, SPLITS, check_refit, run_baselines
from bench.trm_quality_report import (bar_chart, baseline_qwks, comparison, paired_bootstrap,
                                      print_comparison, print_table, read_predictions_csv,
                                      table, trm_by_prompt)

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
FROM_JSON = flags.DEFINE_list("from_json", [], "Saved TAG.json files: print the comparison "
                              "table of their prompts together and exit (no training).")

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


def default_tag(prompts: list[int], config) -> str:
    tag = f"p{''.join(map(str, prompts))}_{VARIANT.value}_s{config.total_steps}"
    for item in SET.value:
        key, _, value = item.partition("=")
        if key.strip() != "total_steps":
            tag += f"_{key.strip().split('.')[-1]}{value.strip()}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "", tag)


def reprint(paths: list[str]) -> None:
    """--from_json: the comparison table of saved runs, their prompts together."""
    prompts: list[int] = []
    trm: dict[int, dict[str, Any]] = {}
    trm_preds: dict[int, dict[int, tuple[int, float]]] | None = {}
    base_qwk: dict[str, dict[int, float]] = {m: {} for m in METHOD_LABELS}
    base_preds: dict[str, dict[int, dict[int, float]]] = {m: {} for m in METHOD_LABELS}
    for path in paths:
        payload = json.loads(Path(path).read_text())
        ps = [int(p) for p in payload["prompts"]]
        if set(ps) & set(prompts) or payload["trm"] is None:
            raise app.UsageError(f"{path}: prompts {ps} were in an earlier file, or no TRM run")
        files = (data_files(Path(payload["data_dir"]), ps)
                 or data_files(Path(DATA_DIR.value).resolve(), ps))
        if files is None:
            raise app.UsageError(f"{path}: the essays of prompts {ps} are in neither "
                                 f"{payload['data_dir']} nor --data_dir")
        baselines, preds = run_baselines(read_essays(files, ps), ps)
        check_refit(payload["baselines"], baselines, ps, path)
        trm.update(trm_by_prompt(payload["trm"]))
        csv_path = Path(payload["trm"]["test_predictions_csv"])
        if trm_preds is not None and csv_path.is_file():
            trm_preds.update(read_predictions_csv(csv_path))
        elif trm_preds is not None:
            log(f"{path}: {csv_path} is gone, so no bootstrap intervals")
            trm_preds = None
        for m in METHOD_LABELS:
            base_qwk[m].update(baseline_qwks(baselines, ps)[m])
            base_preds[m].update(preds[m])
        prompts += ps
        log(f"{path}: prompts {ps}, TRM {payload['config_variant']} config, tag {payload['tag']}")
    print_comparison(comparison(sorted(prompts), trm, base_qwk, trm_preds, base_preds,
                                BOOTSTRAP.value), BOOTSTRAP.value)


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
    if FROM_JSON.value:
        return reprint(FROM_JSON.value)
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
    verdict, compared = None, None
    if trm is not None:
        trm_preds = (read_predictions_csv(Path(trm["test_predictions_csv"]))
                     if BOOTSTRAP.value else None)
        compared = comparison(prompts, trm_by_prompt(trm), baseline_qwks(baselines, prompts),
                              trm_preds, baseline_preds, BOOTSTRAP.value)
        print_comparison(compared, BOOTSTRAP.value)
        overall = compared[-1]  # the mean row, or the one prompt's
        best = overall["best_baseline"]
        in_time = trm["wall_s"] < 30 * 60
        verdict = (f"TRM {'BEATS' if overall['margin'] > 0 else 'does NOT beat'} the best "
                   f"baseline ({best}) on test mean QWK ({overall['trm_best']:.4f} vs "
                   f"{overall['baselines'][best]:.4f}; "
                   + ", ".join(f"{m} {q:.4f}" for m, q in overall["baselines"].items())
                   + f") in {trm['wall_s'] / 60:.1f} min "
                   f"of training + dev selection + test evaluation "
                   f"({'within' if in_time else 'OVER'} "
                   "the 30-minute CPU budget)" + (f"; NOTE: resumed at step {trm['resumed_at']}, "
                                                  "so the time is this process's only"
                                                  if trm["resumed_at"] else ""))
        print(verdict, flush=True)
        if trm_preds is not None:
            trm["bootstrap_vs"] = {}
            for m in ("length", "tfidf", "tfidf+length"):
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
        "rows": rows, "baselines": baselines, "trm": trm, "comparison": compared,
        "verdict": verdict,
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
