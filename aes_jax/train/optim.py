"""optax optimiser and learning-rate schedule from the config's `optimizer` block."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import optax


def make_schedule(opt: Mapping[str, Any], total_steps: int) -> optax.Schedule:
    """Linear warmup to `lr`, then `schedule` (cosine | linear | constant) down to
    lr * min_lr_ratio at `total_steps`."""
    lr, warmup = float(opt["lr"]), int(opt.get("warmup_steps", 0))
    end = lr * float(opt.get("min_lr_ratio", 0.0))
    decay_steps = max(total_steps - warmup, 1)
    kind = opt.get("schedule", "cosine")
    if kind == "cosine":
        decay = optax.cosine_decay_schedule(lr, decay_steps, alpha=end / lr if lr else 0.0)
    elif kind == "linear":
        decay = optax.linear_schedule(lr, end, decay_steps)
    elif kind == "constant":
        decay = optax.constant_schedule(lr)
    else:
        raise ValueError(f"optimizer.schedule={kind!r}: expected cosine, linear or constant")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), decay], [warmup])


def decay_mask(params: Any) -> Any:
    """Weight decay on matrices only: norms, scales and biases (ndim < 2) are left alone."""
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(opt: Mapping[str, Any], total_steps: int
                   ) -> tuple[optax.GradientTransformation, Callable]:
    schedule = make_schedule(opt, total_steps)
    name = opt.get("name", "adamw")
    if name == "adamw":
        core = optax.adamw(schedule, b1=opt.get("b1", 0.9), b2=opt.get("b2", 0.999),
                           eps=opt.get("eps", 1e-8), weight_decay=opt.get("weight_decay", 0.0),
                           mask=decay_mask)
    elif name == "sgd":
        core = optax.sgd(schedule, momentum=opt.get("momentum") or None)
    else:
        raise ValueError(f"optimizer.name={name!r}: expected adamw or sgd")
    clip = opt.get("clip_norm")
    chain = [optax.clip_by_global_norm(clip)] if clip else []
    return optax.chain(*chain, core), schedule
