"""The contract between a task and the training loop."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol

import jax
import numpy as np

Batch = Mapping[str, Any]


class Task(Protocol):
    """What the loop needs from a system. Every function the loop jits is pure."""

    def init(self, rng: jax.Array) -> tuple[Any, Any]:
        """-> (trainable, frozen) pytrees. The optimiser sees only `trainable`."""

    def logical_axes(self) -> tuple[Any, Any]:
        """Logical axis names (PartitionSpec leaves) matching (trainable, frozen)."""

    def loss(self, trainable: Any, frozen: Any, batch: Batch, rng: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Pure: mean loss over the batch and extra scalar metrics."""

    def eval_step(self, trainable: Any, frozen: Any, batch: Batch) -> dict[str, jax.Array]:
        """Pure: whatever per-batch arrays `summarize` needs (sums, or per-row outputs)."""

    def summarize(self, outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
        """Eval metrics from the outputs of every eval batch (the loop prefixes `eval_`)."""

    def train_iterator(self, global_batch_size: int, seed: int, process_index: int,
                       process_count: int) -> Iterator[Batch]:
        """Infinite local batches, with get_state() / set_state() for exact resume."""

    def eval_batches(self, batch_size: int, process_index: int, process_count: int
                     ) -> Iterator[Batch]:
        """One finite pass; padded rows carry weight 0."""

    def tokens_in_batch(self, batch: Batch) -> int:
        """For tokens/s (0 if not a token task)."""

    def flops_per_token(self) -> float:
        """Training model FLOPs per token, for MFU (0 if unknown)."""

    def export(self, trainable: Any, frozen: Any, out_dir: str) -> list:
        """Writes what was learned in torch-world formats; returns the paths written."""


def mean_from_sums(outputs: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Adds `<name>_sum` and `<name>_count` over batches and reports `<name>` = sum / count."""
    totals: dict[str, float] = {}
    for out in outputs:
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    return {k[: -len("_sum")]: v / max(totals.get(k[: -len("_sum")] + "_count", 0.0), 1e-12)
            for k, v in totals.items() if k.endswith("_sum")}
