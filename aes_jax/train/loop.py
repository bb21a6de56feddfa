"""The one training loop: `train(task, config, workdir)` trains any task.

The task gives init, a pure loss, data and evaluation sums (the contract is
`train/task.py`); this file does sharding, jit, accumulation, logging, evaluation,
checkpoints and exact resume. It reads the engine settings through `EngineConfig` and
never looks a task up by name.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import optax
from tqdm import tqdm

from aes_jax.train import console, sharding
from aes_jax.train.checkpoint import Checkpointer, abstract_like
from aes_jax.train.engine_config import EngineConfig
from aes_jax.train.metrics_writer import MetricWriter, peak_flops, truncate_after
from aes_jax.train.optim import make_optimizer
from aes_jax.train.state import TrainState
from aes_jax.train.step import make_train_step, stateless
from aes_jax.train.interrupt import StopRequests, TrainingInterrupted
from aes_jax.train.task import Reporting, StatefulTask, Task

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    pass


def state_shardings(state: TrainState, trainable_sh: Any, optimizer, mesh) -> TrainState:
    repl = sharding.replicated(mesh)
    # Optimiser moments are shaped like the params: shard them the same way.
    opt_sh = optax.tree_map_params(optimizer, lambda _, s: s, state.opt_state, trainable_sh,
                                   transform_non_params=lambda _: repl)
    # A task's state is per row: split over the batch axes like the batch itself.
    task_sh = jax.tree.map(lambda _: sharding.batch_sharding(mesh), state.task_state)
    return TrainState(step=repl, trainable=trainable_sh, opt_state=opt_sh, rng=repl,
                      ema=trainable_sh if state.ema is not None else None, task_state=task_sh)


class Placed(NamedTuple):
    state: TrainState
    frozen: Any
    state_shapes: TrainState  # ShapeDtypeStructs, for restoring a checkpoint onto
    state_sh: TrainState
    frozen_sh: Any
    n_trainable: int
    n_total: int


def initial_state(task: Any, config: EngineConfig, optimizer, mesh, rules,
                  init_task_state: Callable[[], Any] | None = None) -> Placed:
    """The task's params on the mesh and the fresh TrainState (both loops start here)."""
    with nn.logical_axis_rules(()):  # init runs dummy shapes that the batch axes don't divide
        trainable, frozen = task.init(jax.random.PRNGKey(config.seed))
        trainable_axes, frozen_axes = task.logical_axes()
    n_trainable = console.count_params(trainable)
    n_total = n_trainable + console.count_params(frozen)
    trainable_sh = sharding.tree_shardings(trainable_axes, trainable, mesh, rules)
    frozen_sh = sharding.tree_shardings(frozen_axes, frozen, mesh, rules)
    trainable = jax.device_put(trainable, trainable_sh)
    frozen = jax.device_put(frozen, frozen_sh)

    def create_state(t):
        return TrainState.create(t, optimizer, config.seed + 1, use_ema=config.ema_decay > 0,
                                 task_state=init_task_state() if init_task_state else None)

    state_shapes = jax.eval_shape(create_state, trainable)
    state_sh = state_shardings(state_shapes, trainable_sh, optimizer, mesh)
    state = jax.jit(create_state, out_shardings=state_sh)(trainable)
    return Placed(state, frozen, state_shapes, state_sh, frozen_sh, n_trainable, n_total)


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


LOWER_IS_BETTER = ("loss", "rmse", "mse", "mae", "perplexity")


def best_metric_of(task: Task, config: EngineConfig) -> tuple[str, str] | None:
    """(key, "max"/"min") the best checkpoint is kept on, or None (config.best_metric)."""
    if config.best_metric == "none":
        return None
    default = task.best_metric() if isinstance(task, Reporting) else None
    name = config.best_metric or (default[0] if default else "")
    if not name:
        return None
    if config.best_mode:
        return name, config.best_mode
    if default and name == default[0]:
        return default
    return name, "min" if any(w in name for w in LOWER_IS_BETTER) else "max"


def read_last_record(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _train(task: Task, config: EngineConfig, workdir: Path, mesh, rules) -> dict[str, Any]:
    with StopRequests() as stop:
        return _run(task, config, workdir, mesh, rules, stop)


def _run(task: Task, config: EngineConfig, workdir: Path, mesh, rules, stop: StopRequests
         ) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    say = print if is_main else (lambda *a, **k: None)
    stateful = isinstance(task, StatefulTask)
    reporting = isinstance(task, Reporting)
    tracked = best_metric_of(task, config)
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints,
                        async_save=config.async_checkpointing, track_best=tracked is not None)
    start = ckpt.latest_step() or 0
    headline = task.headline_metrics() if reporting else None
    early = start and _patience_spent(tracked, ckpt.best(), start, config)
    if start >= config.total_steps or early:  # a finished run started again
        best = ckpt.best()
        ckpt.close()
        last = read_last_record(workdir / "metrics.jsonl")
        keys = console.headline_keys(last, headline)
        why = (f"stopped early: no new best for {config.early_stop_patience} evaluations"
               if early else f"config.total_steps={config.total_steps}")
        for line in console.summary_lines(
                f"{workdir}: already finished at step {start} ({why}); its last metrics:",
                last, keys, best):
            say(line)
        return last

    optimizer, schedule = make_optimizer(dict(config.optimizer), config.total_steps)
    init_task_state = ((lambda: task.init_task_state(config.global_batch_size)) if stateful
                       else None)
    placed = initial_state(task, config, optimizer, mesh, rules, init_task_state)
    state, frozen = placed.state, placed.frozen
    state_shapes, state_sh, frozen_sh = placed.state_shapes, placed.state_sh, placed.frozen_sh
    n_trainable, n_total = placed.n_trainable, placed.n_total

    iterator = task.train_iterator(config.global_batch_size, config.seed, jax.process_index(),
                                   jax.process_count())
    described = task.describe() if reporting else {}
    for line in [f"training {workdir}:", *console.header_lines(
            task_name=type(task).__name__, described=described, trainable=n_trainable,
            total=n_total, engine=config, mesh_shape=dict(mesh.shape),
            devices=jax.device_count(), processes=jax.process_count(), workdir=str(workdir),
            start=start)]:
        say(line)
    if tracked:
        say(console.best_checkpoint_line(tracked, config.keep_checkpoints))
    if start:
        state, data_state = ckpt.restore(start, abstract_like(state_shapes, state_sh))
        iterator.set_state(data_state)
        say(f"resumed from {ckpt.directory / str(start)} at step {start}", flush=True)
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
    best = ckpt.best()
    bar = tqdm(total=config.total_steps, initial=start, disable=not is_main, unit="step",
               dynamic_ncols=True)
    write = bar.write if is_main else (lambda *a, **k: None)
    step, stopped_early = start, False
    try:
        for step in range(start + 1, config.total_steps + 1):
            if step == start + 1:
                write(f"compiling the train step (step {step} includes it) ...")
                compile_start = time.perf_counter()
            local = next(iterator)
            window_tokens += task.tokens_in_batch(local) * jax.process_count()
            state, metrics = train_step(state, frozen, sharding.global_batch(local, mesh))
            pending.append((step, metrics))
            if step == start + 1:
                jax.block_until_ready(metrics)
                write(f"step {step} done in {time.perf_counter() - compile_start:.1f} s "
                      "(compile included)")

            signum = stop.agreed()
            is_last = step == config.total_steps
            do_eval = bool(config.eval_every) and (step % config.eval_every == 0 or is_last)
            # An evaluation may set a new best: its checkpoint is saved so it can be kept.
            do_ckpt = (step % config.checkpoint_every == 0 or is_last or signum is not None
                       or (do_eval and tracked is not None))
            do_log = step % config.log_every == 0 or is_last or do_eval or signum is not None
            if not (do_log or do_ckpt):
                continue
            pending = jax.device_get(pending)
            bad = _first_nonfinite(pending)
            if bad is not None:
                bad_metrics = dict(pending)[bad]
                raise NonFiniteLossError(
                    f"non-finite loss {float(bad_metrics['loss'])} / gradient norm "
                    f"{float(bad_metrics['grad_norm'])} at step {bad}; stopping. "
                    f"The last good checkpoint is kept in {ckpt.directory} "
                    f"(step {ckpt.latest_step()}).")
            elapsed = time.perf_counter() - window_start
            tokens_per_s = window_tokens / elapsed if elapsed > 0 else 0.0
            best_here = None
            if do_log:
                record = {k: float(v) for k, v in pending[-1][1].items()}
                record["tokens_per_s"] = tokens_per_s
                record["steps_per_s"] = len(pending) / elapsed if elapsed > 0 else 0.0
                if peak and flops_per_token:
                    record["mfu"] = tokens_per_s * flops_per_token / (peak * jax.device_count())
                if do_eval:
                    record.update(evaluate(task, eval_step, state, frozen, config.eval_batch_size,
                                           mesh))
                    if tracked and tracked[0] not in record:
                        write(f"best_metric {tracked[0]} is not an eval metric (have "
                              f"{', '.join(k for k in record if k.startswith('eval_'))}); "
                              "no best checkpoint is kept")
                        tracked = None
                    best_here, best = track_best(tracked, record, step, best)
                    write(console.eval_line(step, record, console.headline_keys(record, headline),
                                            best))
                writer.write(step, record)
                last = {"step": step, **record}
                bar.set_postfix(loss=f"{record['loss']:.4f}", tok_s=f"{tokens_per_s:,.0f}")
            bar.update(len(pending))
            pending, window_tokens, window_start = [], 0, time.perf_counter()
            if do_ckpt:
                ckpt.save(step, state, iterator.get_state(), best_metric=best_here)
            if signum is not None:
                ckpt.wait()
                raise TrainingInterrupted(step, signum, str(workdir))
            if do_eval and _patience_spent(tracked, best, step, config):
                write(f"stopping early at step {step}: no new best {tracked[0]} for "
                      f"{config.early_stop_patience} evaluations (best at step {best['step']})")
                stopped_early = True
                break
        signum = stop.agreed()
        if signum is not None and step == start:  # a signal before the first step
            raise TrainingInterrupted(None, signum, str(workdir))
    finally:
        bar.close()
        ckpt.close()
        writer.close()
    keys = console.headline_keys(last, headline)
    title = f"finished step {last.get('step')} in {workdir}" + (
        " (stopped early)" if stopped_early else "") + ":"
    for line in console.summary_lines(title, last, keys, best):
        say(line)
    return last


def track_best(tracked: tuple[str, str] | None, record: dict, step: int, best: dict | None
                ) -> tuple[dict | None, dict | None]:
    """(this step's metric, for its checkpoint; the best so far)."""
    if tracked is None:
        return None, best
    name, mode = tracked
    here = {"name": name, "mode": mode, "value": float(record[name])}
    value = here["value"]
    better = best is None or best.get("name") != name or (
        value > best["value"] if mode == "max" else value < best["value"])
    if math.isfinite(value) and better:
        best = {"step": step, **here}
    return here, best


def _patience_spent(tracked: tuple[str, str] | None, best: dict | None, step: int,
                    config: EngineConfig) -> bool:
    """Early stopping: `early_stop_patience` evaluations since the best one. Read from the
    best step (kept in the checkpoints), so a resumed run needs no counter of its own."""
    patience = config.early_stop_patience
    if not (patience and tracked and best) or best.get("name") != tracked[0]:
        return False
    return step - int(best["step"]) >= patience * config.eval_every
