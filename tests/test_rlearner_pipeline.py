"""RLearner end to end on the tiny model: SFT and verifier runs, both adapters on one base
(explanations equal the merged model's, scores equal the verifier task's), ILearner,
preference pairs from them, DPO after SFT, and the explanation metrics."""

import json
import math

import jax
import ml_collections
import numpy as np
import pytest

from aes_jax import tasks
from aes_jax.data import explanations as ex
from aes_jax.data.mcq import demo_mcqs, split_questions
from aes_jax.data.preferences import read_preferences
from aes_jax.eval import explanation_metrics as em
from aes_jax.eval import generate as gen
from aes_jax.data.chat_rows import encode_prompt
from aes_jax.eval.explainer import Explainer, ilearner_prompt
from aes_jax.eval.preference_builder import BuildOptions, build_preferences
from aes_jax.interop import hf
from aes_jax.models import lora as lora_lib
from aes_jax.models.llama import Llama
from aes_jax.train import loop
from aes_jax.train.checkpoint import read_state_numpy
from aes_jax.train import rl_loop
from configs import rlearner_dpo, rlearner_ppo, rlearner_sft, rlearner_verifier

GREEDY = gen.SamplingConfig(max_new_tokens=12)


def train_tiny(module, workdir, steps=4, **overrides):
    c = module.get_config("tiny")
    c.async_checkpointing = False
    c.total_steps, c.eval_every, c.checkpoint_every = steps, steps, steps
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    (workdir).mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(c.to_json())
    task = tasks.build(c, workdir)
    loop.train(task, c, workdir)
    return task


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlearner")
    train_tiny(rlearner_sft, root / "sft")
    train_tiny(rlearner_verifier, root / "verifier")
    return root


def test_sft_and_verifier_runs_learn_and_report(runs_dir):
    def metrics(name):
        return [json.loads(line) for line in
                (runs_dir / name / "metrics.jsonl").read_text().splitlines()]

    sft = metrics("sft")
    assert sft[-1]["loss"] < sft[0]["loss"]
    assert sft[-1]["eval_perplexity"] == pytest.approx(np.exp(sft[-1]["eval_loss"]))
    last = metrics("verifier")[-1]
    assert last["eval_explanations"] == 20 and last["eval_pairs"] > 0  # 4 questions x 5
    assert 0.0 <= last["eval_pair_accuracy"] <= 1.0 and last["eval_mae"] > 0


@pytest.fixture(scope="module")
def questions():
    return split_questions(demo_mcqs(), 0.2, 0)[1][:3]


def test_generator_adapter_on_the_shared_base_equals_the_merged_model(runs_dir, questions):
    explainer = Explainer.from_runs({"sft": runs_dir / "sft"}, runs_dir / "verifier")
    got = explainer.explain(questions, "sft", GREEDY, jax.random.key(0), batch_size=4)
    adapter = explainer.generators["sft"]
    merged = lora_lib.merge(explainer.params, adapter.lora, adapter.cfg)
    tok = explainer.lm.tokenizer
    ids, mask = gen.left_pad([encode_prompt(ex.generator_prompt(q), tok, 192)[0].tolist()
                              for q in questions], tok.pad_id, width=192)
    want = gen.generate(explainer.lm.base_cfg, merged, ids, mask,
                        sampling=gen.SamplingConfig(max_new_tokens=12,
                                                    stop_token_ids=(tok.eos_id,)))
    stops = (tok.eos_id,)
    assert [e.text for e in got] == [tok.decode(r).strip() for r in gen.strip_after_stop(want, stops)]
    assert all(e.seconds > 0 for e in got)


def test_verifier_scores_equal_the_verifier_task(runs_dir, questions):
    explainer = Explainer.from_runs({}, runs_dir / "verifier")
    texts = [q.explanation for q in questions] + [q.candidates[0].text for q in questions]
    got = explainer.score(list(questions) * 2, texts, batch_size=4)
    config = json.loads((runs_dir / "verifier" / "config.json").read_text())
    task = tasks.build(ml_collections.ConfigDict(config), runs_dir / "verifier_check")
    _, state = read_state_numpy(runs_dir / "verifier")
    _, frozen = task.init(jax.random.PRNGKey(config["seed"]))
    records = [ex.ExplanationRecord(ex.VERIFIER_INSTRUCTION, ex.verifier_input(
        ex.question_input(q.stem, q.options, q.answer), t), "0.0")
        for q, t in zip(list(questions) * 2, texts)]
    rows = [task._row(r, i, 0, "check") for i, r in enumerate(records)]
    batch = {k: np.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask")}
    want = np.clip(np.asarray(task.predict(jax.tree.map(np.asarray, state["trainable"]),
                                           frozen, batch)), 0, 5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_ilearner_prompts_with_the_last_score(runs_dir, questions):
    explainer = Explainer.from_runs({"sft": runs_dir / "sft"}, runs_dir / "verifier")
    out = explainer.ilearner(questions, 2, "sft", GREEDY, jax.random.key(0), batch_size=4)
    for e in out:
        assert [r["round"] for r in e.rounds] == [1, 2]
        assert e.text == e.rounds[-1]["explanation"]
        assert 0.0 <= e.rounds[0]["score"] <= 5.0
    prompt = ex.generator_prompt(questions[0])
    again = explainer.explain(questions[:1], "sft", GREEDY, jax.random.key(0), batch_size=4)
    assert again[0].text == out[0].rounds[0]["explanation"]  # round 1 is the one-shot answer
    assert ilearner_prompt(prompt, "x", 2.5).startswith(prompt)
    assert "It was rated 2.5 out of 5" in ilearner_prompt(prompt, "x", 2.5)


def test_preference_pairs_then_dpo_after_sft(runs_dir, tmp_path):
    explainer = Explainer.from_runs({"sft": runs_dir / "sft"}, runs_dir / "verifier")
    train_questions = split_questions(demo_mcqs(), 0.2, 0)[0][:8]
    options = BuildOptions(temperatures=(0.7, 1.3), max_new_tokens=12, min_score_gap=0.0,
                           hard_negative_share=0.5, batch_size=4)
    pairs, stats = build_preferences(explainer, train_questions, options, tmp_path / "prefs",
                                     progress=False)
    assert stats["questions"] == 8 and stats["pairs"] == len(pairs) == 8  # gap >= 0 keeps all
    assert stats["hard_negatives"] == 4 and stats["hard_negative_share"] == 0.5
    assert stats["candidates_per_question"] == 3
    assert read_preferences(tmp_path / "prefs" / "pairs.jsonl") == pairs
    assert sum(p.source.endswith("hard_negative") for p in pairs) == 4
    assert all(p.chosen_score >= p.rejected_score for p in pairs)
    # DPO on those pairs, after the SFT adapter (merged into its base): still ln 2 at step 1.
    sft_config = ml_collections.ConfigDict(json.loads(
        (runs_dir / "sft" / "config.json").read_text()))
    sft_task = tasks.build(sft_config, tmp_path / "sft_export_task")
    _, state = read_state_numpy(runs_dir / "sft")
    _, frozen = sft_task.init(jax.random.PRNGKey(sft_config.seed))
    sft_task.export(jax.tree.map(np.asarray, state["trainable"]), frozen, tmp_path / "sft_export")
    dpo_dir = tmp_path / "dpo"
    train_tiny(rlearner_dpo, dpo_dir, steps=2, **{
        "data.pairs_file": str(tmp_path / "prefs" / "pairs.jsonl"), "data.eval_fraction": 0.25,
        "dpo.sft_adapter": str(tmp_path / "sft_export" / "adapter")})
    first = json.loads((dpo_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
    # The DPO policy at inference: SFT + DPO adapters as one on the unmerged base.
    both = Explainer.from_runs({"sft": runs_dir / "sft", "dpo": dpo_dir}, runs_dir / "verifier")
    dpo = both.generators["dpo"]
    assert dpo.cfg.rank == both.generators["sft"].cfg.rank * 2
    explained = both.explain(train_questions[:2], "dpo", GREEDY, jax.random.key(0), 4)
    assert len(explained) == 2
    # The DPO export (SFT-merged base + adapter + merged policy) is that same model.
    dpo_config = ml_collections.ConfigDict(json.loads((dpo_dir / "config.json").read_text()))
    dpo_task = tasks.build(dpo_config, dpo_dir)
    _, dpo_state = read_state_numpy(dpo_dir)
    _, dpo_frozen = dpo_task.init(jax.random.PRNGKey(dpo_config.seed))
    dpo_task.export(jax.tree.map(np.asarray, dpo_state["trainable"]), dpo_frozen,
                    tmp_path / "dpo_export")
    cfg, merged = hf.load_llama(tmp_path / "dpo_export" / "merged")
    ids = np.arange(3, 19, dtype=np.int32)[None]
    exported = Llama(cfg).apply({"params": merged}, ids)
    swapped = Llama(cfg.replace(lora=dpo.cfg)).apply({"params": both.params, "lora": dpo.lora},
                                                      ids)
    np.testing.assert_allclose(np.asarray(exported), np.asarray(swapped), rtol=0, atol=1e-4)
    assert (tmp_path / "dpo_export" / "sft_base" / "config.json").exists()
    assert (tmp_path / "dpo_export" / "adapter" / "adapter_config.json").exists()


def test_explanation_metrics(questions):
    q = questions[0]
    assert em.sentence_bleu(q.explanation, q.explanation) == pytest.approx(100.0)
    assert em.answer_coverage("The mitochondrion makes ATP", "Mitochondrion (inner membrane)") \
        == pytest.approx(1 / 3)
    assert em.answer_coverage("anything", "7") is None
    from aes_jax.interop import assets
    from aes_jax.interop.torch_ref.text_scorers import BertScore

    bert = BertScore(assets.minilm_dir())
    same = bert.f1([q.explanation, ""], [q.explanation, q.explanation])
    assert same[0] == pytest.approx(1.0, abs=1e-5) and same[1] == 0.0
    result = em.evaluate_model(questions, [x.explanation for x in questions], [0.5] * 3,
                               bertscore=bert)
    assert result["bleu"] == pytest.approx(100.0) and result["bertscore_human"] > 0.99
    assert 0.0 <= result["bertscore_answer"] <= 1.0 and result["seconds_per_question"] == 0.5


def test_nli_scorer_reads_the_entailment_label(tmp_path):
    import torch
    import transformers

    from aes_jax.interop import assets
    from aes_jax.interop.torch_ref.text_scorers import NliScorer

    tok = transformers.AutoTokenizer.from_pretrained(str(assets.minilm_dir()))
    config = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, num_labels=3,
                                     id2label={0: "CONTRADICTION", 1: "ENTAILMENT", 2: "NEUTRAL"},
                                     label2id={"CONTRADICTION": 0, "ENTAILMENT": 1, "NEUTRAL": 2})
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(tmp_path / "nli")
    tok.save_pretrained(tmp_path / "nli")
    scorer = NliScorer(tmp_path / "nli")
    assert scorer.entailment_index == 1
    premises, hypotheses = ["Water boils at 100 C.", "Cells divide."], ["It is hot.", "Cats."]
    got = scorer.entailment(premises, hypotheses)
    enc = tok(premises, hypotheses, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(**enc).logits.softmax(-1)[:, 1].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    config.id2label = {0: "yes", 1: "no", 2: "maybe"}
    transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / "not_nli")
    tok.save_pretrained(tmp_path / "not_nli")
    with pytest.raises(ValueError, match="no single 'entailment' label"):
        NliScorer(tmp_path / "not_nli")


def test_ppo_after_sft_is_rewarded_by_the_verifier_run(runs_dir, tmp_path):
    """PPO on the SFT run with the verifier run as reward: iteration 1 starts at the SFT
    model (KL ~ 0), and the loop's greedy held-out completions and their rewards are the
    Explainer's (the PPO run's adapter after the SFT one, on one base) and its verifier's."""
    c = rlearner_ppo.get_config("tiny")
    c.ppo.sft_run, c.reward.verifier_run = str(runs_dir / "sft"), str(runs_dir / "verifier")
    c.reward.untrained_verifier, c.reward.verifier_prompt_tokens = False, 0
    c.total_steps, c.eval_every, c.async_checkpointing = 1, 1, False
    workdir = tmp_path / "ppo"
    workdir.mkdir()
    (workdir / "config.json").write_text(c.to_json())
    task = tasks.build(c, workdir)
    last = rl_loop.train_rl(task, c, workdir)
    assert abs(last["kl"]) < 1e-3 and last["verifier_mean"] == pytest.approx(last["reward_mean"])
    samples = [json.loads(x) for x in (workdir / "eval_samples.jsonl").read_text().splitlines()]
    explainer = Explainer.from_runs({"ppo": workdir}, runs_dir / "verifier")
    questions = task.questions["eval"]
    got = explainer.explain(questions, "ppo", gen.SamplingConfig(max_new_tokens=8),
                            jax.random.key(0), batch_size=4)
    assert [e.text for e in got] == [s["completion"] for s in samples]
    np.testing.assert_allclose(explainer.score(questions, [e.text for e in got]),
                               [s["reward"] for s in samples], atol=1e-5)
