"""Policy-gradient pieces for RL on generated tokens (PPO, GRPO), pure.

Every array is [B, T] over the generated tokens of B rollouts, with `mask` [B, T] = 1 on
real tokens (a prefix of each row: the completion up to and including its stop token).
The formulas follow TRL's PPO and GRPO trainers, so logs and numbers read the same:

    kl (k1)   log pi - log ref                       (unbiased, may be negative)
    kl (k2)   0.5 (log pi - log ref)^2
    kl (k3)   exp(log ref - log pi) - 1 - (log ref - log pi)   (>= 0, low variance)
    reward    r_t = -kl_coef kl_t, plus the sequence score at the last real token
    GAE       d_t = r_t + gamma V_{t+1} - V_t,  A_t = d_t + gamma lam A_{t+1}
              (V = 0 after the last real token), returns R_t = A_t + V_t
    policy    max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)),  ratio = exp(lp - lp_old)
    value     0.5 max((V - R)^2, (V_old + clip(V - V_old, -eps_v, eps_v) - R)^2)

Token losses are masked means over every real token of the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from aes_jax.losses.reduce import masked_mean

Array = jax.Array

KL_ESTIMATORS = ("k1", "k2", "k3")
WHITEN_EPS = 1e-8  # TRL's masked_whiten
GROUP_STD_EPS = 1e-4  # TRL's GRPO


def _float(mask: Array, like: Array) -> Array:
    return jnp.asarray(mask).astype(like.dtype)


def kl_estimate(logprobs: Array, ref_logprobs: Array, estimator: str = "k1") -> Array:
    """Per-token estimate of KL(pi || ref) from samples of pi (Schulman's k1, k2, k3)."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio ** 2
    if estimator == "k3":
        return jnp.expm1(-log_ratio) + log_ratio
    raise ValueError(f"kl estimator {estimator!r}: expected one of {', '.join(KL_ESTIMATORS)}")


def kl_penalized_rewards(scores: Array, logprobs: Array, ref_logprobs: Array, mask: Array, *,
                         kl_coef: float | Array, estimator: str = "k1"
                         ) -> tuple[Array, Array]:
    """(rewards [B, T], kl [B, T]): the KL penalty on every real token, the sequence score
    [B] added at the row's last real token (a row with no real token gets nothing)."""
    m = _float(mask, logprobs)
    kl = kl_estimate(logprobs, ref_logprobs, estimator) * m
    lengths = jnp.sum(m, axis=1).astype(jnp.int32)
    last = jnp.arange(logprobs.shape[1])[None, :] == (lengths - 1)[:, None]
    rewards = -kl_coef * kl + jnp.where(last, scores[:, None], 0.0) * m
    return rewards, kl


def gae(rewards: Array, values: Array, mask: Array, *, gamma: float, lam: float
        ) -> tuple[Array, Array]:
    """(advantages [B, T], returns [B, T]) by generalised advantage estimation.

    Values are 0 after the last real token of each row, so the last token's advantage is
    its reward minus its value; both outputs are 0 on padding."""
    m = _float(mask, values)
    values, rewards = values * m, rewards * m
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    deltas = rewards + gamma * next_values - values

    def back(carry, delta_t):
        advantage = delta_t + gamma * lam * carry
        return advantage, advantage

    _, advantages = jax.lax.scan(back, jnp.zeros_like(values[:, 0]), deltas.T, reverse=True)
    advantages = advantages.T * m
    return advantages, (advantages + values) * m


def masked_whiten(x: Array, mask: Array, *, shift_mean: bool = True) -> Array:
    """(x - mean) / sqrt(var + 1e-8) over the masked-in elements, var with Bessel's
    correction (TRL's masked_whiten); shift_mean=False adds the mean back. Padding -> 0."""
    m = _float(mask, x)
    mean = masked_mean(x, m)
    n = jnp.sum(m)
    var = masked_mean((x - mean) ** 2, m) * n / jnp.maximum(n - 1.0, 1.0)
    out = (x - mean) * jax.lax.rsqrt(var + WHITEN_EPS)
    if not shift_mean:
        out = out + mean
    return out * m


def group_advantages(scores: Array, group_size: int) -> Array:
    """GRPO: each score minus its group's mean, over its group's std (unbiased) + 1e-4.
    scores [B] hold B / group_size groups of consecutive rows."""
    if scores.shape[0] % group_size:
        raise ValueError(f"{scores.shape[0]} rollouts do not split into groups of {group_size}")
    groups = scores.reshape(-1, group_size)
    std = jnp.std(groups, axis=1, keepdims=True, ddof=1) if group_size > 1 else 0.0
    return ((groups - groups.mean(axis=1, keepdims=True)) / (std + GROUP_STD_EPS)).reshape(-1)


def clipped_policy_loss(logprobs: Array, old_logprobs: Array, advantages: Array, mask: Array,
                        *, clip_range: float) -> tuple[Array, dict[str, Array]]:
    """PPO's clipped surrogate; metrics: clip_fraction (tokens where the clip binds),
    approx_kl (0.5 mean (lp - lp_old)^2, as TRL logs it), ratio (mean)."""
    log_ratio = logprobs - old_logprobs
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(jnp.maximum(unclipped, clipped), mask)
    return loss, {"clip_fraction": masked_mean((clipped > unclipped).astype(loss.dtype), mask),
                  "approx_kl": masked_mean(0.5 * log_ratio ** 2, mask),
                  "ratio": masked_mean(ratio, mask)}


def clipped_value_loss(values: Array, old_values: Array, returns: Array, mask: Array, *,
                       clip_range: float) -> tuple[Array, dict[str, Array]]:
    """0.5 x the larger of the plain and the clipped squared error; metric
    value_clip_fraction."""
    clipped_values = old_values + jnp.clip(values - old_values, -clip_range, clip_range)
    plain = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(jnp.maximum(plain, clipped), mask)
    return loss, {"value_clip_fraction": masked_mean((clipped > plain).astype(loss.dtype), mask)}


def token_logprobs(logits: Array, tokens: Array, temperature: float = 1.0) -> Array:
    """[B, T] log-probs of `tokens` under softmax(logits / temperature) (the distribution
    the sampler drew from, before top-k / top-p, as TRL computes it)."""
    scaled = logits.astype(jnp.float32) / (temperature if temperature > 0 else 1.0)
    picked = jnp.take_along_axis(scaled, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(scaled, axis=-1)


def entropy(logits: Array, temperature: float = 1.0) -> Array:
    """[B, T] entropy of softmax(logits / temperature)."""
    scaled = logits.astype(jnp.float32) / (temperature if temperature > 0 else 1.0)
    logp = jax.nn.log_softmax(scaled, axis=-1)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def explained_variance(values: Array, returns: Array, mask: Array) -> Array:
    """1 - Var(R - V) / Var(R) over the real tokens (1 = the critic predicts the returns;
    0 = no better than their mean; NaN when the returns do not vary)."""
    m = _float(mask, values)
    var = lambda x: masked_mean((x - masked_mean(x, m)) ** 2, m)  # noqa: E731
    return 1.0 - var(returns - values) / var(returns)


def adaptive_kl_coef(coef: float, kl: float, *, target: float, horizon: int,
                     n_steps: int) -> float:
    """Ziegler et al.'s controller (TRL's AdaptiveKLController): the coefficient moves by
    at most 20% x n_steps / horizon towards keeping the observed KL at `target`."""
    error = min(max(kl / target - 1.0, -0.2), 0.2)
    return float(coef * (1.0 + error * n_steps / horizon))
