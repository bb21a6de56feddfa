"""Evaluate a training run's checkpoint on a split and write the eval/ directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from aes_jax import tasks
from aes_jax.eval import metrics, plots
from aes_jax.train.checkpoint import read_state_numpy


def load_run(run_dir: str | Path, overrides: dict[str, Any] | None = None):
    """(config, task) rebuilt from RUN/config.json, as the run built them."""
    run_dir = Path(run_dir)
    config = ml_collections.ConfigDict(json.loads((run_dir / "config.json").read_text()))
    for key, value in (overrides or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config, tasks.build(config, run_dir)


def restore_params(run_dir: str | Path, config, task, step: int | None = None,
                   use_ema: bool = False) -> tuple[int, Any, Any]:
    """(step, trainable, frozen): trainable from the checkpoint (or its EMA), the frozen
    part (e.g. a LoRA base) rebuilt exactly as the run built it."""
    step, state = read_state_numpy(run_dir, step)
    if use_ema and state.get("ema") is None:
        raise ValueError(f"{run_dir}: checkpoint {step} has no EMA (config.ema_decay was 0)")
    _, frozen = task.init(jax.random.PRNGKey(config.seed))
    return step, (state["ema"] if use_ema else state["trainable"]), frozen


def evaluate_run(run_dir: str | Path, split: str = "test", step: int | None = None,
                 use_ema: bool = False, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Metrics JSON, predictions CSV, one confusion-matrix PNG per prompt and the learning
    curve, under RUN/eval/ (or `out_dir`)."""
    run_dir = Path(run_dir)
    config, task = load_run(run_dir, {"data.eval_split": split})
    step, trainable, frozen = restore_params(run_dir, config, task, step, use_ema)
    eval_step = jax.jit(task.eval_step)
    outputs = [jax.device_get(eval_step(trainable, frozen, batch))
               for batch in task.eval_batches(config.eval_batch_size, 0, 1)]
    result = {"run": str(run_dir), "split": split, "step": step, "ema": use_ema,
              **task.summarize(outputs)}
    out = Path(out_dir) if out_dir else run_dir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"metrics_{split}.json").write_text(json.dumps(result, indent=2) + "\n")
    if hasattr(task, "predictions"):
        rows = task.predictions(outputs)
        write_predictions_csv(rows, out / f"predictions_{split}.csv")
        for prompt in sorted(set(rows["prompt"].tolist())):
            lo, hi = task.ranges[prompt]
            sel = rows["prompt"] == prompt
            cm = metrics.confusion_matrix(rows["gold"][sel], rows["pred"][sel], lo, hi)
            plots.confusion_matrix_png(cm, list(range(lo, hi + 1)),
                                       f"prompt {prompt} ({split}, step {step})",
                                       out / f"confusion_{split}_p{prompt}.png")
    if (run_dir / "metrics.jsonl").is_file():
        plots.learning_curve_png(run_dir / "metrics.jsonl", out / "learning_curve.png",
                                 keys=("loss", "mse_last_step", "eval_loss"),
                                 extra_keys=("eval_mean_qwk",))
    return result


def write_predictions_csv(rows: dict[str, np.ndarray], path: Path) -> Path:
    """essay_id, prompt, [gold,] predicted_raw, predicted; gold only when `rows` has it."""
    has_gold = "gold" in rows
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["essay_id", "prompt"] + (["gold"] if has_gold else [])
                        + ["predicted_raw", "predicted"])
        for i in range(len(rows["essay_id"])):
            gold = [int(rows["gold"][i])] if has_gold else []
            writer.writerow([int(rows["essay_id"][i]), int(rows["prompt"][i])] + gold
                            + [f"{float(rows['pred_raw'][i]):.4f}", int(rows["pred"][i])])
    return path
