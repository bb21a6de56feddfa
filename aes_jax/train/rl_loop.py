"""The RL loop: `train_rl(task, config, workdir)` trains a `RolloutTask` online (PPO with
a critic and GAE, or GRPO's group-normalised advantages).

Per iteration: a batch of prompts (grain, resumable), completions sampled by the current
policy (the task's jitted sampler), scored on the host, then one jitted pass for the
experience (log-probs of policy and reference, values, KL-penalised rewards, advantages)
and `epochs` x `minibatches` updates, each the supervised loop's train step
(`train/step.py`) on a PPO loss. State, shardings, optimiser, checkpoints, the metric
writer, interrupts and the console are the supervised loop's own. A checkpoint (one per
`checkpoint_every` iterations) holds the TrainState and, as its data item, the prompt
iterator's position, the rollout key and the KL coefficient: a resumed run continues
exactly where the killed one was. `total_steps` counts iterations.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from aes_jax.eval import plots
from aes_jax.losses import rl
from aes_jax.train import console, sharding
from aes_jax.train.checkpoint import Checkpointer, abstract_like
from aes_jax.train.engine_config import EngineConfig
from aes_jax.train.interrupt import StopRequests, TrainingInterrupted
from aes_jax.train.loop import (NonFiniteLossError, best_metric_of, initial_state,
                                read_last_record, track_best)
from aes_jax.train.metrics_writer import MetricWriter, peak_flops, truncate_after
from aes_jax.train.optim import make_optimizer
from aes_jax.train.ppo_objective import make_experience_fn, make_policy_loss
from aes_jax.train.rl_config import RLConfig
from aes_jax.train.state import TrainState
from aes_jax.train.step import make_train_step, stateless
from aes_jax.train.task import Reporting, RolloutTask

HEADLINE = ("reward_mean",)


def _host(tree: Any) -> Any:
    """Global arrays -> numpy on every process (the scorer reads every row)."""
    if jax.process_count() > 1:
        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, jax.device_get(tree))


def _mean_of(updates: list[dict]) -> dict[str, float]:
    """Each update metric averaged over the iteration's updates (learning rate: the last)."""
    updates = jax.device_get(updates)
    out = {k: float(np.mean([u[k] for u in updates])) for k in updates[0]}
    out["learning_rate"] = float(updates[-1]["learning_rate"])
    return out


def train_rl(task: RolloutTask, config: Any, workdir: str | Path) -> dict[str, Any]:
    """Runs (or resumes) online RL of `task`; returns the last logged metrics."""
    engine = EngineConfig.from_config(config)
    rl_config = RLConfig.from_config(config)
    rl_config.check_batch(engine.global_batch_size, engine.grad_accum_steps)
    mesh = sharding.make_mesh(dict(engine.mesh))
    rules = list(engine.sharding_rules)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), StopRequests() as stop:
        return _run(task, engine, rl_config, Path(workdir), mesh, rules, stop)


def _run(task: RolloutTask, config: EngineConfig, rlc: RLConfig, workdir: Path, mesh, rules,
         stop: StopRequests) -> dict[str, Any]:
    is_main = jax.process_index() == 0
    say = print if is_main else (lambda *a, **k: None)
    reporting = isinstance(task, Reporting)
    if rlc.advantage == "gae" and not task.has_critic():
        raise ValueError("config.rl.advantage=gae needs a critic: give the task a value head "
                         "(or use config.rl.advantage=grpo)")
    tracked = best_metric_of(task, config) if config.eval_every else None
    ckpt = Checkpointer(workdir, keep=config.keep_checkpoints,
                        async_save=config.async_checkpointing, track_best=tracked is not None)
    start = ckpt.latest_step() or 0
    headline = task.headline_metrics() if reporting else HEADLINE
    if start >= config.total_steps:
        best = ckpt.best()
        ckpt.close()
        last = read_last_record(workdir / "metrics.jsonl")
        for line in console.summary_lines(
                f"{workdir}: already finished at iteration {start} (config.total_steps="
                f"{config.total_steps}); its last metrics:", last,
                [k for k in headline if k in last], best):
            say(line)
        return last

    total_updates = config.total_steps * rlc.updates_per_iteration
    optimizer, schedule = make_optimizer(dict(config.optimizer), total_updates)
    placed = initial_state(task, config, optimizer, mesh, rules)
    state, frozen, state_sh, frozen_sh = (placed.state, placed.frozen, placed.state_sh,
                                          placed.frozen_sh)

    n_prompts = config.global_batch_size // rlc.group_size
    prompts = task.prompt_iterator(n_prompts, config.seed, jax.process_index(),
                                   jax.process_count())
    rollout_key = np.asarray(jax.random.PRNGKey(config.seed + 2))
    kl_coef = rlc.kl_coef
    described = task.describe() if reporting else {}
    for line in [f"training {workdir} (online RL, {rlc.advantage}):", *console.header_lines(
            task_name=type(task).__name__, described=described, trainable=placed.n_trainable,
            total=placed.n_total, engine=config, mesh_shape=dict(mesh.shape),
            devices=jax.device_count(), processes=jax.process_count(), workdir=str(workdir),
            start=start),
            f"  rl: {n_prompts} prompts x {rlc.group_size} completions per iteration, "
            f"{rlc.epochs} epochs x {rlc.minibatches} minibatches = "
            f"{rlc.updates_per_iteration} updates, kl_coef {rlc.kl_coef} ({rlc.kl_estimator})"]:
        say(line)
    if tracked:
        say(console.best_checkpoint_line(tracked, config.keep_checkpoints))
    if start:
        state, data_state = ckpt.restore(start, abstract_like(placed.state_shapes, state_sh))
        prompts.set_state(data_state["prompts"])
        rollout_key = np.asarray(data_state["rollout_key"], np.uint32)
        kl_coef = float(data_state["kl_coef"])
        say(f"resumed from {ckpt.directory / str(start)} at iteration {start}", flush=True)
    if is_main:
        truncate_after(workdir / "metrics.jsonl", start)
        truncate_after(workdir / "eval_samples.jsonl", start)

    batch_sh = sharding.batch_sharding(mesh)
    repl = sharding.replicated(mesh)
    step_fn = make_train_step(stateless(make_policy_loss(task, rlc)), optimizer, schedule,
                              config.grad_accum_steps, config.ema_decay)
    train_step = jax.jit(step_fn, in_shardings=(state_sh, frozen_sh, batch_sh),
                         out_shardings=(state_sh, repl), donate_argnums=0)
    experience_fn = jax.jit(make_experience_fn(task, rlc))
    select = jax.jit(lambda tree, rows: jax.tree.map(lambda x: x[rows], tree),
                     out_shardings=batch_sh)
    minibatch = config.global_batch_size // rlc.minibatches

    writer = MetricWriter(workdir, enabled=is_main)
    peak = peak_flops(jax.devices()[0], config.peak_flops_per_device)
    flops_per_token = task.flops_per_token()
    last: dict[str, Any] = {}
    best = ckpt.best()
    bar = tqdm(total=config.total_steps, initial=start, disable=not is_main, unit="iter",
               dynamic_ncols=True)
    write = bar.write if is_main else (lambda *a, **k: None)
    iteration = start
    try:
        for iteration in range(start + 1, config.total_steps + 1):
            began = time.perf_counter()
            key, roll_key, perm_key = jax.random.split(jnp.asarray(rollout_key), 3)
            rollout_key = np.asarray(key)
            local = next(prompts)
            if rlc.group_size > 1:
                local = {k: np.repeat(np.asarray(v), rlc.group_size, axis=0)
                         for k, v in local.items()}
            batch = sharding.global_batch(local, mesh)
            tokens, lengths = task.rollout(state.trainable, frozen, batch, roll_key)
            jax.block_until_ready(tokens)
            generated = time.perf_counter()
            host_tokens, host_lengths = _host((tokens, lengths))
            scores, parts, _ = task.score(frozen, _host(batch), host_tokens, host_lengths)
            scored = time.perf_counter()
            experience, rollout_metrics = experience_fn(
                state.trainable, frozen, batch["prompt_ids"], batch["prompt_mask"], tokens,
                lengths, jax.device_put(jnp.asarray(scores, jnp.float32), repl),
                jnp.float32(kl_coef))
            updates = []
            for epoch in range(rlc.epochs):
                order = jax.random.permutation(jax.random.fold_in(perm_key, epoch),
                                               config.global_batch_size)
                for i in range(rlc.minibatches):
                    rows = order[i * minibatch:(i + 1) * minibatch]
                    state, metrics = train_step(state, frozen, select(experience, rows))
                    updates.append(metrics)
            record = _mean_of(updates)
            updated = time.perf_counter()
            for k in ("loss", "grad_norm"):
                if not math.isfinite(record[k]):
                    raise NonFiniteLossError(
                        f"non-finite {k} {record[k]} at iteration {iteration}; stopping. The "
                        f"last good checkpoint is kept in {ckpt.directory} (iteration "
                        f"{ckpt.latest_step()}).")
            record.update({k: float(v) for k, v in jax.device_get(rollout_metrics).items()})
            record.update(reward_mean=float(np.mean(scores)), reward_std=float(np.std(scores)),
                          kl_coef=kl_coef, **{f"{k}_mean": float(np.mean(v))
                                              for k, v in parts.items()})
            train_tokens = int(np.asarray(_host(experience["attention_mask"])).sum()) * rlc.epochs
            record.update(
                rollout_s=generated - began, score_s=scored - generated,
                update_s=updated - scored, iteration_s=updated - began,
                rollout_tokens_per_s=float(host_lengths.sum()) / max(generated - began, 1e-9),
                tokens_per_s=train_tokens / max(updated - scored, 1e-9),
                optimizer_steps=float(jax.device_get(state.step)))
            if peak and flops_per_token:
                record["mfu"] = (record["tokens_per_s"] * flops_per_token
                                 / (peak * jax.device_count()))
            if rlc.kl_target:
                kl_coef = rl.adaptive_kl_coef(kl_coef, record["kl"], target=rlc.kl_target,
                                              horizon=rlc.kl_horizon,
                                              n_steps=config.global_batch_size)
            signum = stop.agreed()
            is_last = iteration == config.total_steps
            do_eval = bool(config.eval_every) and (iteration % config.eval_every == 0 or is_last)
            best_here = None
            if do_eval:
                record.update(_evaluate(task, state, frozen, config.eval_batch_size, repl,
                                        workdir, iteration, rlc.eval_samples, is_main))
                best_here, best = track_best(tracked, record, iteration, best)
                write(console.eval_line(iteration, record,
                                        console.headline_keys(record, headline), best))
            writer.write(iteration, record)
            last = {"step": iteration, **record}
            if iteration % config.log_every == 0 or is_last:
                write(f"iteration {iteration}: reward {record['reward_mean']:.3f} "
                      f"(sd {record['reward_std']:.3f}), kl {record['kl']:.4f}, policy loss "
                      f"{record['policy_loss']:.4f}, value loss {record['value_loss']:.4f}, "
                      f"clip {record['clip_fraction']:.3f}; rollout {record['rollout_s']:.1f} s,"
                      f" update {record['update_s']:.1f} s")
            bar.set_postfix(reward=f"{record['reward_mean']:.3f}", kl=f"{record['kl']:.3f}")
            bar.update(1)
            if iteration % config.checkpoint_every == 0 or is_last or signum is not None or (
                    do_eval and tracked is not None):
                ckpt.save(iteration, state, {"prompts": prompts.get_state(),
                                             "rollout_key": rollout_key.tolist(),
                                             "kl_coef": kl_coef}, best_metric=best_here)
                if is_main:
                    plots.reward_curve_png(workdir / "metrics.jsonl", workdir / "reward_curve.png")
            if signum is not None:
                ckpt.wait()
                raise TrainingInterrupted(iteration, signum, str(workdir))
        signum = stop.agreed()
        if signum is not None and iteration == start:
            raise TrainingInterrupted(None, signum, str(workdir))
    finally:
        bar.close()
        ckpt.close()
        writer.close()
    keys = [k for k in (*headline, "kl") if k in last] + console.headline_keys(last, headline)
    for line in console.summary_lines(f"finished iteration {last.get('step')} in {workdir}:",
                                      last, keys, best):
        say(line)
    return last


def _evaluate(task: RolloutTask, state: TrainState, frozen: Any, batch_size: int, repl,
              workdir: Path, iteration: int, n_samples: int, is_main: bool) -> dict[str, float]:
    """Greedy completions for the held-out prompts: mean reward (and parts), length; the
    first `n_samples` are appended to WORKDIR/eval_samples.jsonl."""
    params = state.ema if state.ema is not None else state.trainable
    totals: dict[str, float] = {}
    samples: list[dict] = []
    for local in task.eval_prompts(batch_size):
        weight = np.asarray(local["weight"], np.float64)
        batch = jax.device_put({k: np.asarray(v) for k, v in local.items()}, repl)
        tokens, lengths = _host(task.rollout(params, frozen, batch, jax.random.PRNGKey(0),
                                             greedy=True))
        scores, parts, texts = task.score(frozen, local, tokens, lengths)
        for name, values in {"reward": scores, "response_length": lengths,
                             **parts}.items():
            totals[name] = totals.get(name, 0.0) + float(np.sum(np.asarray(values) * weight))
        totals["n"] = totals.get("n", 0.0) + float(weight.sum())
        samples += [{"step": iteration, "completion": t, "reward": float(s)}
                    for t, s, w in zip(texts, scores, weight) if w > 0]
    n = max(totals.pop("n", 0.0), 1.0)
    out = {f"eval_{k}_mean" if k != "response_length" else "eval_response_length": v / n
           for k, v in totals.items()}
    if is_main and samples:
        with open(workdir / "eval_samples.jsonl", "a") as f:
            for sample in samples[:n_samples]:
                f.write(json.dumps(sample) + "\n")
    return out
