"""What a new user sees when something is wrong: one line on stderr naming the file or
field, exit status 2, no traceback, nothing written. And a resumed run whose config
changed is refused before anything is touched."""

import json
import shutil
import subprocess
import sys

import pytest

from aes_jax.runs import check_resume, config_changes
from tests.train_utils import REPO, TINY, env, run_train


def launch(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *needles):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_config_mistakes_are_one_line_and_create_nothing(tmp_path):
    run = tmp_path / "run"
    proc = launch("launch.train", f"--config={TINY}", f"--workdir={run}",
                  "--config.totl_steps=5")
    assert_one_line_error(proc, "--config.totl_steps: no such config field",
                          "did you mean total_steps")
    proc = launch("launch.train", "--config=configs/nope.py", f"--workdir={run}")
    assert_one_line_error(proc, "--config:", "configs/nope.py")
    proc = launch("launch.train", f"--config={TINY}", f"--workdir={run}",
                  "--config.total_steps=0")
    assert_one_line_error(proc, "config.total_steps=0: expected >= 1")
    assert not run.exists()


@pytest.mark.parametrize("module,flag", [("launch.evaluate", "--run"),
                                         ("launch.export", "--run"),
                                         ("launch.score", "--ckpt")])
def test_missing_run_directory(tmp_path, module, flag):
    extra = ["--out=" + str(tmp_path / "out")] if module == "launch.export" else []
    extra += ["--split=test"] if module == "launch.score" else []
    proc = launch(module, f"{flag}={tmp_path / 'nope'}", *extra)
    assert_one_line_error(proc, str(tmp_path / "nope"))
    assert not (tmp_path / "out").exists()


def test_truncated_safetensors_names_the_file(llama3_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(llama3_dir[0], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    proc = launch("launch.convert", f"--hf={broken}", f"--out={tmp_path / 'out'}")
    assert_one_line_error(proc, str(weights), "not a readable safetensors file")


def test_config_changes_are_named():
    stored = {"total_steps": 10, "model": {"hidden": 64}, "data": {"dir": ""}}
    new = {"total_steps": 20, "model": {"hidden": 64, "heads": 4}, "data": {"dir": ""}}
    changes = config_changes(stored, new)
    assert list(changes) == ["model.heads", "total_steps"]
    assert changes["total_steps"] == (10, 20)


def test_resume_with_another_config_is_refused_before_touching_the_run(tmp_path):
    run = tmp_path / "run"
    common = ["--config.total_steps=2", "--config.eval_every=0", "--config.log_every=1"]
    run_train(run, *common)
    stored = (run / "config.json").read_text()
    proc = launch("launch.train", f"--config={TINY}", f"--workdir={run}",
                  "--config.total_steps=3", "--config.eval_every=0", "--config.log_every=1",
                  "--config.lora.rank=4")
    assert_one_line_error(proc, "lora.rank (8 -> 4)", "total_steps (2 -> 3)",
                          "--allow_changes=lora.rank,total_steps")
    assert (run / "config.json").read_text() == stored
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]

    again = run_train(run, *common)  # the same command: finished, says so
    assert "already finished at step 2" in again.stdout
    longer = run_train(run, "--config.total_steps=3", "--config.eval_every=0",
                       "--config.log_every=1", "--allow_changes=total_steps")
    assert "resumed from" in longer.stdout and "at step 2" in longer.stdout
    assert json.loads((run / "config_before_step_2.json").read_text())["total_steps"] == 2
    assert json.loads((run / "config.json").read_text())["total_steps"] == 3


def test_check_resume_of_a_new_run_is_empty(tmp_path):
    assert check_resume(tmp_path / "new", {"a": 1}, []) == {}


def test_an_engine_setting_newer_than_the_run_at_its_default_is_no_change(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"total_steps": 5}))
    assert check_resume(tmp_path, {"total_steps": 5, "best_metric": ""}, []) == {}
    with pytest.raises(ValueError, match="best_metric"):
        check_resume(tmp_path, {"total_steps": 5, "best_metric": "eval_loss"}, [])
    # a task field newer than the run: no change while off, a change once set
    assert check_resume(tmp_path, {"total_steps": 5, "data": {"tfds_name": ""}}, []) == {}
    with pytest.raises(ValueError, match="data.tfds_name"):
        check_resume(tmp_path, {"total_steps": 5, "data": {"tfds_name": "ellipse"}}, [])
