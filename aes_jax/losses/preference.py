"""Preference losses on per-sequence log-probabilities (DPO and its variants), pure.

Inputs are [B] log-probs of each pair's completion under the policy and the reference
(`losses.lm.sequence_logprob`: summed for DPO, averaged over tokens for IPO, as TRL does).
With the log-ratio margin

    d = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)

and e = label_smoothing, the per-pair losses are (the mean over pairs is returned):

    sigmoid  -(1 - e) log sig(beta d) - e log sig(-beta d)     (e > 0: conservative DPO)
    robust   (-(1 - e) log sig(beta d) + e log sig(-beta d)) / (1 - 2e)
    ipo      (d - 1 / (2 beta))^2
    hinge    relu(1 - beta d)

beta multiplies d exactly once. The metrics carry TRL's names, so logs read the same.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

LOSS_TYPES = ("sigmoid", "robust", "ipo", "hinge")


def check_options(beta: float, loss_type: str, label_smoothing: float) -> None:
    """ValueError naming the setting when beta, loss_type or label_smoothing is invalid."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type={loss_type!r}: expected one of {', '.join(LOSS_TYPES)}")
    if not beta > 0:
        raise ValueError(f"beta={beta}: expected > 0")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing={label_smoothing}: expected 0 <= e < 0.5")
    if label_smoothing and loss_type in ("ipo", "hinge"):
        raise ValueError(f"label_smoothing={label_smoothing} has no meaning for "
                         f"loss_type={loss_type!r} (only sigmoid and robust use it)")


def pair_losses(margin: Array, *, beta: float = 0.1, loss_type: str = "sigmoid",
                label_smoothing: float = 0.0) -> Array:
    """[B] per-pair losses from the log-ratio margins d [B] (float32)."""
    check_options(beta, loss_type, label_smoothing)
    d, e = jnp.asarray(margin, jnp.float32), label_smoothing
    if loss_type == "sigmoid":
        return -(1 - e) * jax.nn.log_sigmoid(beta * d) - e * jax.nn.log_sigmoid(-beta * d)
    if loss_type == "robust":
        return (-(1 - e) * jax.nn.log_sigmoid(beta * d)
                + e * jax.nn.log_sigmoid(-beta * d)) / (1 - 2 * e)
    if loss_type == "ipo":
        return (d - 1 / (2 * beta)) ** 2
    return jax.nn.relu(1 - beta * d)


def dpo(policy_chosen_logps: Array, policy_rejected_logps: Array, ref_chosen_logps: Array,
        ref_rejected_logps: Array, *, beta: float = 0.1, loss_type: str = "sigmoid",
        label_smoothing: float = 0.0) -> tuple[Array, dict[str, Array]]:
    """(mean loss, metrics) over the [B] pairs; see the module docstring for the formulas."""
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    pc, pr = f32(policy_chosen_logps), f32(policy_rejected_logps)
    chosen_ratio = pc - f32(ref_chosen_logps)
    rejected_ratio = pr - f32(ref_rejected_logps)
    losses = pair_losses(chosen_ratio - rejected_ratio, beta=beta, loss_type=loss_type,
                         label_smoothing=label_smoothing)
    chosen_reward = jax.lax.stop_gradient(beta * chosen_ratio)
    rejected_reward = jax.lax.stop_gradient(beta * rejected_ratio)
    metrics = {"rewards/chosen": jnp.mean(chosen_reward),
               "rewards/rejected": jnp.mean(rejected_reward),
               "rewards/accuracies": jnp.mean((chosen_reward > rejected_reward)
                                              .astype(jnp.float32)),
               "rewards/margins": jnp.mean(chosen_reward - rejected_reward),
               "logps/chosen": jnp.mean(jax.lax.stop_gradient(pc)),
               "logps/rejected": jnp.mean(jax.lax.stop_gradient(pr))}
    return jnp.mean(losses), metrics
