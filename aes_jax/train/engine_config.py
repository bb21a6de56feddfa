"""The engine settings every config carries, as one typed, validated view.

Defaults live here once; `configs/common.py` turns them into the ConfigDict block that
every config file starts from, so `--config.total_steps`, `--config.mesh.fsdp`, ... mean
the same thing for every task.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from aes_jax.train.sharding import DEFAULT_RULES

DEFAULT_OPTIMIZER = dict(name="adamw", lr=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                         schedule="cosine", warmup_steps=0, min_lr_ratio=0.1, clip_norm=1.0)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    seed: int = 0
    total_steps: int = 100
    global_batch_size: int = 8
    grad_accum_steps: int = 1  # micro-batches per update; gradients averaged
    eval_batch_size: int = 8
    log_every: int = 10
    eval_every: int = 100  # 0 = never evaluate during training
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    async_checkpointing: bool = True
    optimizer: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: dict(DEFAULT_OPTIMIZER))
    ema_decay: float = 0.0  # > 0 keeps an EMA of the trainable params (used for evaluation)
    mesh: Mapping[str, int] = dataclasses.field(
        default_factory=lambda: dict(data=-1, fsdp=1, tensor=1))  # -1 = the rest
    sharding_rules: tuple = DEFAULT_RULES  # logical axis -> mesh axes
    peak_flops_per_device: float = 0.0  # for MFU; 0 = look it up from the device kind
    # The dev metric the best checkpoint is kept on: "" = the task's default, "none" = keep
    # no best; best_mode "" = the task's direction for its default, else from the name.
    best_metric: str = ""
    best_mode: str = ""
    # Stop when this many evaluations in a row bring no new best on the tracked metric
    # (0 = never). Counted from the best step, so a resumed run stops where it would have.
    early_stop_patience: int = 0

    @classmethod
    def from_config(cls, config: Any) -> "EngineConfig":
        """The engine fields of a task config (a ConfigDict or mapping), validated."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: config[k] for k in fields if k in config}
        if "optimizer" in values:
            values["optimizer"] = {**DEFAULT_OPTIMIZER, **dict(values["optimizer"])}
        if "mesh" in values:
            values["mesh"] = dict(values["mesh"])
        if "sharding_rules" in values:  # JSON / ConfigDict turn tuples into lists
            values["sharding_rules"] = tuple(
                (name, tuple(axes) if isinstance(axes, list) else axes)
                for name, axes in values["sharding_rules"])
        engine = cls(**values)
        engine.validate()
        return engine

    def validate(self) -> None:
        positive = ("total_steps", "global_batch_size", "grad_accum_steps", "eval_batch_size",
                    "log_every", "checkpoint_every", "keep_checkpoints")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"config.{name}={getattr(self, name)}: expected >= 1")
        if self.eval_every < 0:
            raise ValueError(f"config.eval_every={self.eval_every}: expected >= 0 (0 = never)")
        if self.global_batch_size % self.grad_accum_steps:
            raise ValueError(f"config.global_batch_size={self.global_batch_size} is not "
                             f"divisible by config.grad_accum_steps={self.grad_accum_steps}")
        if self.best_mode not in ("", "max", "min"):
            raise ValueError(f"config.best_mode={self.best_mode!r}: expected max, min or '' "
                             "(the task's / inferred from the metric's name)")
        if self.best_metric and self.best_metric != "none" and not self.best_metric.startswith(
                "eval_"):
            raise ValueError(f"config.best_metric={self.best_metric!r}: expected a logged "
                             "eval key such as eval_mean_qwk or eval_loss, or none")
        if self.early_stop_patience < 0:
            raise ValueError(f"config.early_stop_patience={self.early_stop_patience}: "
                             "expected >= 0 (0 = never stop early)")
        if self.early_stop_patience and not self.eval_every:
            raise ValueError("config.early_stop_patience needs evaluations "
                             "(config.eval_every > 0)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"config.ema_decay={self.ema_decay}: expected [0, 1)")
