"""LLaMA-AES end to end on a tiny random LLaMA (byte tokenizer) and a fixture written here:
the loss combination, expected-score decoding, greedy scoring, self-consistency and export."""

import csv
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from aes_jax.data import mtl_io
from aes_jax.data.answer_format import format_output
from aes_jax.data.score_codec import ScoreCodec
from aes_jax.eval import llm_scoring
from aes_jax.eval.generate import SamplingConfig, generate, left_pad
from aes_jax.losses import emo, number_tokens
from aes_jax.losses.lm import masked_cross_entropy
from aes_jax.models.llama import Llama, LlamaConfig, init_params
from aes_jax.tasks.llama_aes import LlamaAesTask
from aes_jax.tasks.llama_aes_options import LlamaAesOptions
from configs.llama_aes import get_config
from tests.train_utils import REPO, env, read_metrics, run_train

TRAITS = ("content", "language")
CODECS = (ScoreCodec(1, 4), ScoreCodec(1.0, 3.0, 0.5))  # digits 1-4 and 1-5
WORDS = ["good", "weak", "clear", "messy", "strong", "plain"]


def _example(i: int, rng: np.random.Generator) -> mtl_io.MtlExample:
    """A short essay whose scores follow its words, so a tiny model can learn something."""
    q = rng.integers(0, 3)
    essay = " ".join(WORDS[2 * (q % 3) + int(rng.integers(0, 2))] for _ in range(6))
    content = int(1 + q + rng.integers(0, 2))
    language = [1.0, 2.0, 3.0][q]
    digits = [CODECS[0].encode(content), CODECS[1].encode(language)]
    feedback = f"The essay is {WORDS[2 * q]}."
    return mtl_io.MtlExample(instruction=f"Score it.\n\nEssay:\n{essay}",
                              output=format_output(digits, feedback),
                              essay_id=f"e{i}", traits=TRAITS,
                              scores=(float(content), language))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    splits = {"train": [_example(i, rng) for i in range(48)],
              "dev": [_example(100 + i, rng) for i in range(8)],
              "test": [_example(200 + i, rng) for i in range(8)]}
    out = tmp_path_factory.mktemp("mtl")
    manifest = mtl_io.mtl_manifest(TRAITS, CODECS, {k: len(v) for k, v in splits.items()},
                                    {"dataset": "fixture", "split": {"rule": "fixed"},
                                     "feedback": {"mode": "fixture"}})
    mtl_io.write_mtl_dir(out, splits, manifest, overwrite=True)
    return out


def tiny_config(data_dir, **overrides):
    c = get_config("tiny")
    c.data.dir = str(data_dir)
    c.data.seq_len = 128
    for key, value in overrides.items():
        c[key] = value
    return c


def _batch(task):
    it = task.train_iterator(4, 0, 0, 1)
    return jax.tree.map(jnp.asarray, next(it))


LOSS_CASES = {  # config overrides -> the weighting they resolve to
    "static": (dict(ntl_weight=0.3, emo_weight=0.2), "static"),
    "dynamic": (dict(ntl_weight=1.0, emo_weight=-1.0), "dynamic"),
    "uncertainty": (dict(ntl_weight=1.0, emo_weight=1.0, weighting="uncertainty"),
                    "uncertainty"),
    # the blockwise loss over blocks that do not divide the 512 tokens, and full logits
    "static_blocks_of_100": (dict(ntl_weight=0.3, emo_weight=0.2, loss_block_tokens=100),
                             "static"),
    "dynamic_full_logits": (dict(ntl_weight=1.0, emo_weight=-1.0, loss_block_tokens=0),
                            "dynamic"),
}
EPS = 1e-8  # weighting.dynamic's


@pytest.mark.parametrize("case", LOSS_CASES)
def test_loss_is_the_documented_combination(data_dir, tmp_path, case):
    overrides, mode = LOSS_CASES[case]
    task = LlamaAesTask(tiny_config(data_dir, **overrides), tmp_path)
    assert task.weighting == mode
    trainable, frozen = task.init(jax.random.key(0))
    batch = _batch(task)
    loss, aux = task.loss(trainable, frozen, batch, jax.random.key(1), 0)

    lm_vars = {**frozen, **{k: v for k, v in trainable.items() if k != "loss_weights"}}
    logits = task.lm.module.apply(lm_vars, batch["input_ids"], rngs={"dropout": jax.random.key(1)})
    ids, values = (jnp.asarray(x) for x in task.digit_tokens)
    ce = masked_cross_entropy(logits, batch["targets"], batch["loss_mask"])
    ntl = number_tokens.ntl_mse(logits, batch["targets"], batch["digit_mask"], ids, values)
    head = frozen["params"]["lm_head"].T  # the tiny model's head is untied: [V, D]
    e = emo.emo_topk(logits, batch["targets"], batch["feedback_mask"], head, k=64)
    expected = {"static": ce + 0.3 * ntl + 0.2 * e,
                "dynamic": 0.5 * (ce + (ce / (ntl + e + EPS)) * (ntl + e)),
                "uncertainty": 0.5 * (ce + ntl + e)}[mode]  # log-variances start at 0
    np.testing.assert_allclose(float(loss), float(expected), rtol=1e-5)
    np.testing.assert_allclose([float(aux["ce_loss"]), float(aux["ntl_loss"]),
                                float(aux["emo_loss"])], [ce, ntl, e], rtol=1e-5)
    if mode == "uncertainty":
        grads = jax.grad(lambda t: task.loss(t, frozen, batch, jax.random.key(1), 0)[0])(trainable)
        assert float(jnp.abs(grads["loss_weights"]["log_vars"]).sum()) > 0


@pytest.mark.parametrize("overrides, terms", [
    (dict(ntl_weight=1.0, emo_weight=-1.0), ("ce", "ntl", "emo")),
    # a negative NTL weight means dynamic weighting too (it used to give CE - NTL)
    (dict(ntl_weight=-1.0, emo_weight=0.0), ("ce", "ntl")),
])
def test_dynamic_weighting_value_and_gradients(data_dir, tmp_path, overrides, terms):
    """The task's combination is CE in value whatever aux is, so only its gradients tell
    it apart: d/dCE = 0.5, d/daux_i = 0.5 * CE / aux (aux = sum of the terms, the ratio
    a constant), from 0.5 * (ce + sg(ce / aux) * aux)."""
    task = LlamaAesTask(tiny_config(data_dir, **overrides), tmp_path)
    assert task.weighting == "dynamic" and task.options.active_terms == terms
    values = {"ce": 2.0, "ntl": 0.5, "emo": 0.3}
    args = [values[k] for k in terms]

    def combined(*xs):
        return task.combine(dict(zip(terms, xs)), {})
    value, grads = jax.value_and_grad(combined, argnums=tuple(range(len(terms))))(*args)
    aux = sum(args[1:])
    assert float(value) == pytest.approx(2.0, rel=1e-6)
    want = [0.5] + [0.5 * 2.0 / (aux + EPS)] * (len(terms) - 1)  # 2.5 and 1.25
    np.testing.assert_allclose([float(g) for g in grads], want, rtol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (dict(ntl_weight=-1.0, emo_weight=0.0, weighting="static"), "increase that loss"),
    (dict(ntl_weight=1.0, emo_weight=-1.0, weighting="uncertainty"), "on \\(1\\) or off"),
    (dict(ntl_weight=0.5, emo_weight=1.0, weighting="uncertainty"), "on \\(1\\) or off"),
    (dict(ntl_weight=0.3, emo_weight=-1.0), "other magnitudes would be ignored"),
    (dict(ntl_weight=1.0, emo_weight=2.0, weighting="dynamic"), "other magnitudes"),
    (dict(ntl_weight=-1.0, emo_weight=1.0), "EMO with a static weight"),
])
def test_weights_a_weighting_would_misread_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        LlamaAesOptions(**overrides)


def test_weighting_resolution_and_emo_default():
    def resolved(**kw):
        return LlamaAesOptions(**kw).resolved_weighting
    assert resolved(ntl_weight=-1.0, emo_weight=0.0) == "dynamic"
    assert resolved(ntl_weight=0.0, emo_weight=-1.0) == "dynamic"
    assert resolved(ntl_weight=-1.0, emo_weight=-1.0) == "dynamic"
    assert resolved(ntl_weight=0.3, emo_weight=0.1) == "static"
    assert resolved(ntl_weight=1.0, emo_weight=1.0, weighting="dynamic") == "dynamic"
    # EMO's default is the public code's dot form, in the config and the options alike.
    for arg in (None, "tiny"):
        assert LlamaAesOptions.from_config(get_config(arg)).emo_normalize is False
    assert LlamaAesOptions().emo_normalize is False


def test_batch_masks_point_at_digits_and_feedback(data_dir, tmp_path):
    task = LlamaAesTask(tiny_config(data_dir), tmp_path)
    batch = jax.device_get(_batch(task))
    digit_targets = batch["targets"][batch["digit_mask"]]
    assert set(digit_targets.tolist()) <= set(task.digit_tokens[0].tolist())
    # byte tokenizer: digit d is id ord(d) + 3, so the recorded value is the digit itself
    np.testing.assert_array_equal(batch["digit_value"][batch["digit_mask"]],
                                  digit_targets - (ord("0") + 3))
    assert (batch["trait_index"][batch["digit_mask"]] >= 0).all()
    assert (batch["feedback_mask"] <= batch["loss_mask"]).all()
    for row in range(len(batch["targets"])):
        text = task.tokenizer.decode(batch["targets"][row][batch["feedback_mask"][row]].tolist())
        assert text.strip().startswith("The essay is")


def test_score_only_training_drops_feedback(data_dir, tmp_path):
    task = LlamaAesTask(tiny_config(data_dir, mtl=False), tmp_path)
    batch = jax.device_get(_batch(task))
    assert not batch["feedback_mask"].any()
    assert task.options.active_terms == ("ce", "ntl")
    answers = [task.tokenizer.decode(batch["targets"][r][batch["loss_mask"][r]].tolist())
               for r in range(len(batch["targets"]))]
    assert all("Feedback" not in a for a in answers)


def test_watched_logits_equal_a_forward_pass():
    """Expected-score decoding reads the digit logits recorded while sampling; they must be
    the logits a plain forward pass over prompt + generated prefix gives."""
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                      max_position_embeddings=128, rms_norm_eps=1e-5)
    params = init_params(cfg, jax.random.key(0))
    ids, mask = left_pad([[5, 6, 7, 8, 9], [10, 11]], 0)
    watch = (3, 7, 11)
    out = generate(cfg, params, ids, mask, sampling=SamplingConfig(
        max_new_tokens=4, watch_token_ids=watch))
    for row in range(2):
        prompt = ids[row][mask[row]].tolist()
        for step in range(4):
            seq = jnp.asarray([prompt + out.tokens[row, :step].tolist()])
            logits = Llama(cfg).apply({"params": params}, seq)[0, -1]
            np.testing.assert_allclose(out.watched_logits[row, step], logits[np.array(watch)],
                                       atol=1e-4)


def test_scoring_report_qwk_per_trait(data_dir, tmp_path):
    task = LlamaAesTask(tiny_config(data_dir), tmp_path)
    rng = np.random.default_rng(3)
    gold = np.stack([rng.integers(1, 5, 30), rng.integers(1, 6, 30)], 1).astype(float)
    pred = np.clip(gold + rng.integers(-1, 2, gold.shape), [1, 1], [4, 5])
    result = {"gold": gold, "greedy": pred, "expected": gold, "expected_raw": gold,
              "parse_failures": 2, "answers_not_ok": 1}
    report = llm_scoring.scoring_report(task.score_format(), result)
    for k, (trait, lo_hi) in enumerate(zip(TRAITS, [(1, 4), (1, 5)])):
        ref = cohen_kappa_score(gold[:, k].astype(int), pred[:, k].astype(int),
                                weights="quadratic", labels=list(range(lo_hi[0], lo_hi[1] + 1)))
        assert report["greedy"]["qwk_per_trait"][trait] == pytest.approx(ref, abs=1e-9)
    assert report["expected"]["qwk_mean"] == pytest.approx(1.0)
    assert report["expected"]["mcrmse"] == pytest.approx(0.0)
    assert report["expected"]["mcrmse_continuous"] == pytest.approx(0.0)
    assert report["parse_failures"] == 2


@pytest.fixture(scope="module")
def trained_run(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    run_train(workdir, f"--config.data.dir={data_dir}", "--config.data.seq_len=128",
              "--config.total_steps=24", "--config.global_batch_size=8",
              "--config.optimizer.lr=0.01", "--config.eval_every=12",
              "--config.checkpoint_every=12", "--config.log_every=1",
              config="configs/llama_aes.py:tiny")
    return workdir


def test_lora_run_lowers_the_loss(trained_run):
    records = read_metrics(trained_run)
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) == 24
    # A random tiny base behind a fixed RMSNorm + random head bounds how far LoRA can move
    # the logits, so the drop is modest (about 0.2 nats here); no training leaves it ~0.
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) - 0.1, losses
    last = records[-1]
    for key in ("ce_loss", "ntl_loss", "emo_loss", "eval_loss", "eval_tf_expected_qwk_mean",
                "eval_tf_expected_mcrmse"):
        assert np.isfinite(last[key]), key


def _run(*args):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_score_split_and_jsonl(trained_run, data_dir, tmp_path):
    out = tmp_path / "scores.csv"
    proc = _run("launch.score", f"--ckpt={trained_run}", "--split=test", f"--out={out}")
    report = json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.rindex("}") + 1])
    assert report["num_essays"] == report["num_with_gold"] == 8
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == 8
    assert {"gold_content", "greedy_content", "expected_content", "expected_raw_language",
            "status", "text"} <= set(rows[0])
    failures = sum(r["status"] != "ok" for r in rows)
    assert report["answers_not_ok"] == failures
    for r in rows:  # after the fallback every prediction is a digit of its trait
        assert 1 <= int(r["greedy_content"]) <= 4 and 1 <= int(r["expected_language"]) <= 5
    metrics_json = json.loads(out.with_suffix(".metrics.json").read_text())
    assert set(metrics_json["greedy"]["qwk_per_trait"]) == set(TRAITS)

    # a JSONL file without gold: scored, no metrics
    jsonl = tmp_path / "new.jsonl"
    mtl_io.write_jsonl(jsonl, [mtl_io.MtlExample("Score it.\n\nEssay:\ngood clear", "")])
    out2 = tmp_path / "new.csv"
    proc = _run("launch.score", f"--ckpt={trained_run}", str(jsonl), f"--out={out2}")
    rows = list(csv.DictReader(open(out2)))
    assert len(rows) == 1 and rows[0]["gold_content"] == ""
    assert not out2.with_suffix(".metrics.json").exists()


def test_self_consistency_run_and_analyze(trained_run, data_dir, tmp_path):
    bank = tmp_path / "bank.json"
    _run("launch.self_consistency", "run", f"--run={trained_run}", "--split=test",
         "--num_samples=3", "--max_new_tokens=12", "--limit=5", f"--bank={bank}")
    data = json.loads(bank.read_text())
    assert len(data["essays"]) == 5
    assert all(len(e["samples"]) == 3 for e in data["essays"])
    assert data["digit_ranges"] == {"content": [1, 4], "language": [1, 5]}
    # the bank records launch.score's fallback: each trait's most frequent training digit
    train = mtl_io.load_mtl_dir(data_dir)[1]["train"]
    columns = zip(*(mtl_io.check_example(ex, CODECS) for ex in train))
    modes = [max(sorted(set(col)), key=col.count) for col in map(list, columns)]  # ties low
    assert data["fallbacks"] == dict(zip(TRAITS, modes))
    proc = _run("launch.self_consistency", "analyze", f"--bank={bank}", "--ms=1,3",
                f"--out_dir={tmp_path / 'analysis'}")
    result = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert result["ms"] == [1, 3]
    assert (tmp_path / "analysis" / "qwk_vs_m.png").stat().st_size > 0
    assert "majority" in proc.stdout


def test_export_writes_adapter_merged_model_and_score_format(trained_run, tmp_path):
    _run("launch.export", f"--run={trained_run}", f"--out={tmp_path / 'export'}")
    fmt = json.loads((tmp_path / "export" / "score_format.json").read_text())
    assert fmt["traits"] == list(TRAITS)
    assert (tmp_path / "export" / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "export" / "merged" / "config.json").is_file()
