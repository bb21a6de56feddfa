"""The contract between a task and the training loop.

A task is any object with the methods of `Task`; the loop is handed one and never looks
a system up by name. Every function the loop jits (loss, eval_step, init_task_state) is
pure. A task that keeps state across steps (deep-supervision carries, rollout buffers)
also implements `StatefulTask`; the loop checks that protocol, never `hasattr`.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Protocol, runtime_checkable

import jax
import numpy as np

Batch = Mapping[str, Any]


@runtime_checkable
class Task(Protocol):
    """What the loop needs from a system."""

    def init(self, rng: jax.Array) -> tuple[Any, Any]:
        """-> (trainable, frozen) pytrees. The optimiser sees only `trainable`."""

    def logical_axes(self) -> tuple[Any, Any]:
        """Logical axis names (PartitionSpec leaves) matching (trainable, frozen)."""

    def loss(self, trainable: Any, frozen: Any, batch: Batch, rng: jax.Array, step: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Pure: mean loss over the batch and extra scalar metrics. `step` is the int32
        number of updates done before this one (0 at the first), as the lr schedule sees
        it, for step-dependent weights, KL coefficients or curricula."""

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


@runtime_checkable
class StatefulTask(Task, Protocol):
    """A task whose loss reads and updates non-trainable state that persists across steps.

    The state is per row of the global batch: every leaf has the global batch size as its
    leading axis. The loop shards it like the batch, splits it into micro-batches like the
    batch under gradient accumulation, keeps it in the TrainState and so checkpoints and
    restores it exactly on resume. No gradient flows through it."""

    def init_task_state(self, global_batch_size: int) -> Any:
        """Pure (jitted by the loop): the state before the first step."""

    def loss_with_state(self, trainable: Any, frozen: Any, task_state: Any, batch: Batch,
                        rng: jax.Array, step: jax.Array
                        ) -> tuple[jax.Array, dict[str, jax.Array], Any]:
        """Pure: (mean loss, scalar metrics, the state for the next step)."""


@runtime_checkable
class Reporting(Protocol):
    """A task (of either loop) that tells the console and the best-checkpoint keeper what
    matters. Tasks without it get a generic header, the first eval metrics and no default
    best metric."""

    def describe(self) -> dict[str, Any]:
        """Header lines before step 1, name -> value (model, dataset sizes, ...)."""

    def headline_metrics(self) -> tuple[str, ...]:
        """Eval keys (without the `eval_` prefix) printed at each evaluation."""

    def best_metric(self) -> tuple[str, str]:
        """(logged key, e.g. "eval_mean_qwk"; "max" or "min"): the default dev metric the
        best checkpoint is chosen on (`config.best_metric` overrides it)."""


@runtime_checkable
class ReportingTask(Task, Reporting, Protocol):
    """A supervised `Task` with `Reporting`."""


@runtime_checkable
class RolloutTask(Protocol):
    """What the RL loop (`train/rl_loop.py`) needs from a system trained online: prompts, a
    policy that samples completions for them, a scorer, and the policy's and reference's
    logits (with values, when it has a critic) on prompt + completion rows.

    Prompt batches are dicts with "prompt_ids" / "prompt_mask" [B, P] (left-padded to one
    width) and whatever else `score` reads; the loop adds nothing to them."""

    def init(self, rng: jax.Array) -> tuple[Any, Any]:
        """-> (trainable, frozen) pytrees (policy adapter and critic; base, reference,
        scorer weights)."""

    def logical_axes(self) -> tuple[Any, Any]:
        """Logical axis names matching (trainable, frozen)."""

    def prompt_iterator(self, global_batch_size: int, seed: int, process_index: int,
                        process_count: int) -> Iterator[Batch]:
        """Infinite local prompt batches, with get_state() / set_state() for exact resume."""

    def eval_prompts(self, batch_size: int) -> Iterator[Batch]:
        """One finite pass over held-out prompts (padded rows carry "weight" 0)."""

    def rollout(self, trainable: Any, frozen: Any, prompts: Batch, rng: jax.Array,
                greedy: bool = False) -> tuple[jax.Array, jax.Array]:
        """(completion tokens [B, N], padded after the stop token; lengths [B], the stop
        token included) sampled with the task's settings (`greedy` for evaluation)."""

    def score(self, frozen: Any, prompts: Batch, tokens: np.ndarray, lengths: np.ndarray
              ) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
        """Host side (a reward model may run on `frozen`): ([B] rewards, {name: [B] part
        of the reward}, [B] completion texts)."""

    def policy(self, trainable: Any, frozen: Any, input_ids: jax.Array,
               attention_mask: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Pure: (logits [B, T, V], values [B, T]; zeros without a critic)."""

    def reference_logits(self, trainable: Any, frozen: Any, input_ids: jax.Array,
                         attention_mask: jax.Array) -> jax.Array:
        """Pure: the reference policy's logits [B, T, V] (the KL anchor)."""

    def sampling_temperature(self) -> float:
        """The temperature rollouts are drawn at: log-probs are taken at it too."""

    def has_critic(self) -> bool:
        """Whether `policy` returns learned values (PPO's GAE needs them; GRPO does not)."""

    def flops_per_token(self) -> float:
        """Training model FLOPs per token, for MFU (0 if unknown)."""
