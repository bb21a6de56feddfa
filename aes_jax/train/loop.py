"""The one training loop: `train(task, config, workdir)` trains any task.

The task gives init, a pure loss, data and evaluation sums (the contract is
`train/task.py`); this file does sharding, jit, accumulation, logging, evaluation,
checkpoints and exact resume. It reads the engine settings through `EngineConfig` and
never looks a task up by name.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import optax
from tqdm import tqdm

from aes_jax.train import sharding
from aes_jax.train.checkpoint import Checkpointer, abstract_like
from aes_jax.train.engine_config import EngineConfig
from aes_jax.train.metrics_writer import MetricWriter, peak_flops, truncate_after
from aes_jax.train.optim import make_optimizer
from aes_jax.train.state import TrainState
from aes_jax.train.step import make_train_step, stateless
from aes_jax.train.task import StatefulTask, Task

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    pass


def _state_shardings(state: TrainState, trainable_sh: Any, optimizer, mesh) -> TrainState:
    repl = sharding.replicated(mesh)
    # Optimiser moments are shaped like the params: shard them the same way.
    opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, state.opt_state, trainable_sh,
                                   transform_non_params=lambda _: repl)
    # A task's state is per row: split over the batch axes like the batch itself.
    task_sh = jax.tree.map(lambda _: sharding.batch_sharding(mesh), state.task_state)
    return TrainState(step=repl, trainable=trainable_sh, opt_state=opt_sh, rng=repl,
                      ema=trainable_sh if state.ema is not None else None, task_state=task_sh)


def _first_nonfinite(pending: list[tuple[int, dict]]) -> int | None:
    """A non-finite gradient norm poisons the params of that step even if its loss was fine."""
    for step, metrics in pending:
        if not all(math.isfinite(float(metrics[k])) for k in ("loss", "grad_norm")):
            return step
    return None


def evaluate(task: Task, eval_step, state: TrainState, frozen, batch_size: int, mesh
             ) -> dict[str, float]:
    """One pass over the task's eval batches; the task turns the outputs into metrics."""
    params = state.ema if state.ema is not None else state.trainable
    outputs = [jax.device_get(eval_step(params, frozen, sharding.global_batch(batch, mesh)))
               for batch in task.eval_batches(batch_size, jax.process_index(),
                                              jax.process_count())]
    return {f"eval_{k}": v for k, v in task.summarize(outputs).items()}


def train(task: Task, config: Any, workdir: str | Path) -> dict[str, Any]:
    """Runs (or resumes) training of `task` with the engine settings of `config`; returns
    the last logged metrics."""
    engine = EngineConfig.from_config(config)
    mesh = sharding.make_mesh(dict(engine.mesh))
    rules = list(engine.sharding_rules)
    # Models constrain activations by logical name; these contexts give the names meaning.
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return _train(task, engine, Path(workdir), mesh, rules)


def _train(task: Task, config: EngineConfig, workdir: Path, mesh, rules) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    stateful = isinstance(task, StatefulTask)
    log.info("mesh %s over %d devices (%d processes)", dict(mesh.shape), mesh.size,
             jax.process_count())

    optimizer, schedule = make_optimizer(dict(config.optimizer), config.total_steps)
    with nn.logical_axis_rules(()):  # init runs dummy shapes that the batch axes don't divide
        trainable, frozen = task.init(jax.random.PRNGKey(config.seed))
        trainable_axes, frozen_axes = task.logical_axes()
    trainable_sh = sharding.tree_shardings(trainable_axes, trainable, mesh, rules)
    frozen_sh = sharding.tree_shardings(frozen_axes, frozen, mesh, rules)
    trainable = jax.device_put(trainable, trainable_sh)
    frozen = jax.device_put(frozen, frozen_sh)

    def create_state(t):
        task_state = task.init_task_state(config.global_batch_size) if stateful else None
        return TrainState.create(t, optimizer, config.seed + 1, use_ema=config.ema_decay > 0,
                                 task_state=task_state)

    state_shapes = jax.eval_shape(create_state, trainable)
    state_sh = _state_shardings(state_shapes, trainable_sh, optimizer, mesh)
    state = jax.jit(create_state, out_shardings=state_sh)(trainable)
    del trainable

    iterator = task.train_iterator(config.global_batch_size, config.seed, jax.process_index(),
                                   jax.process_count())
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints,
                        async_save=config.async_checkpointing)
    start = ckpt.latest_step() or 0
    if start:
        state, data_state = ckpt.restore(start, abstract_like(state_shapes, state_sh))
        iterator.set_state(data_state)
        if is_main:
            print(f"resumed from {ckpt.directory / str(start)} at step {start}", flush=True)
    if is_main:
        truncate_after(workdir / "metrics.jsonl", start)

    batch_sh = sharding.batch_sharding(mesh)
    loss_fn = task.loss_with_state if stateful else stateless(task.loss)
    step_fn = make_train_step(loss_fn, optimizer, schedule, config.grad_accum_steps,
                              config.ema_decay)
    train_step = jax.jit(step_fn, in_shardings=(state_sh, frozen_sh, batch_sh),
                         out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
    eval_step = jax.jit(task.eval_step, out_shardings=sharding.replicated(mesh))

    writer = MetricWriter(workdir, enabled=is_main)
    peak = peak_flops(jax.devices()[0], config.peak_flops_per_device)
    flops_per_token = task.flops_per_token()
    pending: list[tuple[int, dict]] = []
    window_tokens, window_start = 0, time.perf_counter()
    last: dict[str, Any] = {}
    bar = tqdm(total=config.total_steps, initial=start, disable=not is_main, unit="step",
               dynamic_ncols=True)
    try:
        for step in range(start + 1, config.total_steps + 1):
            local = next(iterator)
            window_tokens += task.tokens_in_batch(local) * jax.process_count()
            state, metrics = train_step(state, frozen, sharding.global_batch(local, mesh))
            pending.append((step, metrics))

            is_last = step == config.total_steps
            do_eval = config.eval_every and (step % config.eval_every == 0 or is_last)
            do_ckpt = step % config.checkpoint_every == 0 or is_last
            do_log = step % config.log_every == 0 or is_last or do_eval
            if not (do_log or do_ckpt):
                continue
            pending = jax.device_get(pending)
            bad = _first_nonfinite(pending)
            if bad is not None:
                bad_metrics = dict(pending)[bad]
                raise NonFiniteLossError(
                    f"loss {float(bad_metrics['loss'])} / gradient norm "
                    f"{float(bad_metrics['grad_norm'])} at step {bad}; stopping. "
                    f"The last good checkpoint is kept in {ckpt.directory} "
                    f"(step {ckpt.latest_step()}).")
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_tokens / elapsed if elapsed > 0 else 0.0
            if do_log:
                record = {k: float(v) for k, v in pending[-1][1].items()}
                record["tokens_per_s"] = tokens_per_s
                if peak and flops_per_token:
                    record["mfu"] = tokens_per_s * flops_per_token / (peak * jax.device_count())
                if do_eval:
                    record.update(evaluate(task, eval_step, state, frozen, config.eval_batch_size,
                                           mesh))
                writer.write(step, record)
                last = {"step": step, **record}
                bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{tokens_per_s:,.0f}")
            bar.update(len(pending))
            pending, window_tokens, window_start = [], 0, time.perf_counter()
            if do_ckpt:
                ckpt.save(step, state, iterator.get_state())
    finally:
        bar.close()
        ckpt.close()
        writer.close()
    return last
