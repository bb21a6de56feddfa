"""lm_lora with slow batches, so a test can kill a run between two checkpoints."""

from __future__ import annotations

import time

from aes_jax.tasks.lm_lora import LMLoraTask
from aes_jax.tasks.ppo import PpoTask


class _SlowIterator:
    def __init__(self, inner, seconds: float):
        self.inner, self.seconds = inner, seconds

    def __next__(self):
        time.sleep(self.seconds)
        return next(self.inner)

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.inner.set_state(state)


class SlowLMLoraTask(LMLoraTask):
    """lm_lora whose batches arrive slowly, so a test can kill a run between checkpoints
    (`--config.task=tests.slow_task:SlowLMLoraTask`)."""

    def train_iterator(self, *args, **kwargs):
        return _SlowIterator(super().train_iterator(*args, **kwargs), seconds=0.5)


class SlowPpoTask(PpoTask):
    """The PPO task whose prompt batches arrive slowly (a kill lands between checkpoints;
    `--config.task=tests.slow_task:SlowPpoTask`)."""

    def prompt_iterator(self, *args, **kwargs):
        return _SlowIterator(super().prompt_iterator(*args, **kwargs), seconds=1.5)
