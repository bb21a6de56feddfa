"""The DPO task: padding never reaches the log-probs (against transformers + torch), the
precomputed reference equals the per-step one (loss and gradients), and `:tiny` trains
through the loop with a step-1 loss of ln 2."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_jax import tasks
from aes_jax.data.chat_rows import completion_rows
from aes_jax.interop import hf
from aes_jax.losses.lm import sequence_logprob
from aes_jax.models.llama import Llama
from configs import rlearner_dpo


def tiny_config(**dpo):
    c = rlearner_dpo.get_config("tiny")
    c.data.demo_questions = 12
    c.async_checkpointing = False
    for k, v in dpo.items():
        c.dpo[k] = v
    return c


def torch_logps(model, prompt, completion):
    import torch

    ids = torch.as_tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
    targets = ids[0, 1:]
    picked = logp.gather(-1, targets[:, None])[:, 0]
    return float(picked[len(prompt) - 1:].sum()), float(picked[len(prompt) - 1:].mean())


def left_padded(row, length):
    """The same row shifted to the right end of a longer one (padding on the left)."""
    n = int(row["attention_mask"].sum())
    out = {k: np.zeros(length, v.dtype) for k, v in row.items()}
    for k, v in row.items():
        out[k][length - n:] = v[:n]
    return out


@pytest.mark.parametrize("average", [False, True])
def test_padding_never_leaks_into_sequence_logprobs(llama3_dir, rng, average):
    import transformers

    path, _ = llama3_dir
    cfg, params = hf.load_llama(path)
    torch_model = transformers.LlamaForCausalLM.from_pretrained(path).eval()
    pairs = [(rng.integers(3, cfg.vocab_size, 5), rng.integers(3, cfg.vocab_size, 3)),
             (rng.integers(3, cfg.vocab_size, 2), rng.integers(3, cfg.vocab_size, 7))]
    expected = [torch_logps(torch_model, p, c)[int(average)] for p, c in pairs]
    rows = [completion_rows(p, c, 12) for p, c in pairs]
    variants = {"right": rows, "right, longer": [completion_rows(p, c, 16) for p, c in pairs],
                "left": [left_padded(r, 14) for r in rows]}
    for name, variant in variants.items():
        batch = {k: jnp.asarray(np.stack([r[k] for r in variant])) for k in variant[0]}
        logits = Llama(cfg).apply({"params": params}, batch["input_ids"],
                                  attention_mask=batch["attention_mask"])
        got = sequence_logprob(logits, batch["targets"], batch["loss_mask"], average=average)
        np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-4,
                                   err_msg=name)


@pytest.fixture(scope="module")
def dpo_task(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dpo")
    task = tasks.build(tiny_config(precompute_reference=True), workdir)
    trainable, frozen = task.init(jax.random.key(0))
    # A trained-looking adapter, so policy != reference.
    leaves, treedef = jax.tree_util.tree_flatten(trainable)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    trainable = jax.tree_util.tree_unflatten(
        treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    return task, trainable, frozen, workdir


def test_precomputed_reference_equals_the_per_step_one(dpo_task):
    task, trainable, frozen, workdir = dpo_task
    assert (workdir / "reference_logps.npz").exists()
    batch = next(task.train_iterator(4, 0, 0, 1))
    assert "ref_chosen_logps" in batch
    live = {k: v for k, v in batch.items() if not k.startswith("ref_")}
    rng = jax.random.key(3)

    def loss(t, b):
        return task.loss(t, frozen, b, rng, jnp.int32(0))[0]

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    (pre, pre_grad), (per, per_grad) = [value_and_grad(trainable, b) for b in (batch, live)]
    assert float(pre) != pytest.approx(math.log(2), abs=1e-3)  # the adapter moved the policy
    np.testing.assert_allclose(float(pre), float(per), rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(pre_grad), jax.tree_util.tree_leaves(per_grad)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)
    # The stored values are the reference's: the frozen base without the adapter.
    rc, rr = task._logps(trainable, frozen, live, adapters=False)
    np.testing.assert_allclose(np.asarray(batch["ref_chosen_logps"]), np.asarray(rc), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(batch["ref_rejected_logps"]), np.asarray(rr),
                               rtol=1e-5)


def test_tiny_dpo_trains_with_step_one_loss_ln2(tmp_path):
    from aes_jax.train import loop

    config = tiny_config()
    config.total_steps, config.eval_every, config.checkpoint_every = 6, 3, 6
    task = tasks.build(config, tmp_path)
    loop.train(task, config, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    first = records[0]
    assert first["step"] == 1
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert first["logps/chosen"] < 0 and first["logps/rejected"] < 0
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert evals[-1]["eval_pairs"] == len(task.pairs["eval"]) == 3
    assert 0.0 <= evals[-1]["eval_rewards/accuracies"] <= 1.0
    assert records[-1]["loss"] < math.log(2)  # it learns something in 6 steps


def test_task_logps_ignore_padding_on_either_side(dpo_task):
    task, trainable, frozen, _ = dpo_task
    seq_len = task.arrays["train"][0]["chosen_input_ids"].shape[0]
    # Byte-token rows fill seq_len; cut two to different lengths (inside their completions).
    rows = [{k: np.where(np.arange(seq_len) < n, v, 0).astype(v.dtype) for k, v in
             task.arrays["train"][i].items()} for i, n in ((0, 210), (1, 240))]

    def batch(pad):
        out = {}
        for side in ("chosen", "rejected"):
            side_rows = [{k[len(side) + 1:]: v for k, v in r.items() if k.startswith(side)}
                         for r in rows]
            padded = [pad(r) for r in side_rows]
            for k in padded[0]:
                out[f"{side}_{k}"] = jnp.asarray(np.stack([p[k] for p in padded]))
        return out

    lengths = [int(r["chosen_attention_mask"].sum()) for r in rows]
    assert lengths[0] != lengths[1]
    right = task._logps(trainable, frozen, batch(lambda r: r), adapters=True)
    longer = task._logps(trainable, frozen, batch(
        lambda r: {k: np.pad(v, (0, 9)) for k, v in r.items()}), adapters=True)
    left = task._logps(trainable, frozen, batch(lambda r: left_padded(r, seq_len + 5)),
                       adapters=True)
    for got in (longer, left):
        for a, b in zip(got, right):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5)
