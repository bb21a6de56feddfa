"""The train state: everything a checkpoint must hold to resume exactly."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimiser updates done
    trainable: Any  # what the optimiser updates (e.g. {"lora": ...} or {"params": ...})
    opt_state: Any
    rng: jax.Array  # raw uint32 key, advanced every step (dropout etc.)
    ema: Any = None  # exponential moving average of `trainable`, when enabled
    task_state: Any = None  # a StatefulTask's per-row state (train/task.py), else None

    @classmethod
    def create(cls, trainable: Any, optimizer: optax.GradientTransformation, seed: int,
               use_ema: bool, task_state: Any = None) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), trainable=trainable,
                   opt_state=optimizer.init(trainable), rng=jax.random.PRNGKey(seed),
                   ema=jax.tree.map(jnp.copy, trainable) if use_ema else None,
                   task_state=task_state)
