"""Ctrl-C and preemption: SIGINT / SIGTERM (what SLURM and TPU maintenance send) ask the
loop to stop at the next step boundary, where it saves a checkpoint and raises
`TrainingInterrupted`. A second signal while it saves falls back to the default action.
"""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(Exception):
    """The loop stopped on a signal after saving `step` (None: nothing new to save)."""

    def __init__(self, step: int | None, signum: int, workdir: str):
        self.step, self.signum, self.workdir = step, signum, workdir
        what = (f"interrupted at step {step}" if step is not None
                else "interrupted before the first step")
        super().__init__(f"{what}; rerun the same command to resume")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class StopRequests:
    """Context manager: while inside, the first SIGINT/SIGTERM is recorded instead of
    killing the process. Outside the main thread (signals cannot be caught there) it
    records nothing."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _record(self, signum, frame) -> None:
        del frame
        self.signum = signum
        for s, handler in self._previous.items():  # a second signal: the default again
            signal.signal(s, handler)
        print(f"\n{signal.Signals(signum).name}: saving a checkpoint at the end of this step "
              "(signal again to abort)", flush=True)

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._record) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def agreed(self) -> int | None:
        """The signal any process received (all processes must stop at the same step to
        save collectively); one tiny all-gather per step when there are several."""
        if jax.process_count() == 1:
            return self.signum
        from jax.experimental import multihost_utils

        received = multihost_utils.process_allgather(np.int32(self.signum or 0))
        signum = int(np.max(received))
        return signum or None
