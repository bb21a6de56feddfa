"""TRM-AES deep supervision: the two training schemes, as pure loss functions.

Per supervision step the loss is the reference's: the mean over rows of the score MSE
plus `halt_loss_weight` (0.5) times the mean halting BCE of the Q-head against "the
holistic prediction is already within half a score point". The reference sums both over
rows and divides the gradient by the global batch, which is the same mean.

per_step (the paper's, the default): every supervision step is one optimiser update.
  The batch carries over between updates in the task state: each row keeps its essay and
  carry (z_H, z_L) until it halts (at n_sup, or where the Q-head says stop, with
  exploration); a halted row then takes the next batch's essay in that slot, its carry
  reset to the start states. As in the reference, the other rows of a new batch go
  unused, so the data advance one batch per update.
per_batch: one update per batch, averaging the n_sup supervision steps' losses over the
  unrolled batch (rows that halted stop being supervised): n_sup times fewer updates
  than per_step for the same number of supervision steps.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp

from aes_jax.losses.regression import halting_bce, weighted_mse
from aes_jax.models.dtypes import compute_dtype
from aes_jax.models.trm import TRM, Carry, TRMOutput, initial_carry, reset_carry, training_halt

Array = jax.Array
SCHEMES = ("per_step", "per_batch")
# The batch fields a row keeps while it is being supervised (per_step).
ROW_FIELDS = ("input_ids", "attention_mask", "target", "target_mask", "half_point")


@dataclasses.dataclass(frozen=True)
class Supervision:
    scheme: str = "per_step"
    use_halting: bool = True  # train the Q-head and stop rows where it says so
    halt_exploration_prob: float = 0.1
    halt_loss_weight: float = 0.5

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f"supervision={self.scheme!r}: expected one of {SCHEMES}")
        if not 0.0 <= self.halt_exploration_prob <= 1.0:
            raise ValueError(f"halt_exploration_prob={self.halt_exploration_prob}: "
                             "expected a probability in [0, 1]")
        if self.halt_loss_weight < 0:
            raise ValueError(f"halt_loss_weight={self.halt_loss_weight}: expected >= 0")


def step_loss(out: TRMOutput, rows: Mapping[str, Array], weight: Array, sup: Supervision
              ) -> tuple[Array, Array, Array]:
    """(loss, mse, bce) of one supervision step over the rows with weight > 0."""
    mse = weighted_mse(out.scores, rows["target"], weight, rows["target_mask"])
    if not sup.use_halting:
        return mse, mse, jnp.zeros((), mse.dtype)
    error = jnp.abs(out.scores[:, 0] - rows["target"][:, 0])
    correct = jax.lax.stop_gradient(error < rows["half_point"])
    bce = halting_bce(out.halt_logit, correct, weight)
    return mse + sup.halt_loss_weight * bce, mse, bce


def _apply(model: TRM, params: dict, carry: Carry, rows: Mapping[str, Array], rng: Array
           ) -> TRMOutput:
    return model.apply({"params": params}, carry, rows["input_ids"], rows["attention_mask"],
                       deterministic=False, rngs={"dropout": rng})


def per_batch_loss(model: TRM, params: dict, batch: Mapping[str, Array], rng: Array,
                   sup: Supervision) -> tuple[Array, dict[str, Array]]:
    n_sup = model.cfg.n_sup
    carry = initial_carry(model.cfg, *batch["input_ids"].shape)
    active = jnp.ones(batch["input_ids"].shape[0], jnp.float32)
    total, mse = 0.0, 0.0
    for s in range(n_sup):
        out = _apply(model, params, carry, batch, jax.random.fold_in(rng, 2 * s))
        loss, mse, _ = step_loss(out, batch, active, sup)
        total = total + loss
        steps = jnp.full(active.shape, s + 1, jnp.int32)
        halted = training_halt(out.halt_logit, steps, n_sup, sup.use_halting,
                               sup.halt_exploration_prob, jax.random.fold_in(rng, 2 * s + 1))
        active = active * (1.0 - halted.astype(jnp.float32))
        carry = out.carry
    return total / n_sup, {"mse_last_step": mse}


def init_rows_state(model: TRM, global_batch_size: int, seq_len: int,
                    example: Mapping[str, Array]) -> dict[str, Array]:
    """Every row halted, so the first update takes the whole first batch. `example` gives
    the shapes and dtypes of one row's ROW_FIELDS."""
    b, c = global_batch_size, model.cfg
    carry_shape = (b, seq_len, c.hidden_size)
    state = {k: jnp.zeros((b,) + jnp.shape(example[k]), jnp.asarray(example[k]).dtype)
             for k in ROW_FIELDS}
    dtype = compute_dtype(c.dtype)
    state.update(z_h=jnp.zeros(carry_shape, dtype), z_l=jnp.zeros(carry_shape, dtype),
                 steps=jnp.zeros((b,), jnp.int32), halted=jnp.ones((b,), bool))
    return state


def refill(model: TRM, state: Mapping[str, Array], batch: Mapping[str, Array]
           ) -> tuple[dict[str, Array], Carry, Array]:
    """Halted rows take the batch's essay and the start states; the others keep theirs.
    -> (rows, carry, steps done before this update)."""
    halted = state["halted"]

    def pick(new, old):
        return jnp.where(halted.reshape((-1,) + (1,) * (old.ndim - 1)), new.astype(old.dtype), old)

    rows = {k: pick(batch[k], state[k]) for k in ROW_FIELDS}
    carry = reset_carry(model.cfg, Carry(state["z_h"], state["z_l"]), halted)
    return rows, carry, jnp.where(halted, 0, state["steps"])


def per_step_loss(model: TRM, params: dict, state: Mapping[str, Array],
                  batch: Mapping[str, Array], rng: Array, sup: Supervision
                  ) -> tuple[Array, dict[str, Array], dict[str, Array]]:
    rows, carry, steps = refill(model, state, batch)
    dropout_key, halt_key = jax.random.split(rng)
    out = _apply(model, params, carry, rows, dropout_key)
    weight = jnp.ones(steps.shape, jnp.float32)
    loss, mse, bce = step_loss(out, rows, weight, sup)
    steps = steps + 1
    halted = training_halt(out.halt_logit, steps, model.cfg.n_sup, sup.use_halting,
                           sup.halt_exploration_prob, halt_key)
    halted_f = halted.astype(jnp.float32)
    metrics = {"mse": mse, "halt_bce": bce, "new_rows": jnp.sum(state["halted"]).astype(jnp.float32),
               # supervision steps the rows that stop here ran (n_sup when none stop)
               "steps_at_halt": jnp.sum(steps * halted_f) / jnp.maximum(jnp.sum(halted_f), 1.0)}
    new_state = {**rows, "z_h": out.carry.z_h, "z_l": out.carry.z_l, "steps": steps,
                 "halted": halted}
    return loss, metrics, new_state
