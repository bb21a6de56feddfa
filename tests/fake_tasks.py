"""Tasks written in a test, to show the loop needs nothing but the contract in
`aes_jax/train/task.py` (no registry, no model part, no dataset directory)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

TRUE_W = np.array([1.0, -2.0, 0.5], np.float32)


class Batches:
    """Seeded random regression rows; `get_state`/`set_state` give exact resume."""

    def __init__(self, rows: int, seed: int):
        self.rows, self.seed, self.count = rows, seed, 0

    def __next__(self) -> dict:
        rng = np.random.default_rng([self.seed, self.count])
        self.count += 1
        x = rng.normal(size=(self.rows, 3)).astype(np.float32)
        return {"x": x, "y": x @ TRUE_W, "row": np.arange(self.rows, dtype=np.float32)}

    def get_state(self) -> dict:
        return {"count": self.count}

    def set_state(self, state: dict) -> None:
        self.count = state["count"]


class LinearRegressionTask:
    """y = x . w, learned by the loop: the whole contract in 30 lines."""

    def init(self, rng):
        return {"w": jnp.zeros(3)}, {}

    def logical_axes(self):
        return {"w": P()}, {}

    def loss(self, trainable, frozen, batch, rng, step):
        err = batch["x"] @ trainable["w"] - batch["y"]
        return jnp.mean(err ** 2), {"step_seen": step.astype(jnp.float32)}

    def eval_step(self, trainable, frozen, batch):
        err = batch["x"] @ trainable["w"] - batch["y"]
        return {"mse_sum": jnp.sum(err ** 2 * batch["weight"]), "n": jnp.sum(batch["weight"])}

    def summarize(self, outputs):
        return {"mse": sum(float(o["mse_sum"]) for o in outputs)
                / sum(float(o["n"]) for o in outputs)}

    def train_iterator(self, global_batch_size, seed, process_index, process_count):
        return Batches(global_batch_size, seed)

    def eval_batches(self, batch_size, process_index, process_count):
        batch = next(Batches(batch_size, seed=123))
        yield {**batch, "weight": np.ones(batch_size, np.float32)}

    def tokens_in_batch(self, batch):
        return 0

    def flops_per_token(self):
        return 0.0


class RowMemoryTask(LinearRegressionTask):
    """A stateful task: each row keeps a running sum of its past squared errors (like a
    deep-supervision carry), and the loss weights each row by 1 + that memory."""

    def init_task_state(self, global_batch_size):
        return {"memory": jnp.zeros(global_batch_size), "seen": jnp.zeros(global_batch_size)}

    def loss_with_state(self, trainable, frozen, task_state, batch, rng, step):
        err2 = (batch["x"] @ trainable["w"] - batch["y"]) ** 2
        loss = jnp.mean(err2 * (1.0 + task_state["memory"]))
        new_state = {"memory": 0.5 * task_state["memory"] + err2,
                     "seen": task_state["seen"] + batch["row"] + 1.0}
        return loss, {"memory_mean": jnp.mean(new_state["memory"])}, new_state
