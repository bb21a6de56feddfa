"""Orbax CheckpointManager for the train state and the input iterator's state.

WORKDIR/checkpoints/<step>/{state, data}: `state` is the TrainState pytree (sharded
arrays are written collectively by all processes), `data` the grain iterator state as
JSON. Saves are async: orbax copies device buffers to host before `save` returns, so
the next step may donate them.

Kept: the last `keep` checkpoints, plus the best one on the dev metric when the loop
tracks one. A checkpoint saved at an evaluation carries `{"name", "mode", "value"}` of
that metric as its orbax metrics, so readers find the best step without the run config.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint._src.checkpoint_managers import preservation_policy as keep_policy

from aes_jax.train.state import TrainState

BEST, LAST = "best", "last"


class _NoMetricNotice(logging.Filter):
    """orbax warns on every save without metrics once it tracks a best; ours are the
    periodic saves between evaluations, expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_NoMetricNotice())


def _ranking(metrics: dict) -> float:
    """Higher is better whatever the metric's direction; NaN ranks last."""
    value = float(metrics["value"])
    if math.isnan(value):
        return -math.inf
    return value if metrics["mode"] == "max" else -value


def _options(keep: int | None, track_best: bool, async_save: bool
             ) -> ocp.CheckpointManagerOptions:
    policy = None
    if keep is not None:
        policies = [keep_policy.LatestN(n=keep)]
        if track_best:
            policies.append(keep_policy.BestN(get_metric_fn=_ranking, n=1,
                                              keep_checkpoints_without_metrics=False))
        policy = keep_policy.AnyPreservationPolicy(policies)
    # best_fn makes orbax write a save's metrics; readers never write, so it is harmless.
    return ocp.CheckpointManagerOptions(preservation_policy=policy,
                                        best_fn=_ranking if track_best or keep is None else None,
                                        best_mode="max", create=keep is not None,
                                        enable_async_checkpointing=async_save)


class Checkpointer:
    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True,
                 track_best: bool = False):
        self.directory = Path(workdir).absolute() / "checkpoints"
        self.manager = ocp.CheckpointManager(
            self.directory, options=_options(keep, track_best, async_save),
            item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best(self) -> dict | None:
        """The best checkpoint's `{"step", "name", "mode", "value"}`, None without one."""
        return best_of(self.manager)

    def save(self, step: int, state: TrainState, data_state: dict,
             best_metric: dict | None = None) -> None:
        """`best_metric`: `{"name", "mode", "value"}` of the dev metric at this step."""
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)),
            metrics=best_metric, force=True)

    def restore(self, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
        """`abstract_state`: ShapeDtypeStructs with the target shardings."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored.state, restored.data

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def best_of(manager: ocp.CheckpointManager) -> dict | None:
    metrics = {s: manager.metrics(s) for s in manager.all_steps()}  # each read once
    ranked = {s: _ranking(m) for s, m in metrics.items() if m is not None}
    ranked = {s: r for s, r in ranked.items() if r > -math.inf}
    if not ranked:
        return None
    step = max(ranked, key=lambda s: (ranked[s], -s))
    return {"step": step, **metrics[step]}


def _reader(workdir: str | Path) -> ocp.CheckpointManager:
    directory = Path(workdir).absolute() / "checkpoints"
    if not Path(workdir).is_dir():
        raise FileNotFoundError(f"{workdir}: no such run directory")
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no checkpoints (is {workdir} a training run "
                                "that saved one?)")
    # Not orbax's read_only mode (it warns on every open); create=False writes nothing.
    return ocp.CheckpointManager(directory, options=_options(None, False, False),
                                 item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                                                "data": ocp.JsonCheckpointHandler()})


def resolve_step(workdir: str | Path, which: str | int | None = None) -> tuple[int, str]:
    """(step, how it was chosen) for `which` = "best", "last", a step number, or None
    (the best checkpoint when the run tracked one, else the last)."""
    with _reader(workdir) as manager:
        return _resolve(manager, workdir, which)


def _resolve(manager: ocp.CheckpointManager, workdir: str | Path, which: str | int | None
             ) -> tuple[int, str]:
    steps = sorted(manager.all_steps())
    if not steps:
        raise FileNotFoundError(f"{manager.directory}: no checkpoints")
    text = str(which).strip().lower() if which is not None else ""
    if text in ("", BEST):
        best = best_of(manager)  # reads every step's metrics: only when asked for
        if best is not None:
            return best["step"], (f"best {best['name']} {best['value']:.4f} "
                                  f"({best['mode']})")
        if text == BEST:
            raise FileNotFoundError(f"{workdir}: no best checkpoint (the run tracked no "
                                    f"best_metric); checkpoints: {steps}; use --step=last")
        return steps[-1], "last (no best checkpoint tracked)"
    if text == LAST:
        return steps[-1], "last"
    if not text.isdigit():
        raise ValueError(f"--step={which}: expected best, last or a step number")
    if int(text) not in steps:
        raise FileNotFoundError(f"{manager.directory}: no checkpoint for step {text} "
                                f"(have {steps})")
    return int(text), "requested"


def read_state_numpy(workdir: str | Path, step: int | str | None = None) -> tuple[int, dict]:
    """(step, TrainState pytree as numpy) from WORKDIR/checkpoints, whatever mesh or number
    of processes wrote it; `step` as `resolve_step` takes it (default best, else last)."""
    with _reader(workdir) as manager:
        step, _ = _resolve(manager, workdir, step)
        meta = manager.item_metadata(step)["state"]
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.PyTreeRestore(restore_args=args)))
        return step, restored.state


def abstract_like(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)


def latest_step(workdir: str | Path) -> int | None:
    """The newest complete checkpoint of a run directory, None when it has none."""
    if not (Path(workdir).absolute() / "checkpoints").is_dir():
        return None
    with _reader(workdir) as manager:
        return manager.latest_step()
