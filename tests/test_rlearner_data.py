"""RLearner's data: the question bank reader, the original's explanation JSON (generator and
"way 2" verifier records, counted filters), preference pairs and their token rows."""

import json

import numpy as np
import pytest

from aes_jax.data import explanations as ex
from aes_jax.data import mcq, preferences
from aes_jax.data.chat_rows import CutCounts, completion_rows
from aes_jax.data.preference_encoding import encode_pair
from aes_jax.data.read_report import DataFormatError
from aes_jax.data.tokenizers import ByteTokenizer

QUESTION = {"id": "q1", "subject": "chemistry", "topic": "acids", "stem": "What is the pH of "
            "pure water at 25 C?", "options": {"A": "0", "B": "7", "C": "14"}, "answer": "B",
            "explanation": "Pure water ionises into equal amounts of H+ and OH-, 1e-7 mol/L "
                           "each, so pH = -log10(1e-7) = 7.",
            "explanation_rating": 4.5,
            "candidates": [{"kind": "vague", "text": "It is neutral.", "rating": 2.0,
                            "raters": 3},
                           {"kind": "wrong_option", "text": "Water has no acid in it at all "
                            "so its pH is zero, which makes the answer A.", "rating": 0.8,
                            "raters": 5}],
            "source": "test"}


def write_lines(path, objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_demo_bank_is_labelled_and_complete():
    bank = mcq.demo_mcqs()
    assert len(bank) == 200 and len({q.id for q in bank}) == 200
    counts = {s: sum(q.subject == s for q in bank) for s in {q.subject for q in bank}}
    assert counts == {"biology": 50, "chemistry": 50, "law": 35, "medicine": 35,
                      "general science": 30}
    for q in bank:
        assert q.answer in q.options and q.explanation and q.explanation_rating is not None
        assert {c.kind for c in q.candidates} == set(mcq.CANDIDATE_KINDS)
        assert "project-written" in q.source
    train, test = mcq.split_questions(bank, 0.2, seed=0)
    assert len(test) == 40 and not {q.id for q in train} & {q.id for q in test}
    assert mcq.split_questions(bank, 0.2, seed=0)[1] == test  # seeded


def test_bank_round_trip(tmp_path):
    bank = mcq.demo_mcqs()[:5]
    assert mcq.read_mcqs(mcq.write_mcqs(tmp_path / "bank.jsonl", bank)) == bank


@pytest.mark.parametrize("change, message", [
    ({"answer": "D"}, "one of the option letters A, B, C"),
    ({"options": {"A": "x", "C": "y"}}, "must be A, B in order"),
    ({"candidates": [{"kind": "great", "text": "t", "rating": 1}]}, "candidate kind 'great'"),
    ({"candidates": [{"kind": "vague", "text": "t", "rating": 7}]}, "outside 0-5"),
    ({"stem": ""}, "'stem' must be a non-empty string"),
])
def test_bank_errors_name_the_line_and_field(tmp_path, change, message):
    path = write_lines(tmp_path / "bank.jsonl", [QUESTION, {**QUESTION, "id": "q2", **change}])
    with pytest.raises(DataFormatError, match=f"bank.jsonl:2.*{message}"):
        mcq.read_mcqs(path)


def test_bank_refuses_repeated_ids_and_bad_json(tmp_path):
    with pytest.raises(DataFormatError, match="bank.jsonl:2: question id 'q1' repeats .*bank.jsonl:1"):
        mcq.read_mcqs(write_lines(tmp_path / "bank.jsonl", [QUESTION, QUESTION]))
    (tmp_path / "bad.jsonl").write_text(json.dumps(QUESTION) + "\n\n{oops\n")
    with pytest.raises(DataFormatError, match="bad.jsonl:3: not valid JSON"):
        mcq.read_mcqs(tmp_path / "bad.jsonl")


def test_question_input_is_the_originals_form_and_parses_back():
    q = mcq.mcq_from_dict(QUESTION, "q")
    text = ex.question_input(q.stem, q.options, q.answer)
    assert text == ("Question: What is the pH of pure water at 25 C? Option A: 0 Option B: 7 "
                    "Option C: 14 The correct answer is B")
    assert ex.parse_question_input(text) == (q.stem, q.options, "B")
    verifier = ex.verifier_input(text, q.explanation)
    assert ex.parse_question_input(verifier) == (q.stem, q.options, "B")
    for q in mcq.demo_mcqs():
        assert ex.parse_question_input(ex.question_input(q.stem, q.options, q.answer)) == \
            (q.stem, q.options, q.answer), q.id
    with pytest.raises(DataFormatError, match="record 3: expected 'Question: "):
        ex.parse_question_input("What is 2 + 2? A: 4", "record 3")


def test_explanation_json_round_trip_and_errors(tmp_path):
    records, _ = ex.sft_records([mcq.mcq_from_dict(QUESTION, "q")], min_rating=None,
                                min_words=0, include_candidates=True)
    path = ex.write_explanation_json(tmp_path / "train.json", records)
    assert ex.read_explanation_json(path) == records
    assert json.loads(path.read_text())[0]["output"] == QUESTION["explanation"]
    path.write_text(json.dumps([{"instruction": "i", "input": "x", "output": "y"},
                                {"instruction": "i", "input": 3, "output": "y"}]))
    with pytest.raises(DataFormatError, match=r"train.json record 1: 'input' must be a string"):
        ex.read_explanation_json(path)
    path.write_text(json.dumps({"instruction": "i"}))
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        ex.read_explanation_json(path)


def test_filters_count_what_they_drop():
    q = mcq.mcq_from_dict(QUESTION, "q")
    records, counts = ex.sft_records([q], min_rating=3.0, min_words=10, include_candidates=True)
    assert [r.extra["kind"] for r in records] == ["human"]
    assert (counts.seen, counts.kept, counts.below_min_rating, counts.too_few_words) == \
        (3, 1, 2, 0)
    _, counts = ex.sft_records([q], min_rating=0.0, min_words=10, include_candidates=True)
    assert (counts.kept, counts.too_few_words) == (2, 1)  # "It is neutral." is 3 words
    verifier, counts = ex.verifier_records([q])
    assert [r.output for r in verifier] == ["4.5", "2.0", "0.8"] and counts.kept == 3
    assert verifier[1].input.endswith("The correct answer is B Explanation: It is neutral.")
    assert ex.parse_rating(verifier[2].output) == 0.8
    with pytest.raises(DataFormatError, match="outside 0-5"):
        ex.parse_rating("5.5")


def test_preference_pairs_best_against_worst_and_gap_rule(tmp_path):
    c = preferences.ScoredCandidate
    pool = [c("ok", 3.0, "sft:t=0.3"), c("best", 4.2, "gold"), c("worst", 1.0, "sft:t=1.3")]
    pair = preferences.choose_pair("p", pool, 0.3)
    assert (pair.chosen, pair.rejected, pair.gap) == ("best", "worst", pytest.approx(3.2))
    assert pair.source == "gold > sft:t=1.3"
    assert preferences.choose_pair("p", pool[:1] + [c("close", 3.2, "x")], 0.3) is None
    hard = preferences.choose_pair("p", pool, 0.3, hard_negative=c("wrong", 2.0, "hard"))
    assert hard.rejected == "wrong"
    pairs, stats = preferences.pairs_from_ratings(mcq.demo_mcqs()[:20], min_score_gap=0.3)
    summary = stats.to_json()
    assert summary["questions"] == 20 and summary["pairs"] + summary["dropped_small_gap"] == 20
    assert sum(summary["gap_histogram"].values()) == summary["pairs"]
    path = preferences.write_preferences(tmp_path / "pairs.jsonl", pairs)
    assert preferences.read_preferences(path) == pairs
    first = json.loads(path.read_text().splitlines()[0])
    assert set(first) >= {"prompt", "chosen", "rejected", "chosen_score", "rejected_score",
                          "source"}
    path.write_text(json.dumps({"prompt": "p", "chosen": "", "rejected": "r"}) + "\n")
    with pytest.raises(DataFormatError, match="pairs.jsonl:1: 'chosen' must be"):
        preferences.read_preferences(path)


def test_pair_rows_mask_only_the_completion_and_keep_the_prompt_end():
    rows = completion_rows([5, 6, 7], [8, 9], 6)
    np.testing.assert_array_equal(rows["input_ids"], [5, 6, 7, 8, 0, 0])
    np.testing.assert_array_equal(rows["targets"], [6, 7, 8, 9, 0, 0])
    np.testing.assert_array_equal(rows["loss_mask"], [0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(rows["attention_mask"], [1, 1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match="length=3"):
        completion_rows([5, 6, 7], [8, 9], 3)
    tok = ByteTokenizer()
    pair = preferences.PreferencePair("a long prompt", "chosen!", "no", 4.0, 1.0)
    counts = CutCounts()
    enc = encode_pair(pair, tok, max_prompt_tokens=5, max_completion_tokens=4,
                      chat_template=False, counts=counts)
    assert tok.decode(enc.prompt_ids.tolist()) == "rompt"  # the end of the prompt
    assert enc.chosen_ids.tolist() == tok.encode("chos")  # its start, without the end id
    assert enc.rejected_ids.tolist() == tok.encode("no") + [tok.end_of_answer_id]
    assert (counts.examples, counts.prompts_cut, counts.completions_cut) == (1, 1, 1)
