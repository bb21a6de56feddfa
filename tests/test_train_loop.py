"""The training loop end to end on the tiny config, in real subprocesses."""

import signal
import subprocess
import time

import numpy as np
import pytest

from tests.train_utils import (REPO, env, flat, read_metrics, read_state, run_train, train_cmd)

STEADY = ("loss", "grad_norm", "learning_rate")


def test_killed_run_resumes_bit_identical(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    common = ["--config.total_steps=10", "--config.checkpoint_every=5", "--config.log_every=1",
              "--config.eval_every=0"]
    run_train(straight, *common)

    slow = "--config.task=tests.slow_task:SlowLMLoraTask"  # batches arrive every 0.5 s
    proc = subprocess.Popen(train_cmd(killed, *common, slow),
                            cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "5").exists():  # orbax renames it in at commit
        assert proc.poll() is None and time.time() < deadline, "run ended before step 5"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "10").exists()

    resumed = run_train(killed, *common, "--allow_changes=task")  # the slow task was a test aid
    assert "resumed from" in resumed.stdout and "at step 5" in resumed.stdout

    a, b = flat(read_state(straight, 10)), flat(read_state(killed, 10))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name, strict=True)
    ma, mb = read_metrics(straight), read_metrics(killed)
    assert [m["step"] for m in mb] == list(range(1, 11))  # no duplicate lines after resume
    for x, y in zip(ma[5:], mb[5:]):
        assert {k: x[k] for k in STEADY} == {k: y[k] for k in STEADY}


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_saves_the_current_step_and_the_rerun_resumes_there(tmp_path, signum, code):
    run = tmp_path / "run"
    common = ["--config.total_steps=8", "--config.checkpoint_every=100", "--config.log_every=1",
              "--config.eval_every=0"]
    slow = "--config.task=tests.slow_task:SlowLMLoraTask"  # batches arrive every 0.5 s
    proc = subprocess.Popen(train_cmd(run, *common, slow), cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    metrics = run / "metrics.jsonl"
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.time() < deadline, "run ended before step 2"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    step = int(stderr.split("interrupted at step ")[1].split(";")[0])
    assert "rerun the same command to resume" in stderr and 2 <= step < 8
    kept = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert kept == [step]  # saved at the signal, not at a periodic checkpoint
    if signum == signal.SIGINT:
        resumed = run_train(run, *common, slow)
        assert f"at step {step}" in resumed.stdout
        assert [m["step"] for m in read_metrics(run)] == list(range(1, 9))


def test_gradient_accumulation_equals_full_batch(tmp_path):
    common = ["--config.total_steps=2", "--config.eval_every=0", "--config.lora.dropout=0.0"]
    run_train(tmp_path / "one", *common)
    run_train(tmp_path / "accum", *common, "--config.grad_accum_steps=4")
    a, b = flat(read_state(tmp_path / "one", 2)), flat(read_state(tmp_path / "accum", 2))
    for name in a:
        if "trainable" in name:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)
    la, lb = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "accum")
    np.testing.assert_allclose([m["loss"] for m in la], [m["loss"] for m in lb], rtol=1e-6)


def test_full_finetuning_learns_and_writes_run_dir(tmp_path):
    run = tmp_path / "full"
    out = run_train(run, "--config.use_lora=False", "--config.total_steps=30",
                    "--config.optimizer.lr=3e-3", "--config.eval_every=30",
                    "--config.checkpoint_every=30", "--config.log_every=10")
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [10, 20, 30]
    assert metrics[-1]["loss"] < 0.8 * metrics[0]["loss"]
    assert metrics[-1]["eval_loss"] < 4.0  # the byte-level demo corpus is very regular
    assert "tokens_per_s" in metrics[0] and "finished step 30" in out.stdout
    assert metrics[-1]["steps_per_s"] > 0
    assert (run / "config.json").is_file() and list((run / "tensorboard").iterdir())
    state = read_state(run, 30)
    assert "params" in state["trainable"] and state["ema"] is None


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tmp_path):
    proc = subprocess.run(
        train_cmd(tmp_path, "--config.use_lora=False", "--config.total_steps=40",
                  "--config.optimizer.name=sgd", "--config.optimizer.lr=1e12",
                  "--config.optimizer.clip_norm=0",
                  "--config.optimizer.warmup_steps=0", "--config.checkpoint_every=1",
                  "--config.eval_every=0"),
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "non-finite loss" in proc.stderr and "at step" in proc.stderr
    bad_step = int(proc.stderr.split("at step ")[1].split(";")[0])
    kept = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert kept and max(kept) == bad_step - 1
    assert np.isfinite(read_state(tmp_path, max(kept))["trainable"]["params"]["embed_tokens"]).all()


def test_bad_mesh_is_reported(tmp_path):
    proc = subprocess.run(train_cmd(tmp_path, "--config.mesh.data=3"), cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "needs 3 devices, 1 are available" in proc.stderr


def test_default_config_runs_on_packaged_smollm2(smollm2_dir, tmp_path):
    """The non-tiny config (real SmolLM2 + its BPE tokenizer), shortened to two steps."""
    from tests.train_utils import TINY

    run_train(tmp_path, "--config.total_steps=2", "--config.data.seq_len=32",
              "--config.global_batch_size=2", "--config.eval_every=2",
              "--config.log_every=1", "--config.checkpoint_every=2",
              config=TINY.replace(":tiny", ""))
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [1, 2]
    assert 0.5 < metrics[0]["loss"] < 8.0  # a pretrained LM, not a random one (ln 49152 = 10.8)
    state = read_state(tmp_path, 2)
    assert set(state["trainable"]) == {"lora"}


def test_bfloat16_compute_keeps_float32_master_weights(tmp_path):
    common = ["--config.total_steps=2", "--config.eval_every=0", "--config.lora.dropout=0.0"]
    run_train(tmp_path / "f32", *common)
    run_train(tmp_path / "bf16", *common, "--config.dtype=bfloat16")
    f32, bf16 = read_metrics(tmp_path / "f32"), read_metrics(tmp_path / "bf16")
    assert bf16[0]["loss"] != f32[0]["loss"]  # the compute really ran in bfloat16
    np.testing.assert_allclose(bf16[0]["loss"], f32[0]["loss"], rtol=1e-2)
    state = read_state(tmp_path / "bf16", 2)
    assert state["trainable"]["lora"]["layers"]["self_attn"]["q_proj"]["a"].dtype == np.float32
    opt_dtypes = {v.dtype for v in flat(state["opt_state"]).values() if v.dtype.kind == "f"}
    assert opt_dtypes == {np.dtype(np.float32)}
