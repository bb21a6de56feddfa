"""Pair2Score on a tiny random LLaMA: Δ antisymmetry through the backbone, fusion feeding
the Stage-1 embedding to the head, and both stages through `launch.train`
(absolute_metrics.json, a finished run started again). The pair files: test_pairs.py."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_jax.models import siamese
from aes_jax.tasks import pair2score
from configs.pair2score import get_config
from tests.train_utils import REPO, env


def tiny_task(tmp_path, variant="warm_start"):
    config = get_config(f"tiny,variant={variant}")
    config.data.seq_len = 64
    task = pair2score.Pair2ScoreTask(config, tmp_path)
    task.prepare_data()
    return task


@pytest.mark.parametrize("side", ["right", "left"])
def test_delta_through_the_backbone_is_antisymmetric(tmp_path, side):
    task = tiny_task(tmp_path)
    relative = task.relative.task
    trainable, frozen = relative.init(jax.random.PRNGKey(0))
    tokens = task.data.tokens
    ids, mask = np.array(tokens.ids[:4]), np.array(tokens.mask[:4])
    mask[1, 40:] = False  # a shorter essay: padding on the chosen side
    if side == "left":
        ids, mask = ids[:, ::-1].copy(), mask[:, ::-1].copy()
    a, b = [0, 1], [2, 3]
    u_ab = relative.utilities(trainable, frozen, ids[a + b], mask[a + b])
    u_ba = relative.utilities(trainable, frozen, ids[b + a], mask[b + a])
    d_ab, d_ba = siamese.pair_delta(u_ab), siamese.pair_delta(u_ba)
    np.testing.assert_allclose(np.asarray(d_ab), -np.asarray(d_ba), rtol=0, atol=1e-6)
    u_aa = relative.utilities(trainable, frozen, ids[a + a], mask[a + a])
    assert np.all(np.asarray(siamese.pair_delta(u_aa)) == 0)


def test_fusion_head_sees_the_stage1_embedding(tmp_path):
    task = tiny_task(tmp_path, "fusion")
    absolute = task.absolute.task
    fresh, frozen = task.lm.init(jax.random.PRNGKey(0))
    head = siamese.init_regression_head(jax.random.PRNGKey(1), absolute.head_in,
                                        absolute.head.width)
    stage1 = jax.tree.map(lambda x: x + 0.05, fresh["lora"])  # B != 0: the adapter acts
    trainable = {"lora": fresh["lora"], "head": head}
    tokens = task.data.tokens
    ids, mask = tokens.ids[:3], tokens.mask[:3]
    one = absolute.predict(trainable, {**frozen, "stage1_lora": stage1}, ids, mask)
    other = absolute.predict(trainable, {**frozen, "stage1_lora": fresh["lora"]}, ids, mask)
    assert absolute.head_in == 2 * task.lm.cfg.hidden_size
    assert np.abs(np.asarray(one) - np.asarray(other)).max() > 1e-4
    grad = jax.grad(lambda h: jnp.sum(absolute.predict(
        {**trainable, "head": h}, {**frozen, "stage1_lora": stage1}, ids, mask)))(head)
    hidden = task.lm.cfg.hidden_size
    assert np.abs(np.asarray(grad["hidden"]["kernel"][:hidden])).max() > 0


def test_both_stages_train_and_a_rerun_only_reports(tmp_path):
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "launch.train", "--config=configs/pair2score.py:tiny",
           f"--workdir={workdir}", "--config.relative.total_steps=4",
           "--config.absolute.total_steps=4", "--config.data.seq_len=32"]
    done = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((workdir / "absolute_metrics.json").read_text())
    for key in ("qwk", "mae", "rmse", "variant", "trait", "run", "stage1_pair_accuracy",
                "anchor_qwk"):
        assert key in result, key
    assert (result["variant"], result["trait"], result["run"]) == ("warm_start", "grammar", 1)
    assert 0 <= result["stage1_pair_accuracy"] <= 1 and result["n"] > 0
    for stage in ("relative", "absolute"):
        assert (workdir / stage / "metrics.jsonl").is_file()
    assert (workdir / "pairs" / "run1_grammar.jsonl").is_file()
    lines = (workdir / "absolute" / "predictions_test.csv").read_text().splitlines()
    assert len(lines) == result["n"] + 1
    again = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("already finished at step 4") == 2
    rerun = json.loads((workdir / "absolute_metrics.json").read_text())
    assert {k: rerun[k] for k in ("qwk", "mae", "rmse", "anchor_qwk")} == \
        {k: result[k] for k in ("qwk", "mae", "rmse", "anchor_qwk")}

    # Export: the merged HF model + the head reproduce the run's Stage-2 predictions in torch.
    out = tmp_path / "export"
    exported = subprocess.run([sys.executable, "-m", "launch.export", f"--run={workdir}",
                               f"--out={out}"], cwd=REPO, env=env(), capture_output=True,
                              text=True, timeout=600)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (out / "adapter" / "adapter_config.json").is_file()
    _assert_export_matches(workdir, out)

    # launch.evaluate's function on the held-out fold: the final stage's best checkpoint.
    from aes_jax.runs import evaluate_run
    evaluated = evaluate_run(workdir, "test")
    assert evaluated["step"] == result["stage2_step"]
    for key in ("qwk", "mae", "rmse", "n"):  # its own eval batch size: not bit-equal
        assert evaluated[key] == pytest.approx(result[key], abs=1e-5), key
    assert (workdir / "eval" / "metrics_test.json").is_file()


def _assert_export_matches(workdir, out):
    import torch
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM

    from aes_jax.runs import load_run
    from aes_jax.train.checkpoint import read_state_numpy

    _, task = load_run(workdir)
    absolute = task.final_stage().task
    _, state = read_state_numpy(workdir / "absolute")
    _, frozen = absolute.init(jax.random.PRNGKey(0))
    ids, mask = task.data.tokens.ids[:3], task.data.tokens.mask[:3]
    ours = np.asarray(absolute.predict(jax.tree.map(jnp.asarray, state["trainable"]), frozen,
                                       ids, mask))
    model = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32)
    head = {k: torch.tensor(v) for k, v in load_file(out / "head.safetensors").items()}
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor(ids, dtype=torch.long),
                       attention_mask=torch.tensor(mask, dtype=torch.long),
                       output_hidden_states=True).hidden_states[-1]
        m = torch.tensor(mask, dtype=torch.float32)[..., None]
        pooled = (hidden * m).sum(1) / m.sum(1)
        x = torch.relu(pooled @ head["hidden.kernel"] + head["hidden.bias"])
        theirs = (x @ head["out.kernel"] + head["out.bias"])[:, 0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("head_bias", ["torch", "train_mean"])
def test_head_bias_starts_at_the_train_mean_when_asked(tmp_path, head_bias):
    config = get_config("tiny,variant=baseline")
    config.head_bias = head_bias
    task = pair2score.Pair2ScoreTask(config, tmp_path)
    task.prepare_data()
    trainable, _ = task.absolute.task.init(jax.random.PRNGKey(0))
    bias = float(np.asarray(trainable["head"]["out"]["bias"])[0])
    mean = float(np.mean(task.data.scores[task.data.stage2_splits["train"]]))
    if head_bias == "train_mean":
        assert bias == pytest.approx(mean, abs=1e-6) and mean > 2.0
    else:  # torch's nn.Linear: uniform within 1/sqrt(fan_in)
        assert abs(bias) <= 1 / np.sqrt(task.absolute.task.head.width)
