"""The contract between a task and the training loop."""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol

import jax

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

    def eval_sums(self, trainable: Any, frozen: Any, batch: Batch) -> dict[str, jax.Array]:
        """Pure: per-batch sums; the loop adds them over the eval set. Keys ending in
        `_sum` are divided by the matching `_count` to report a mean."""

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
