"""The RL loop's two pure functions, built from a `RolloutTask` and `RLConfig`:

* `make_experience_fn`: one rollout batch (prompts, sampled completions, scores) -> the
  fixed experience the updates read (old log-probs, reference log-probs, old values,
  advantages, returns) and the rollout's metrics;
* `make_policy_loss`: a minibatch of that experience -> the PPO / GRPO loss, in the
  signature of the supervised train step (`train/step.py`), which runs it unchanged.

Rows are [prompt (left-padded, width P); completion (N tokens, padded after the stop)],
so the logits that predict completion token j sit at position P - 1 + j.
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

from aes_jax.losses import rl
from aes_jax.losses.reduce import masked_mean
from aes_jax.train.rl_config import RLConfig
from aes_jax.train.task import RolloutTask

EXPERIENCE_KEYS = ("input_ids", "attention_mask", "completion_mask", "old_logprobs",
                   "ref_logprobs", "old_values", "advantages", "returns")


def completion_rows(prompt_ids, prompt_mask, tokens, lengths):
    """(input_ids [B, P + N], attention_mask, completion_mask [B, N])."""
    completion_mask = jnp.arange(tokens.shape[1])[None, :] < lengths[:, None]
    return (jnp.concatenate([prompt_ids, tokens], axis=1),
            jnp.concatenate([prompt_mask.astype(bool), completion_mask], axis=1),
            completion_mask)


def _completion_part(x, n: int):
    """The positions that predict the last n tokens: [B, T, ...] -> [B, n, ...]."""
    return x[:, -n - 1:-1]


def make_experience_fn(task: RolloutTask, config: RLConfig) -> Callable:
    temperature = task.sampling_temperature()

    def experience(trainable: Any, frozen: Any, prompt_ids, prompt_mask, tokens, lengths,
                   scores, kl_coef) -> tuple[dict, dict]:
        ids, mask, m = completion_rows(prompt_ids, prompt_mask, tokens, lengths)
        n = tokens.shape[1]
        logits, values = task.policy(trainable, frozen, ids, mask)
        ref_logits = task.reference_logits(trainable, frozen, ids, mask)
        logits, ref_logits = _completion_part(logits, n), _completion_part(ref_logits, n)
        values = _completion_part(values, n) * m
        logprobs = rl.token_logprobs(logits, tokens, temperature)
        ref_logprobs = rl.token_logprobs(ref_logits, tokens, temperature)
        if config.advantage == "gae":
            rewards, kl = rl.kl_penalized_rewards(scores, logprobs, ref_logprobs, m,
                                                  kl_coef=kl_coef,
                                                  estimator=config.kl_estimator)
            if config.whiten_rewards:
                rewards = rl.masked_whiten(rewards, m, shift_mean=False)
            advantages, returns = rl.gae(rewards, values, m, gamma=config.gamma,
                                         lam=config.lam)
            explained = rl.explained_variance(values, returns, m)
        else:  # grpo: one advantage per completion, on each of its tokens
            kl = rl.kl_estimate(logprobs, ref_logprobs, config.kl_estimator) * m
            advantages = rl.group_advantages(scores, config.group_size)[:, None] * m
            returns, explained = jnp.zeros_like(values), jnp.nan
        if config.whiten_advantages:
            advantages = rl.masked_whiten(advantages, m)
        kl_per_row = jnp.sum(kl, axis=1)
        batch = dict(input_ids=ids, attention_mask=mask, completion_mask=m,
                     old_logprobs=logprobs, ref_logprobs=ref_logprobs, old_values=values,
                     advantages=advantages, returns=returns)
        metrics = {"kl": jnp.mean(kl_per_row),
                   "non_score_reward": -kl_coef * jnp.mean(kl_per_row),
                   "rollout_entropy": masked_mean(rl.entropy(logits, temperature), m),
                   "explained_variance": explained,
                   "value_mean": masked_mean(values, m),
                   "advantage_std": jnp.sqrt(masked_mean(advantages ** 2, m)),
                   "response_length": jnp.mean(jnp.sum(m, axis=1).astype(jnp.float32))}
        return batch, metrics

    return experience


def make_policy_loss(task: RolloutTask, config: RLConfig) -> Callable:
    """loss(trainable, frozen, batch, rng, step) -> (loss, metrics). No dropout (rng
    unused): the first update's ratio is 1, as the experience was computed."""
    temperature = task.sampling_temperature()
    critic = config.advantage == "gae"

    def loss(trainable, frozen, batch, rng, step):
        del rng, step
        m = batch["completion_mask"]
        n = m.shape[1]
        logits, values = task.policy(trainable, frozen, batch["input_ids"],
                                     batch["attention_mask"])
        logits = _completion_part(logits, n)
        tokens = batch["input_ids"][:, -n:]
        logprobs = rl.token_logprobs(logits, tokens, temperature)
        policy_loss, metrics = rl.clipped_policy_loss(
            logprobs, batch["old_logprobs"], batch["advantages"], m,
            clip_range=config.clip_range)
        total = policy_loss
        value_loss = jnp.zeros((), policy_loss.dtype)
        if critic:
            value_loss, value_metrics = rl.clipped_value_loss(
                _completion_part(values, n), batch["old_values"], batch["returns"], m,
                clip_range=config.clip_range_value)
            metrics.update(value_metrics)
            total = total + config.vf_coef * value_loss
        elif config.kl_coef:  # GRPO: the KL to the reference is a loss term
            total = total + config.kl_coef * masked_mean(
                rl.kl_estimate(logprobs, batch["ref_logprobs"], "k3"), m)
        token_entropy = masked_mean(rl.entropy(logits, temperature), m)
        if config.entropy_coef:
            total = total - config.entropy_coef * token_entropy
        metrics.update(policy_loss=policy_loss, value_loss=value_loss, entropy=token_entropy)
        return total, metrics

    return loss
