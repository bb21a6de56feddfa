"""A training run directory, above tasks and the engine: rebuild its task from
RUN/config.json, restore its params from a checkpoint, evaluate it into RUN/eval/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import jax
import ml_collections

from aes_jax import tasks
from aes_jax.eval import plots
from aes_jax.tasks.capabilities import EvalArtifactWriter
from aes_jax.train.checkpoint import read_state_numpy
from aes_jax.train.task import Task


def load_config(run_dir: str | Path, overrides: Mapping[str, Any] | None = None
                ) -> ml_collections.ConfigDict:
    """RUN/config.json as a ConfigDict, with dotted-key overrides ("data.eval_split")."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json; expected a training run "
                                "directory written by launch.train")
    config = ml_collections.ConfigDict(json.loads(path.read_text()))
    for key, value in (overrides or {}).items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def load_run(run_dir: str | Path, overrides: Mapping[str, Any] | None = None
             ) -> tuple[ml_collections.ConfigDict, Task]:
    """(config, task) rebuilt from RUN/config.json, as the run built them (cheap: no
    weights are read and no training data is tokenised until they are needed)."""
    config = load_config(run_dir, overrides)
    return config, tasks.build(config, run_dir)


def restore_params(run_dir: str | Path, config: Any, task: Task,
                   step: int | str | None = None,
                   use_ema: bool = False) -> tuple[int, Any, Any]:
    """(step, trainable, frozen): trainable from the checkpoint (or its EMA), the frozen
    part (e.g. a LoRA base) rebuilt exactly as the run built it."""
    step, state = read_state_numpy(run_dir, step)
    if use_ema and state.get("ema") is None:
        raise ValueError(f"{run_dir}: checkpoint {step} has no EMA (config.ema_decay was 0)")
    _, frozen = task.init(jax.random.PRNGKey(config.seed))
    return step, (state["ema"] if use_ema else state["trainable"]), frozen


def evaluate_run(run_dir: str | Path, split: str = "test", step: int | str | None = None,
                 use_ema: bool = False, out_dir: str | Path | None = None) -> dict[str, Any]:
    """metrics_<split>.json and the learning curve for every task, under RUN/eval/ (or
    `out_dir`), plus what an `EvalArtifactWriter` task adds (TRM: predictions CSV and
    confusion matrices). Returns the metrics with `files`: the paths written. `step` as
    `read_state_numpy` takes it (default: the best checkpoint, else the last)."""
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
    files = [out / f"metrics_{split}.json"]
    files[0].write_text(json.dumps(result, indent=2) + "\n")
    if isinstance(task, EvalArtifactWriter):
        files += task.write_eval_artifacts(outputs, out, split=split, step=step)
    if (run_dir / "metrics.jsonl").is_file():
        # The split the loop evaluated on while training, not this evaluation's `split`.
        eval_split = load_config(run_dir).get("data", {}).get("eval_split", "dev")
        plots.learning_curve_png(run_dir / "metrics.jsonl", out / "learning_curve.png",
                                 keys=("loss", "mse", "mse_last_step", "eval_loss"),
                                 extra_keys=("eval_mean_qwk",),
                                 labels={"eval_mean_qwk": f"{eval_split} mean QWK"})
        files.append(out / "learning_curve.png")
    return {**result, "files": [str(f) for f in files]}
