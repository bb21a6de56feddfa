"""The RL loop's settings (config.rl.*), one typed, validated view; names and defaults
follow TRL's PPOConfig / GRPOConfig where they share a meaning.

The rollout batch is the engine's `global_batch_size`: each iteration samples
global_batch_size / group_size prompts, group_size completions each (GRPO's G; 1 for
PPO), then runs `epochs` passes of `minibatches` optimiser updates over them.
`total_steps` counts iterations; the learning-rate schedule runs over every update.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aes_jax.losses.rl import KL_ESTIMATORS

ADVANTAGES = ("gae", "grpo")


@dataclasses.dataclass(frozen=True)
class RLConfig:
    advantage: str = "gae"  # gae (PPO with a critic) | grpo (group-normalised, no critic)
    group_size: int = 1  # completions per prompt (GRPO's G)
    epochs: int = 4  # passes over each rollout batch (TRL num_ppo_epochs)
    minibatches: int = 1  # updates per pass (TRL num_mini_batches)
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    entropy_coef: float = 0.0
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    whiten_rewards: bool = False
    # PPO folds kl_coef x KL into the per-token reward; GRPO adds kl_coef x KL (k3) to the
    # loss (its beta).
    kl_coef: float = 0.05
    kl_estimator: str = "k1"
    kl_target: float = 0.0  # > 0: adapt kl_coef towards this KL (Ziegler et al.)
    kl_horizon: int = 10000
    eval_samples: int = 4  # completions per evaluation written to eval_samples.jsonl

    @classmethod
    def from_config(cls, config: Any) -> "RLConfig":
        block = dict(config.get("rl", {}))
        unknown = set(block) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"config.rl has unknown keys {sorted(unknown)}")
        rl = cls(**block)
        rl.validate()
        return rl

    @property
    def updates_per_iteration(self) -> int:
        return self.epochs * self.minibatches

    def validate(self) -> None:
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"config.rl.advantage={self.advantage!r}: expected gae or grpo")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"config.rl.kl_estimator={self.kl_estimator!r}: expected one of "
                             f"{', '.join(KL_ESTIMATORS)}")
        for name in ("group_size", "epochs", "minibatches", "kl_horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"config.rl.{name}={getattr(self, name)}: expected >= 1")
        if self.advantage == "grpo" and self.group_size < 2:
            raise ValueError("config.rl.advantage=grpo needs config.rl.group_size >= 2 "
                             "(the advantage is relative to the group)")
        if not 0.0 < self.clip_range < 1.0 or self.clip_range_value <= 0:
            raise ValueError("config.rl.clip_range must be in (0, 1) and clip_range_value > 0")
        if not 0.0 <= self.gamma <= 1.0 or not 0.0 <= self.lam <= 1.0:
            raise ValueError("config.rl.gamma and config.rl.lam must be in [0, 1]")
        if self.kl_coef < 0 or self.kl_target < 0 or self.vf_coef < 0:
            raise ValueError("config.rl.kl_coef, kl_target and vf_coef must be >= 0")

    def check_batch(self, global_batch_size: int, grad_accum_steps: int) -> None:
        """The rollout batch must split into groups, minibatches and micro-batches."""
        if global_batch_size % self.group_size:
            raise ValueError(f"config.global_batch_size={global_batch_size} rollouts do not "
                             f"split into groups of config.rl.group_size={self.group_size}")
        if global_batch_size % self.minibatches:
            raise ValueError(f"config.global_batch_size={global_batch_size} rollouts do not "
                             f"split into config.rl.minibatches={self.minibatches}")
        if (global_batch_size // self.minibatches) % grad_accum_steps:
            raise ValueError(f"a minibatch of {global_batch_size // self.minibatches} rollouts "
                             f"is not divisible by config.grad_accum_steps={grad_accum_steps}")
