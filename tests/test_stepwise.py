"""StepER's stepwise data and inference loop: oracle traces on the demo corpus (every hop's
passage retrieved at its step, drops counted), the records' JSONL round trip and errors,
the batched stepwise loop (early answers drop out, the retriever is re-queried with the
last step), the teacher filter, and one real generation pass on a tiny model."""

import json

import jax
import pytest

from aes_jax.data import stepwise as sw
from aes_jax.data.multihop_demo import WorldSize, demo_examples
from aes_jax.data.read_report import DataFormatError
from aes_jax.data.stepwise_dataset import BuildOptions
from aes_jax.eval import stepwise_builder
from aes_jax.eval.stepwise_inference import StepwiseAnswerer
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec
from aes_jax.retrieval.bm25 import BM25
from configs.common import TINY_LLAMA

SIZE = WorldSize(countries=5, cities=12, universities=6, people=40, companies=30, products=30)


@pytest.fixture(scope="module")
def world():
    examples, store = demo_examples(seed=1, size=SIZE)
    index = BM25([sw.passage_text(t, x) for t, x in store.items()])
    return examples, list(store), index


def test_oracle_traces_follow_the_hop_chain(world, tmp_path):
    examples, titles, index = world
    counts = sw.OracleCounts()
    records = [r for e in examples if (r := sw.oracle_record(e, index, titles, 4, counts))]
    assert counts.kept == len(records) > 0.5 * len(examples)  # a small, crowded world
    assert counts.kept + counts.hop_not_retrieved == counts.questions == len(examples)
    by_id = {e.id: e for e in examples}
    for r in records:
        hops = by_id[r.id].extra["hops"]
        assert [s.type for s in r.steps] == ["init"] + ["exp"] * (len(hops) - 1) + ["agg"]
        for step, (title, sentence) in zip(r.steps, hops):
            assert title in {titles[i] for i in step.passages} and step.output == sentence
        assert r.steps[-1].output == f"So the answer is: {r.answer}"
        assert r.steps[1].input == sw.step_prompt("exp", r.question, [hops[0][1]],
                                                  [index.passages[i] for i in r.steps[1].passages])
    single = sw.single_step_record(examples[0], index, 4)
    assert [s.type for s in single.steps] == ["agg"]
    assert single.steps[0].output == f"So the answer is: {examples[0].answer}"
    assert single.steps[0].passages == tuple(i for i, _ in index.search(examples[0].question, 4))
    path = sw.write_records(tmp_path / "train.jsonl", records)
    assert sw.read_records(path) == records
    path.write_text(path.read_text().splitlines()[0] + "\n" + json.dumps(
        {"id": "x", "question": "q", "answer": "a", "steps": [{"type": "think"}]}) + "\n")
    with pytest.raises(DataFormatError, match=r"train.jsonl:2: steps\[0\].type"):
        sw.read_records(path)


class ScriptedAnswerer(StepwiseAnswerer):
    """The loop with a scripted model: question i answers at its step script[i]."""

    def __init__(self, index, script):
        self.retriever, self.k, self.max_steps = index, 2, 4
        self.script, self.calls = script, []

    def _generate(self, prompts):
        self.calls.append(len(prompts))
        outs = []
        for p in prompts:
            question = p.split("Question: ")[1].split("\n")[0]
            i = int(question.split()[-1])
            so_far = (p.split("Reasoning so far: ")[1].split("\n")[0]
                      if "Reasoning so far: " in p else "")
            step = (len(so_far.split(". ")) if so_far else 0) + 1
            outs.append(f"So the answer is: A{i}" if step >= self.script[i]
                        else f"Step {step} of question {i}.")
        return outs, 0.01


def test_the_loop_drops_finished_questions_and_requeries(world):
    _, _, index = world
    answerer = ScriptedAnswerer(index, script={0: 1, 1: 9, 2: 2})
    traces = answerer.answer([f"question {i}" for i in range(3)])
    # init (3 questions; question 0 answers), exp (2; question 2 answers), exp (1), then
    # question 1, still reasoning after max_steps - 1 steps, gets the aggregation step.
    assert answerer.calls == [3, 2, 1, 1]
    assert [t.answer for t in traces] == ["A0", "Step 4 of question 1", "A2"]
    assert [s.type for s in traces[1].steps] == ["init", "exp", "exp", "agg"]
    assert traces[1].steps[1].passages == tuple(i for i, _ in index.search(
        traces[1].steps[0].output, 2))  # re-queried with the last reasoning step
    assert len(traces[0].steps) == 1
    single = answerer.answer(["question 0"], mode="single")[0]
    assert [s.type for s in single.steps] == ["agg"] and len(single.steps[0].passages) == 2
    none = answerer.answer(["question 0"], mode="none")[0]
    assert none.steps[0].passages == ()


def test_teacher_traces_are_kept_only_when_the_answer_is_right(tmp_path):
    class Teacher:
        def answer(self, questions):
            from aes_jax.eval.stepwise_inference import Trace
            return [Trace(q, [sw.Step("agg", "p", "So the answer is: x", (0,))],
                          answer="the Paris." if i == 0 else "nowhere")
                    for i, q in enumerate(questions)]

    corpus = tmp_path / "hotpot.json"
    corpus.write_text(json.dumps([
        {"_id": f"q{i}", "question": f"Q{i}?", "answer": "Paris",
         "context": [["Paris", ["Paris is in France."]], ["Rome", ["Rome is in Italy."]]],
         "supporting_facts": [["Paris", 0]]} for i in range(2)]))
    manifest = stepwise_builder.build_stepwise(
        [corpus], tmp_path / "out", BuildOptions(teacher="/teacher"),
        teacher=lambda options, index: Teacher())
    split = manifest["splits"]["hotpot"]
    assert (split["records"], split["dropped"], manifest["passages"]) == (
        1, {"wrong_answer": 1}, 2)
    (record,) = sw.read_records(tmp_path / "out" / "hotpot.jsonl")
    assert record.teacher == "/teacher" and manifest["teacher"] == "/teacher"


def test_a_tiny_model_runs_every_mode(world):
    _, _, index = world
    lm = CausalLM(CausalLMSpec(model="tiny", tiny_model=TINY_LLAMA, use_lora=False))
    trainable, _ = lm.init(jax.random.PRNGKey(0))
    answerer = StepwiseAnswerer(lm.base_cfg, trainable["params"], lm.tokenizer, index, k=2,
                                max_steps=3, max_new_tokens=4, max_prompt_tokens=256,
                                batch_size=2)
    for mode in ("stepwise", "single", "none"):
        traces = answerer.answer(["Where was Ada born?", "Who founded Acme?", "Why?"], mode)
        assert len(traces) == 3 and all(t.steps and t.seconds > 0 for t in traces)
        assert all(len(t.steps) <= 3 for t in traces)


def test_build_stepwise_command_on_the_demo_corpus(tmp_path):
    import subprocess
    import sys

    from tests.train_utils import REPO, env

    out = tmp_path / "steper"
    done = subprocess.run([sys.executable, "-m", "launch.build_stepwise", "--limit=20",
                           f"--output_dir={out}"], cwd=REPO, env=env(), capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"] == "oracle" and "project-written" in manifest["corpus"]
    for name in ("train", "dev", "test"):
        split = manifest["splits"][name]
        assert split["questions"] == 20
        assert split["records"] + split["dropped"]["hop_not_retrieved"] == 20
        assert len(sw.read_records(out / f"{name}.jsonl")) == split["records"]
    assert "train: " in done.stdout and (out / "bm25" / "bm25.json").is_file()
    assert len(BM25.load(out / "bm25").passages) == manifest["passages"]
