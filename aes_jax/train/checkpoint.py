"""Orbax CheckpointManager for the train state and the input iterator's state.

WORKDIR/checkpoints/<step>/{state, data}: `state` is the TrainState pytree (sharded
arrays are written collectively by all processes), `data` the grain iterator state as
JSON. Saves are async: orbax copies device buffers to host before `save` returns, so
the next step may donate them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from aes_jax.train.state import TrainState


class Checkpointer:
    def __init__(self, workdir: str | Path, keep: int = 3, async_save: bool = True):
        self.directory = Path(workdir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: TrainState, data_state: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))

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


def read_state_numpy(workdir: str | Path, step: int | None = None) -> tuple[int, dict]:
    """(step, TrainState pytree as numpy) from WORKDIR/checkpoints, whatever mesh or number
    of processes wrote it; the latest step by default."""
    directory = Path(workdir).absolute() / "checkpoints"
    steps = sorted(int(p.name) for p in directory.glob("*") if p.name.isdigit())
    if not steps:
        raise FileNotFoundError(f"{directory}: no checkpoints")
    step = steps[-1] if step is None else step
    if step not in steps:
        raise FileNotFoundError(f"{directory}: no checkpoint for step {step} (have {steps})")
    path = directory / str(step) / "state"
    with ocp.PyTreeCheckpointer() as ckptr:
        meta = ckptr.metadata(path).item_metadata.tree
        args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
        return step, ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def abstract_like(tree: Any, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        tree, shardings)
