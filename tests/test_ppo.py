"""RLearner PPO on the tiny config: the RL loop end to end (metrics, plot, samples), a
SIGKILLed run resumes to the same parameters, GRPO and the LoRA critic, the policy /
reference on one base, the export. (PPO after real SFT and verifier runs, read back by
the Explainer: tests/test_rlearner_pipeline.py.)"""

import json
import signal
import subprocess
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from aes_jax import tasks
from aes_jax.interop import hf, peft
from aes_jax.models.llama import Llama, init_lora
from aes_jax.train import rl_loop
from aes_jax.train.ppo_objective import completion_rows, make_experience_fn
from aes_jax.train.rl_config import RLConfig
from configs import rlearner_ppo
from tests.train_utils import REPO, env, flat, read_metrics, read_state, run_train, train_cmd

CONFIG = "configs/rlearner_ppo.py:tiny"
REQUIRED = ("reward_mean", "reward_std", "kl", "policy_loss", "value_loss", "clip_fraction",
            "entropy", "explained_variance", "tokens_per_s", "rollout_s", "update_s")


def test_killed_ppo_run_resumes_to_the_same_params(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    common = ["--config.total_steps=4", "--config.checkpoint_every=2", "--config.eval_every=4"]
    first = run_train(straight, *common, config=CONFIG)
    assert "best checkpoint on eval_reward_mean (max)" in first.stdout
    assert "model" in first.stdout and "critic" in first.stdout  # the task's header lines
    rows = read_metrics(straight)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in REQUIRED:
        assert all(np.isfinite(r[key]) for r in rows), key
    assert rows[-1]["optimizer_steps"] == 4 * 2 * 2  # iterations x epochs x minibatches
    assert rows[0]["kl"] == 0.0  # a fresh PPO adapter is the reference exactly
    assert "eval_reward_mean" in rows[-1] and (straight / "reward_curve.png").stat().st_size
    samples = [json.loads(x) for x in (straight / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and {s["step"] for s in samples} == {4}

    slow = "--config.task=tests.slow_task:SlowPpoTask"
    proc = subprocess.Popen(train_cmd(killed, *common, slow, config=CONFIG), cwd=REPO,
                            env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "2").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before iteration 2"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "checkpoints" / "4").exists()
    resumed = run_train(killed, *common, "--allow_changes=task", config=CONFIG)
    assert "resumed from" in resumed.stdout and "at iteration 2" in resumed.stdout
    a, b = flat(read_state(straight, 4)), flat(read_state(killed, 4))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name, strict=True)
    again = read_metrics(killed)
    assert [r["step"] for r in again] == [1, 2, 3, 4]
    for x, y in zip(rows[2:], again[2:]):
        assert {k: x[k] for k in ("reward_mean", "kl", "loss")} == {
            k: y[k] for k in ("reward_mean", "kl", "loss")}


def _tiny(tmp_path, arg="tiny", **overrides):
    config = rlearner_ppo.get_config(arg)
    with config.unlocked():
        for key, value in overrides.items():
            node = config
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
    return config


def test_grpo_and_the_lora_critic_train(tmp_path):
    config = _tiny(tmp_path, "tiny,grpo", total_steps=1, eval_every=0)
    last = rl_loop.train_rl(tasks.build(config, tmp_path / "grpo"), config, tmp_path / "grpo")
    assert np.isfinite(last["policy_loss"]) and last["value_loss"] == 0.0
    assert last["optimizer_steps"] == 1 * 2 * 2
    config = _tiny(tmp_path, "tiny,critic=lora", total_steps=1, eval_every=0)
    task = tasks.build(config, tmp_path / "lora")
    last = rl_loop.train_rl(task, config, tmp_path / "lora")
    state = read_state(tmp_path / "lora", 1)
    assert {"lora", "critic_lora", "value_head"} <= set(state["trainable"])
    assert np.isfinite(last["value_loss"]) and last["value_loss"] > 0
    with pytest.raises(ValueError, match="needs a critic"):
        tasks.build(_tiny(tmp_path, "tiny", **{"ppo.critic": "none"}), tmp_path / "bad")
    with pytest.raises(ValueError, match="do not split into config.rl.minibatches=3"):
        tasks.build(_tiny(tmp_path, "tiny", **{"rl.minibatches": 3}), tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="config.ppo.sft_run=nowhere: no training run"):
        tasks.build(_tiny(tmp_path, "tiny", **{"ppo.sft_run": "nowhere"}), tmp_path / "bad")
    with pytest.raises(ValueError, match="group_size >= 2"):
        RLConfig.from_config(ml_collections.ConfigDict({"rl": {"advantage": "grpo"}}))


def test_policy_starts_at_the_sft_reference_on_one_base(tmp_path):
    """With an SFT adapter the policy is SFT + a fresh PPO adapter: its logits equal the
    reference (SFT alone) and base + SFT adapter run directly; the KL is 0 everywhere."""
    probe = tasks.build(_tiny(tmp_path), tmp_path / "probe")
    _, frozen = probe.lm.init(jax.random.PRNGKey(0))
    cfg = probe.lm.cfg
    sft = jax.tree.map(lambda x: x + 0.05, init_lora(cfg, jax.random.PRNGKey(7)))  # b != 0
    adapter_dir = peft.save_peft_adapter(cfg, sft, tmp_path / "sft_adapter")
    task = tasks.build(_tiny(tmp_path, **{"ppo.sft_adapter": str(adapter_dir)}), tmp_path / "t")
    trainable, frozen = task.init(jax.random.PRNGKey(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(3, 200, size=(2, 12)), jnp.int32)
    mask = jnp.ones_like(ids, bool)
    direct = Llama(cfg).apply({"params": frozen["params"], "lora": sft}, ids,
                              attention_mask=mask)
    logits, values = task.policy(trainable, frozen, ids, mask)
    np.testing.assert_allclose(task.reference_logits(trainable, frozen, ids, mask), direct,
                               atol=1e-5)
    np.testing.assert_allclose(logits, direct, atol=1e-5)
    assert float(jnp.abs(values).max()) == 0.0  # zero-initialised value head

    prompts = next(iter(task.eval_prompts(2)))
    tokens, lengths = task.rollout(trainable, frozen, prompts, jax.random.PRNGKey(1))
    experience = make_experience_fn(task, RLConfig())
    batch, metrics = jax.jit(experience)(trainable, frozen, prompts["prompt_ids"],
                                         prompts["prompt_mask"], tokens, lengths,
                                         jnp.array([1.0, 0.0]), 0.05)
    assert float(metrics["kl"]) == pytest.approx(0.0, abs=1e-5)
    ids, mask, m = completion_rows(prompts["prompt_ids"], prompts["prompt_mask"], tokens,
                                   lengths)
    np.testing.assert_array_equal(batch["completion_mask"], m)
    # The experience's log-probs are the sampler's tokens under softmax(logits / T).
    full = task.policy(trainable, frozen, ids, mask)[0][:, -tokens.shape[1] - 1:-1]
    logp = jax.nn.log_softmax(full / task.sampling_temperature(), axis=-1)
    want = jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(batch["old_logprobs"], want, atol=1e-5)

    # The export: one PEFT adapter (SFT + PPO) on the base, and the merged model = policy.
    trainable = {**trainable, "lora": jax.tree.map(lambda x: x + 0.01, trainable["lora"])}
    written = task.export(trainable, frozen, tmp_path / "export")
    assert {p.name for p in written} >= {"base", "adapter", "merged", "value_head.safetensors"}
    merged_cfg, merged = hf.load_llama(tmp_path / "export" / "merged")
    np.testing.assert_allclose(Llama(merged_cfg).apply({"params": merged}, ids),
                               task.policy(trainable, frozen, ids, jnp.ones_like(ids, bool))[0],
                               atol=1e-4)
