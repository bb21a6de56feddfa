"""The loop driven by tasks written in the test (tests/fake_tasks.py): it needs only the
contract, passes `step` to the loss, and carries a stateful task's state through
accumulation, checkpoints and resume exactly."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from aes_jax.train.checkpoint import read_state_numpy
from configs import common
from tests.fake_tasks import TRUE_W, LinearRegressionTask, RowMemoryTask
from tests.train_utils import REPO, env, flat, read_metrics


def config(**overrides):
    settings = dict(total_steps=40, global_batch_size=8, eval_batch_size=8, log_every=10,
                    eval_every=40, checkpoint_every=20, async_checkpointing=False,
                    optimizer=dict(lr=0.1, warmup_steps=0, schedule="constant"))
    settings.update(overrides)
    return common.engine(**settings)


def test_fake_task_learns_through_the_loop(tmp_path):
    from aes_jax.train import loop

    last = loop.train(LinearRegressionTask(), config(), tmp_path)
    assert last["step"] == 40 and last["eval_mse"] < 1e-3, last
    records = read_metrics(tmp_path)
    # the loss sees the number of updates done before it: 0 at step 1
    assert [r["step_seen"] for r in records] == [r["step"] - 1 for r in records]
    step, state = read_state_numpy(tmp_path)
    np.testing.assert_allclose(state["trainable"]["w"], TRUE_W, atol=0.02)
    assert step == 40 and state["task_state"] is None


def test_loop_runs_without_the_task_registry(tmp_path):
    script = (
        "import sys\n"
        "from aes_jax.train import loop\n"
        "from tests.fake_tasks import LinearRegressionTask\n"
        "from tests.test_loop_contract import config\n"
        f"loop.train(LinearRegressionTask(), config(total_steps=4), {str(tmp_path)!r})\n"
        "assert not any(m.startswith('aes_jax.tasks') for m in sys.modules), 'registry loaded'\n"
        "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_stateful_task_state_is_checkpointed_and_resumed_exactly(tmp_path):
    from aes_jax.train import loop

    settings = dict(total_steps=6, checkpoint_every=3, log_every=1, eval_every=0)
    loop.train(RowMemoryTask(), config(**settings), tmp_path / "straight")
    loop.train(RowMemoryTask(), config(**{**settings, "total_steps": 3}), tmp_path / "resumed")
    last = loop.train(RowMemoryTask(), config(**settings), tmp_path / "resumed")
    assert last["step"] == 6
    a = flat(read_state_numpy(tmp_path / "straight", 6)[1])
    b = flat(read_state_numpy(tmp_path / "resumed", 6)[1])
    assert a.keys() == b.keys() and any("task_state" in k for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name, strict=True)
    seen = a["['task_state']['seen']"]
    np.testing.assert_array_equal(seen, 6 * (np.arange(8) + 1.0))  # every row, every step
    assert np.all(a["['task_state']['memory']"] > 0)


def test_task_state_is_split_like_the_batch_under_accumulation(tmp_path):
    from aes_jax.train import loop

    settings = dict(total_steps=3, checkpoint_every=3, eval_every=0,
                    optimizer=dict(lr=0.1, warmup_steps=0, schedule="constant", clip_norm=0.0))
    loop.train(RowMemoryTask(), config(**settings), tmp_path / "one")
    loop.train(RowMemoryTask(), config(**settings, grad_accum_steps=4), tmp_path / "four")
    a = flat(read_state_numpy(tmp_path / "one", 3)[1])
    b = flat(read_state_numpy(tmp_path / "four", 3)[1])
    for name in a:
        if "trainable" in name or "task_state" in name:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)


def test_engine_settings_are_validated():
    from aes_jax.train.engine_config import EngineConfig

    with pytest.raises(ValueError, match="not divisible by config.grad_accum_steps=3"):
        EngineConfig.from_config(config(grad_accum_steps=3))
    with pytest.raises(ValueError, match="config.checkpoint_every=0"):
        EngineConfig.from_config(config(checkpoint_every=0))
    assert jax.tree.leaves(EngineConfig.from_config(config()).mesh) == [-1, 1, 1]


def test_best_checkpoint_is_kept_beside_the_last_and_chosen_by_default(tmp_path, capsys):
    from aes_jax.train import loop
    from aes_jax.train.checkpoint import resolve_step

    # eval_mse falls as the task learns, so "max" makes the first evaluation the best.
    settings = dict(total_steps=6, eval_every=2, checkpoint_every=6, keep_checkpoints=1,
                    log_every=2, best_metric="eval_mse", best_mode="max")
    loop.train(LinearRegressionTask(), config(**settings), tmp_path)
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == [2, 6]
    step, how = resolve_step(tmp_path)
    first = read_metrics(tmp_path)[0]
    assert step == 2 and how == f"best eval_mse {first['eval_mse']:.4f} (max)"
    assert resolve_step(tmp_path, "last") == (6, "last")
    with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 4 \(have \[2, 6\]\)"):
        resolve_step(tmp_path, "4")
    out = capsys.readouterr().out
    assert "step 2 eval: train loss" in out and "best checkpoint: step 2, eval_mse" in out

    # Started again when finished: says so and shows the last metrics.
    last = loop.train(LinearRegressionTask(), config(**settings), tmp_path)
    out = capsys.readouterr().out
    assert last["step"] == 6 and "already finished at step 6" in out
    assert f"{last['eval_mse']:.4f}" in out


def test_no_best_checkpoint_without_a_metric(tmp_path):
    from aes_jax.train import loop
    from aes_jax.train.checkpoint import resolve_step

    loop.train(LinearRegressionTask(), config(total_steps=4, eval_every=2, checkpoint_every=4),
               tmp_path)
    assert resolve_step(tmp_path) == (4, "last (no best checkpoint tracked)")
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        resolve_step(tmp_path, "best")


def test_early_stopping_counts_evaluations_since_the_best_and_survives_a_restart(
        tmp_path, capsys):
    from aes_jax.train import loop

    # "max" on a falling eval_mse: step 2 stays the best, so patience 2 stops at step 6.
    settings = dict(total_steps=20, eval_every=2, checkpoint_every=20, log_every=2,
                    best_metric="eval_mse", best_mode="max", early_stop_patience=2)
    last = loop.train(LinearRegressionTask(), config(**settings), tmp_path)
    out = capsys.readouterr().out
    assert last["step"] == 6, last
    assert "stopping early at step 6" in out and "(stopped early)" in out
    assert [r["step"] for r in read_metrics(tmp_path) if "eval_mse" in r] == [2, 4, 6]
    last = loop.train(LinearRegressionTask(), config(**settings), tmp_path)
    out = capsys.readouterr().out
    assert last["step"] == 6 and "already finished at step 6 (stopped early" in out
    # Patience 0 trains to the end.
    settings.update(early_stop_patience=0)
    assert loop.train(LinearRegressionTask(), config(**settings), tmp_path / "b")["step"] == 20
