"""Helpers for tests that run `launch.train` in real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from aes_jax.train.checkpoint import read_state_numpy

REPO = Path(__file__).resolve().parents[1]
TINY = "configs/lm_lora.py:tiny"


def train_cmd(workdir: Path, *overrides: str, config: str = TINY) -> list[str]:
    return [sys.executable, "-m", "launch.train", f"--config={config}", f"--workdir={workdir}",
            *overrides]


def env(devices: int = 1) -> dict[str, str]:
    e = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    e.pop("XLA_FLAGS", None)
    if devices > 1:
        e["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return e


def run_train(workdir: Path, *overrides: str, devices: int = 1, config: str = TINY
              ) -> subprocess.CompletedProcess:
    proc = subprocess.run(train_cmd(workdir, *overrides, config=config), cwd=REPO,
                          env=env(devices), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def read_metrics(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def read_state(workdir: Path, step: int) -> dict:
    """The checkpointed TrainState of `step` as numpy arrays (any mesh it was saved from)."""
    return read_state_numpy(workdir, step)[1]


def flat(tree: dict) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}
