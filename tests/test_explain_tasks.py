"""RLearner's generator (SFT) and verifier tasks on the tiny model: what the loss sees,
the question-level split, the verifier's rows, metrics, head and export (training through
the loop: tests/test_rlearner_pipeline.py)."""

import json

import jax
import numpy as np
import pytest

from aes_jax import tasks
from aes_jax.data import explanations as ex
from aes_jax.eval import metrics
from aes_jax.interop.heads import load_head
from configs import rlearner_sft, rlearner_verifier


def tiny(module, **data):
    c = module.get_config("tiny")
    c.async_checkpointing = False
    c.total_steps, c.eval_every, c.checkpoint_every = 4, 4, 4
    for k, v in data.items():
        c.data[k] = v
    return c


def test_sft_loss_mask_is_the_explanation_and_its_end(tmp_path):
    task = tasks.build(tiny(rlearner_sft, max_prompt_tokens=600, max_completion_tokens=400),
                       tmp_path)
    tok = task.lm.tokenizer
    record, row = task.records["train"][0], task.rows["train"][0]
    learned = row["targets"][row["loss_mask"]].tolist()
    assert learned == tok.encode(record.output) + [tok.end_of_answer_id]
    prompt = row["input_ids"][:int(np.argmax(row["loss_mask"])) + 1].tolist()
    assert prompt == tok.encode(tok.chat_prompt(record.prompt))
    assert task.counts.prompts_cut == task.counts.completions_cut == 0
    # What it trains on, as the original's JSON; no question on both sides.
    train = ex.read_explanation_json(tmp_path / "data" / "sft_train.json")
    evals = ex.read_explanation_json(tmp_path / "data" / "sft_eval.json")
    assert train == task.records["train"] and evals == task.records["eval"]
    assert not {r.input for r in train} & {r.input for r in evals}
    assert json.loads((tmp_path / "data" / "sft_filters.json").read_text())["seen"] == 16


def test_grouped_pair_accuracy_equals_the_explicit_loop(rng):
    groups = rng.integers(0, 4, 30)
    true = rng.integers(0, 4, 30).astype(float)
    pred = np.round(rng.normal(size=30), 1)
    correct = count = 0
    for i in range(30):
        for j in range(i + 1, 30):
            if groups[i] == groups[j] and true[i] != true[j]:
                count += 1
                agree = np.sign(pred[i] - pred[j]) * np.sign(true[i] - true[j])
                correct += 0.5 if pred[i] == pred[j] else float(agree > 0)
    assert metrics.grouped_pair_accuracy(groups, true, pred) == (pytest.approx(correct / count),
                                                                 count)
    assert metrics.pearson(true, pred) == pytest.approx(np.corrcoef(true, pred)[0, 1])
    assert metrics.pearson(true, np.ones(30)) == 0.0


def test_verifier_rows_head_and_export(tmp_path):
    config = tiny(rlearner_verifier)
    task = tasks.build(config, tmp_path)
    rows = task.rows
    ratings = np.array([r["rating"] for r in rows["train"]], np.float64)
    np.testing.assert_allclose(ratings * 10, np.round(ratings * 10), atol=1e-5)  # one decimal
    assert 0 <= ratings.min() and ratings.max() <= 5
    groups = [int(r["group"]) for r in rows["eval"]]
    assert len(set(groups)) == 4 and len(groups) == 20  # 4 held-out questions x 5 explanations
    trainable, frozen = task.init(jax.random.key(0))
    assert float(trainable["head"]["out"]["bias"][0]) == pytest.approx(task.train_mean)
    written = task.export(trainable, frozen, tmp_path / "export")
    head = load_head(tmp_path / "export" / "head.safetensors")
    np.testing.assert_array_equal(head["out"]["bias"], np.asarray(trainable["head"]["out"]["bias"]))
    assert (tmp_path / "export" / "adapter" / "adapter_config.json").exists()
    assert tmp_path / "export" / "verifier.json" in written
