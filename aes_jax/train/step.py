"""The pure train step: gradient accumulation, clipping/optimiser update, optional EMA,
and a stateful task's state carried from step to step."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from aes_jax.train.state import TrainState

# loss_fn(trainable, frozen, task_state, batch, rng, step) -> (loss, metrics, task_state)
StatefulLoss = Callable[..., tuple[jax.Array, dict, Any]]


def split_microbatches(batch: Any, accum_steps: int) -> Any:
    """[B, ...] -> [accum, B / accum, ...] (row i of the micro-batch j is row j*B/accum+i)."""
    def split(x):
        if x.shape[0] % accum_steps:
            raise ValueError(f"batch of {x.shape[0]} rows is not divisible by "
                             f"grad_accum_steps={accum_steps}")
        return x.reshape((accum_steps, x.shape[0] // accum_steps) + x.shape[1:])
    return jax.tree.map(split, batch)


def join_microbatches(tree: Any) -> Any:
    """The inverse of `split_microbatches`."""
    return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), tree)


def stateless(loss_fn: Callable) -> StatefulLoss:
    """loss_fn(trainable, frozen, batch, rng, step) -> (loss, metrics), in the stateful
    signature the step uses (the state passes through untouched, usually None)."""
    def with_state(trainable, frozen, task_state, batch, rng, step):
        loss, metrics = loss_fn(trainable, frozen, batch, rng, step)
        return loss, metrics, task_state
    return with_state


def make_train_step(loss_fn: StatefulLoss, optimizer: optax.GradientTransformation,
                    schedule: Callable, accum_steps: int = 1, ema_decay: float = 0.0
                    ) -> Callable[[TrainState, Any, dict], tuple[TrainState, dict]]:
    """Gradients of the micro-batches are averaged, so accumulation equals one step on the
    whole batch; the task state (per row) is split and rejoined like the batch."""
    def loss_and_state(trainable, frozen, task_state, batch, rng, step):
        loss, metrics, new_state = loss_fn(trainable, frozen, task_state, batch, rng, step)
        return loss, (metrics, jax.lax.stop_gradient(new_state))

    grad_fn = jax.value_and_grad(loss_and_state, has_aux=True)

    def train_step(state: TrainState, frozen: Any, batch: dict):
        rng, step_rng = jax.random.split(state.rng)
        def accumulate(carry, xs):
            grads_sum, loss_sum = carry
            i, mb, ts = xs
            (loss, (aux, new_ts)), grads = grad_fn(state.trainable, frozen, ts, mb,
                                                   jax.random.fold_in(step_rng, i), state.step)
            return (jax.tree.map(jnp.add, grads_sum, grads), loss_sum + loss), (aux, new_ts)

        if accum_steps == 1:
            # The same numbers without a zero-filled gradient tree to add into (one pass
            # over every parameter's worth of memory per step, 2-4% of a CPU step).
            (loss, (aux, task_state)), grads = grad_fn(
                state.trainable, frozen, state.task_state, batch,
                jax.random.fold_in(step_rng, 0), state.step)
            aux, task_state = jax.tree.map(lambda x: x[None], (aux, task_state))
        else:
            micro = split_microbatches(batch, accum_steps)
            micro_state = split_microbatches(state.task_state, accum_steps)
            zeros = jax.tree.map(jnp.zeros_like, state.trainable)
            (grads, loss), (aux, task_state) = jax.lax.scan(
                accumulate, (zeros, jnp.zeros((), jnp.float32)),
                (jnp.arange(accum_steps), micro, micro_state))
            grads = jax.tree.map(lambda g: g / accum_steps, grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        ema = state.ema
        if ema is not None:
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, trainable)
        metrics = {"loss": loss / accum_steps, "grad_norm": optax.global_norm(grads),
                   "learning_rate": schedule(state.step),
                   **jax.tree.map(lambda x: jnp.mean(x, axis=0), aux)}
        new_state = state.replace(step=state.step + 1, trainable=trainable, opt_state=opt_state,
                                  rng=rng, ema=ema, task_state=join_microbatches(task_state))
        return new_state, metrics

    return train_step
