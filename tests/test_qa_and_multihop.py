"""StepER's inputs and metrics: the HotpotQA / 2WikiMultiHopQA / MuSiQue readers on small
fixture files in the published layouts (bad records counted with file:line, or raised),
and EM / F1 / Acc with the official HotpotQA normalisation, checked by hand."""

import json

import pytest

from aes_jax.data.multihop import read_multihop, write_hotpotqa
from aes_jax.data.read_report import DataFormatError
from aes_jax.eval import qa

HOTPOT = [
    {"_id": "q1", "question": "Where was the founder of Acme born?", "answer": "Lyon",
     "type": "bridge", "level": "hard",
     "context": [["Acme", ["Acme was founded by Ada Byrne.", " It makes anvils."]],
                 ["Ada Byrne", ["Ada Byrne was born in Lyon."]],
                 ["Paris", ["Paris is a city."]]],
     "supporting_facts": [["Acme", 0], ["Ada Byrne", 0]]},
    {"_id": "q2", "question": "Broken?", "answer": "x", "context": [["T", "not a list"]],
     "supporting_facts": []},
    {"_id": "q3", "question": "", "answer": "x", "context": [["T", ["s"]]],
     "supporting_facts": []},
    {"_id": "q1", "question": "Again?", "answer": "y", "context": [["T", ["s"]]],
     "supporting_facts": []},
]


def _write_json_list(path, records):
    # One record per line block, so line numbers are predictable: record i starts on its line.
    path.write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
    return path


def test_hotpotqa_reader_keeps_good_records_and_counts_bad_ones_with_lines(tmp_path):
    path = _write_json_list(tmp_path / "hotpot_dev.json", HOTPOT)
    got = read_multihop(path)
    assert got.stats.format == "hotpotqa" and got.stats.rows == 4
    (e,) = got.examples
    assert (e.id, e.answer, e.source) == ("q1", "Lyon", f"{path}:2")
    assert [p.title for p in e.passages if p.supporting] == ["Acme", "Ada Byrne"]
    assert e.passages[0].text == "Acme was founded by Ada Byrne. It makes anvils."
    assert e.extra == {"type": "bridge", "level": "hard"}
    assert got.stats.skipped == {"bad context": 1, "missing field": 1, "repeated id": 1}
    assert got.skip_examples[0].startswith(f"{path}:3: bad context: context[0]")
    assert any(x.startswith(f"{path}:5: repeated id") for x in got.skip_examples)
    assert "4 records, 1 read" in got.line()
    with pytest.raises(DataFormatError, match=r"hotpot_dev.json:3: bad context"):
        read_multihop(path, strict=True)
    # The writer's output reads back to the same examples.
    again = read_multihop(write_hotpotqa(tmp_path / "out.json", got.examples))
    assert [(x.id, x.question, x.answer) for x in again.examples] == [("q1", e.question, "Lyon")]
    assert [(p.title, p.supporting) for p in again.examples[0].passages] == [
        (p.title, p.supporting) for p in e.passages]


def test_2wiki_and_musique_layouts(tmp_path):
    wiki = dict(HOTPOT[0], _id="w1", type="compositional",
                evidences=[["Acme", "founded by", "Ada Byrne"]])
    got = read_multihop(_write_json_list(tmp_path / "2wiki.json", [wiki]))
    assert got.stats.format == "2wiki" and got.examples[0].extra["evidences"][0][2] == "Ada Byrne"
    rows = [{"id": "m1", "question": "Who?", "answer": "Ada", "answerable": True,
             "paragraphs": [{"idx": 0, "title": "A", "paragraph_text": " Ada wrote it. ",
                             "is_supporting": True},
                            {"idx": 1, "title": "B", "paragraph_text": "Noise."}]},
            {"id": "m2", "question": "?", "answer": "z", "answerable": False,
             "paragraphs": [{"idx": 0, "title": "A", "paragraph_text": "t"}]},
            {"id": "m3", "question": "?", "answer": "z", "paragraphs": [{"idx": 0}]}]
    path = tmp_path / "musique_ans_dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = read_multihop(path)
    assert got.stats.format == "musique" and [e.id for e in got.examples] == ["m1"]
    first, second = got.examples[0].passages
    assert (first.title, first.text, first.supporting) == ("A", "Ada wrote it.", True)
    assert not second.supporting
    assert got.stats.skipped == {"unanswerable": 1, "bad paragraphs": 1}
    assert got.skip_examples[1].startswith(f"{path}:3: bad paragraphs")
    path.write_text('{"id": "m1"}\nnot json\n')
    with pytest.raises(DataFormatError, match=r"musique_ans_dev.jsonl:2: not valid JSON"):
        read_multihop(path)


def test_qa_metrics_follow_the_official_normalisation():
    assert qa.normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert qa.normalize_answer("An apple, a day") == "apple day"
    assert qa.exact_match("the Lyon.", "Lyon") == 1.0 and qa.exact_match("Lyon city", "Lyon") == 0
    # pred "lyon city france" vs gold "city of lyon": overlap {lyon, city} -> P 2/3, R 2/3
    assert qa.f1("Lyon city France", "city of Lyon") == pytest.approx(2 / 3)
    assert qa.f1("yes it is", "yes") == 0.0 and qa.f1("Yes", "yes.") == 1.0
    assert qa.f1("no", "no answer") == 0.0 and qa.f1("nothing", "something") == 0.0
    assert qa.accuracy("She was born in Lyon, France.", "lyon") == 1.0
    assert qa.accuracy("Paris", "Lyon") == 0.0
    assert qa.extract_answer("Ada founded Acme. So the answer is: Lyon.\nmore") == "Lyon"
    assert qa.extract_answer("Lyon") == "Lyon"
    report = qa.qa_report(["Lyon", "the Paris", "Rome"], ["lyon", "Paris", "Milan"])
    assert report == {"em": pytest.approx(2 / 3), "f1": pytest.approx(2 / 3),
                      "acc": pytest.approx(2 / 3), "n": 3}


def test_demo_corpus_questions_need_every_hop_and_read_back(tmp_path):
    from aes_jax.data.multihop_demo import WorldSize, demo_examples, write_demo_corpus

    size = WorldSize(countries=5, cities=12, universities=6, people=40, companies=30,
                     products=30)
    examples, store = demo_examples(seed=3, size=size)
    again, _ = demo_examples(seed=3, size=size)
    assert [e.question for e in examples] == [e.question for e in again]  # seeded
    assert {e.extra["type"] for e in examples} == {"2-hop", "3-hop", "4-hop"}
    for e in examples:
        hops = e.extra["hops"]
        assert len(e.passages) == 10 and len({p.title for p in e.passages}) == 10
        assert [p.title for p in e.passages if p.supporting] == [
            p.title for p in e.passages if p.title in {t for t, _ in hops}]
        # Hop i's passage names the entity hop i+1 is about; the answer is in the last one.
        for (title, _), (next_title, _) in zip(hops, hops[1:]):
            assert next_title in store[title]
        assert e.answer in store[hops[-1][0]]
        assert e.answer not in e.question
    manifest = write_demo_corpus(tmp_path / "demo", seed=3, size=size)
    assert "project-written" in manifest["corpus"]
    read = read_multihop(tmp_path / "demo" / "test.json")
    assert read.stats.rows == manifest["questions"]["test"] == len(read.examples)
    assert sum(1 for _ in open(tmp_path / "demo" / "passages.jsonl")) == len(store)
