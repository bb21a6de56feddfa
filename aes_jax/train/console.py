"""What the training loop prints (process 0 only): the header before step 1, one line per
evaluation, the summary at the end. Pure formatting; the loop decides when."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from aes_jax.eval.tables import aligned

MAX_HEADLINE = 6


def count_params(tree: Any) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def human(n: float) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(int(n))


def header_lines(*, task_name: str, described: Mapping[str, Any], trainable: int,
                 total: int, engine: Any, mesh_shape: Mapping[str, int], devices: int,
                 processes: int, workdir: str, start: int) -> list[str]:
    rows = [("task", task_name), *((k, str(v)) for k, v in described.items()),
            ("parameters", f"{human(total)} ({total:,}), trainable {human(trainable)} "
                           f"({trainable:,}, {100 * trainable / max(total, 1):.1f}%)"),
            ("global batch", f"{engine.global_batch_size}"
                             + (f" ({engine.grad_accum_steps} micro-batches)"
                                if engine.grad_accum_steps > 1 else "")),
            ("steps", f"{engine.total_steps}" + (f" (resuming after step {start})"
                                                  if start else "")),
            ("evaluate / checkpoint every", f"{engine.eval_every or 'never'} / "
                                            f"{engine.checkpoint_every}"),
            ("devices", f"{devices} {jax.devices()[0].platform} over {processes} process(es), "
                        f"mesh " + ", ".join(f"{k}={v}" for k, v in mesh_shape.items())),
            ("workdir", workdir)]
    width = max(len(k) for k, _ in rows)
    return [f"  {k.ljust(width)}  {v}" for k, v in rows]


def best_checkpoint_line(tracked: tuple[str, str], keep: int) -> str:
    return f"  best checkpoint on {tracked[0]} ({tracked[1]}), kept beside the last {keep}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def headline_keys(record: Mapping[str, Any], wanted: Sequence[str] | None) -> list[str]:
    """The `eval_` keys to show: the task's headline (those present), else the first few."""
    evals = [k for k in record if k.startswith("eval_")]
    if wanted:
        return [f"eval_{k}" for k in wanted if f"eval_{k}" in record]
    return evals[:MAX_HEADLINE]


def eval_line(step: int, record: Mapping[str, Any], keys: Sequence[str],
              best: Mapping[str, Any] | None) -> str:
    parts = [f"train loss {_fmt(record['loss'])}"] + [f"{k[5:]} {_fmt(record[k])}" for k in keys]
    line = f"step {step} eval: " + ", ".join(parts)
    if best is not None and best.get("step") == step:
        line += f"  (best {best['name']} so far)"
    return line


def summary_lines(title: str, last: Mapping[str, Any], keys: Sequence[str],
                  best: Mapping[str, Any] | None) -> list[str]:
    """A table: metric, last value, and the best checkpoint's row when one is tracked."""
    rows = [["metric", f"step {last.get('step')}"]]
    rows += [[k, _fmt(last[k])] for k in ["loss", *keys] if k in last]
    lines = [title, *("  " + line for line in aligned(rows))]
    if best is not None:
        lines.append(f"  best checkpoint: step {best['step']}, {best['name']} "
                     f"{_fmt(best['value'])} ({best['mode']})")
    return lines
