"""A training run directory, above tasks and the engine: rebuild its task from
RUN/config.json, compare a new config with it before resuming, restore its params from a
checkpoint, evaluate it into RUN/eval/."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import ml_collections

from aes_jax import tasks
from aes_jax.eval import plots
from aes_jax.tasks.capabilities import EvalArtifactWriter, StagedTask
from aes_jax.train.checkpoint import read_state_numpy
from aes_jax.train.engine_config import EngineConfig
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


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested JSON dicts -> {"a.b": leaf}."""
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def config_changes(stored: dict, new: dict) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (stored value, new value) for every key that differs."""
    a, b = flatten(stored), flatten(new)
    missing = object()
    return {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)}


def _shown(value: Any) -> str:
    text = "(absent)" if not isinstance(value, (str, int, float, bool, list, dict, type(None))
                                        ) else json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_resume(workdir: str | Path, resolved: dict, allowed: Sequence[str]
                 ) -> dict[str, tuple]:
    """The changes `allowed` (--allow_changes: dotted keys or prefixes) admits against
    WORKDIR/config.json ({} for a new run); a ValueError naming the other changed keys."""
    workdir = Path(workdir)
    path = workdir / "config.json"
    if not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e}); it is this run's stored config, "
                         "fix or remove it") from None
    changes = config_changes(stored, resolved)
    # A field newer than the run is not a change of it while it keeps the old behaviour:
    # an engine setting at its default, or a task field that is off / empty ("", 0, False),
    # as new fields are added.
    defaults, had = dataclasses.asdict(EngineConfig()), flatten(stored)
    changes = {k: (old, new) for k, (old, new) in changes.items()
               if not (k not in had and (new == defaults[k] if k in defaults else not new))}
    refused = {k: v for k, v in changes.items()
               if not any(k == a or k.startswith(a + ".") for a in allowed)}
    if refused:
        listed = ", ".join(f"{k} ({_shown(old)} -> {_shown(new)})"
                           for k, (old, new) in list(refused.items())[:6])
        more = f" and {len(refused) - 6} more" if len(refused) > 6 else ""
        raise ValueError(
            f"{workdir} is a run with a different config: {listed}{more}. Use a new "
            f"--workdir, or pass --allow_changes={','.join(refused)} to resume it with the "
            "new values")
    return changes


def record_config(workdir: Path, text: str, changes: Mapping[str, tuple], step: int) -> None:
    """Writes the resolved config of a new run, or of a resumed one whose changes were
    allowed (the stored one is kept as config_before_step_STEP.json)."""
    path = workdir / "config.json"
    if path.is_file() and not changes:
        return
    if path.is_file():  # allowed changes: keep what the earlier steps ran with
        kept, k = workdir / f"config_before_step_{step}.json", 1
        while kept.exists():  # changed twice at the same step: keep both earlier ones
            kept, k = workdir / f"config_before_step_{step}_{k}.json", k + 1
        path.rename(kept)
        print(f"config changes allowed: {', '.join(changes)}; the earlier config is kept as "
              f"{kept.name}")
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def load_run(run_dir: str | Path, overrides: Mapping[str, Any] | None = None
             ) -> tuple[ml_collections.ConfigDict, Task]:
    """(config, task) rebuilt from RUN/config.json, as the run built them (cheap: no
    weights are read and no training data is tokenised until they are needed)."""
    config = load_config(run_dir, overrides)
    return config, tasks.build(config, run_dir)


def checkpointed_task(run_dir: str | Path, task: Task) -> tuple[Task, Path]:
    """(task, checkpoint dir) a run's evaluation and export read: the run itself, or for a
    `StagedTask` (Pair2Score) its final stage and RUN/<stage name>."""
    if isinstance(task, StagedTask):
        stage = task.final_stage()
        return stage.task, Path(run_dir) / stage.name
    return task, Path(run_dir)


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
    task, ckpt_dir = checkpointed_task(run_dir, task)
    step, trainable, frozen = restore_params(ckpt_dir, config, task, step, use_ema)
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
    if (ckpt_dir / "metrics.jsonl").is_file():
        # The split the loop evaluated on while training, not this evaluation's `split`.
        eval_split = load_config(run_dir).get("data", {}).get("eval_split", "dev")
        plots.learning_curve_png(ckpt_dir / "metrics.jsonl", out / "learning_curve.png",
                                 keys=("loss", "mse", "mse_last_step", "eval_loss"),
                                 extra_keys=("eval_mean_qwk", "eval_qwk"),
                                 labels={"eval_mean_qwk": f"{eval_split} mean QWK",
                                         "eval_qwk": f"{eval_split} QWK"})
        files.append(out / "learning_curve.png")
    return {**result, "files": [str(f) for f in files]}
