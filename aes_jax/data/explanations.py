"""RLearner's explanation data in the original's JSON, for the generator and the verifier.

The original keeps every dataset as one JSON list of instruction records:

    [{"instruction": "...",
      "input": "Question: [stem] Option A: ... Option B: ... The correct answer is A",
      "output": "the explanation"}, ...]

* generator (SFT): output = a human explanation of the correct answer;
* verifier, the original's "way 2": input = the question, its options and an explanation
  (`... The correct answer is A Explanation: ...`), output = the explanation's average
  student rating, 0-5 with one decimal ("3.5").

The preprocessing filters (minimum rating, minimum explanation length in words) count what
they drop, so nothing disappears silently.
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from pathlib import Path
from typing import Any, Iterable, Sequence

from aes_jax.data.mcq import MAX_RATING, Mcq
from aes_jax.data.read_report import DataFormatError

__all__ = ["GENERATOR_INSTRUCTION", "VERIFIER_INSTRUCTION", "ExplanationRecord",
           "FilterCounts", "question_input", "generator_prompt", "verifier_prompt", "parse_question_input", "verifier_input",
           "read_explanation_json", "write_explanation_json", "sft_records",
           "verifier_records", "rating_text", "parse_rating", "word_count"]

GENERATOR_INSTRUCTION = ("You are a good student. Write a clear explanation of why the "
                         "correct answer to this multiple-choice question is right and why "
                         "the other options are wrong.")
VERIFIER_INSTRUCTION = ("Rate the quality of the explanation given for this multiple-choice "
                        f"question on a scale from 0 to {MAX_RATING:g}, as the average "
                        "rating students would give it. Answer with the number only.")
EXPLANATION_MARKER = " Explanation: "
_EXPLANATION_RE = re.compile(r"\s+Explanation:\s")
_ANSWER_RE = re.compile(r"\s*The correct answer is\s+([A-Z])\s*$")


@dataclasses.dataclass(frozen=True)
class ExplanationRecord:
    """One record of the original's JSON; keys beyond the three are kept in `extra`."""

    instruction: str
    input: str
    output: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"instruction": self.instruction, "input": self.input, "output": self.output,
                **self.extra}

    @property
    def prompt(self) -> str:
        """The user turn a model sees: the instruction, a blank line, the input."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


@dataclasses.dataclass
class FilterCounts:
    """What the preprocessing kept and why it dropped the rest (a record counts once, under
    the first filter it fails)."""

    seen: int = 0
    kept: int = 0
    no_explanation: int = 0
    below_min_rating: int = 0
    too_few_words: int = 0

    def line(self) -> str:
        return (f"{self.kept} of {self.seen} explanations kept ({self.below_min_rating} below "
                f"the minimum rating, {self.too_few_words} too short, {self.no_explanation} "
                "without an explanation)")


def question_input(stem: str, options: dict[str, str], answer: str) -> str:
    """The original's input text: question, options, then the correct letter."""
    shown = " ".join(f"Option {letter}: {text.strip()}" for letter, text in options.items())
    return f"Question: {stem.strip()} {shown} The correct answer is {answer}"


def parse_question_input(text: str, where: str = "input") -> tuple[str, dict[str, str], str]:
    """(stem, options, answer) back from `question_input` text (any whitespace between the
    parts); an explanation after it (the verifier's form) is cut off first."""
    text = _EXPLANATION_RE.split(text, maxsplit=1)[0]
    m = _ANSWER_RE.search(text)
    if not text.lstrip().startswith("Question:") or m is None:
        raise DataFormatError(f"{where}: expected 'Question: ... Option A: ... Option B: ... "
                              f"The correct answer is X', got {text[:80]!r}")
    body = text.lstrip()[len("Question:"):m.start()]
    parts = re.split(r"\s*\bOption ([A-Z]):\s*", body)
    stem, letters, texts = parts[0].strip(), parts[1::2], [t.strip() for t in parts[2::2]]
    expected = list(string.ascii_uppercase[:len(letters)])
    if len(letters) < 2 or letters != expected:
        raise DataFormatError(f"{where}: options must be A, B, ... in order (at least two), "
                              f"found {', '.join(letters) or 'none'}")
    options = dict(zip(letters, texts))
    answer = m.group(1)
    if answer not in options:
        raise DataFormatError(f"{where}: the correct answer {answer} is not an option")
    return stem, options, answer


def generator_prompt(q: Mcq, answer: str | None = None) -> str:
    """The generator's user turn for a question (what SFT trains on). `answer` states
    another letter as correct: a prompt for a fluent explanation of a wrong option."""
    return ExplanationRecord(GENERATOR_INSTRUCTION, question_input(
        q.stem, q.options, answer or q.answer), "").prompt


def verifier_prompt(q: Mcq, explanation: str) -> str:
    """The verifier's user turn for an explanation of a question."""
    return ExplanationRecord(VERIFIER_INSTRUCTION, verifier_input(
        question_input(q.stem, q.options, q.answer), explanation), "").prompt


def verifier_input(question: str, explanation: str) -> str:
    """The original's verifier input ("way 2"): the question input, then the explanation."""
    return f"{question}{EXPLANATION_MARKER}{explanation.strip()}"


def rating_text(rating: float) -> str:
    return f"{rating:.1f}"


def parse_rating(text: str, where: str = "output") -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise DataFormatError(f"{where}: expected a rating 0-{MAX_RATING:g}, got "
                              f"{text!r}") from None
    if not 0.0 <= value <= MAX_RATING:
        raise DataFormatError(f"{where}: rating {value} is outside 0-{MAX_RATING:g}")
    return value


def word_count(text: str) -> int:
    return len(text.split())


# ---------------------------------------------------------------------- the JSON files
def read_explanation_json(path: str | Path) -> list[ExplanationRecord]:
    """The original's JSON list; every record must hold string instruction/input/output."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column "
                              f"{e.colno})") from e
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from e
    if not isinstance(data, list):
        raise DataFormatError(f"{path}: expected a JSON list of records, got "
                              f"{type(data).__name__}")
    records = []
    for i, item in enumerate(data):
        where = f"{path} record {i}"
        if not isinstance(item, dict):
            raise DataFormatError(f"{where}: expected an object, got {type(item).__name__}")
        for key in ("instruction", "input", "output"):
            if not isinstance(item.get(key), str):
                raise DataFormatError(f"{where}: {key!r} must be a string, got "
                                      f"{item.get(key)!r}")
        extra = {k: v for k, v in item.items() if k not in ("instruction", "input", "output")}
        records.append(ExplanationRecord(item["instruction"], item["input"], item["output"],
                                         extra))
    return records


def write_explanation_json(path: str | Path, records: Iterable[ExplanationRecord]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_json() for r in records], ensure_ascii=False, indent=1)
                    + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------- from a question bank
def _explanations(q: Mcq, include_candidates: bool) -> list[tuple[str, float | None, str]]:
    """(text, rating, kind) of the question's explanations: the human one first."""
    out = [(q.explanation, q.explanation_rating, "human")]
    if include_candidates:
        out += [(c.text, c.rating, c.kind) for c in q.candidates]
    return out


def _passes(text: str, rating: float | None, counts: FilterCounts, min_rating: float | None,
            min_words: int) -> bool:
    counts.seen += 1
    if not text.strip():
        counts.no_explanation += 1
    elif min_rating is not None and (rating is None or rating < min_rating):
        counts.below_min_rating += 1
    elif word_count(text) < min_words:
        counts.too_few_words += 1
    else:
        counts.kept += 1
        return True
    return False


def sft_records(questions: Sequence[Mcq], *, min_rating: float | None = 3.0,
                min_words: int = 10, include_candidates: bool = False
                ) -> tuple[list[ExplanationRecord], FilterCounts]:
    """Generator records: each question's human explanation (and with `include_candidates`
    its rated candidates) that pass the filters. A missing rating fails `min_rating`."""
    counts, records = FilterCounts(), []
    for q in questions:
        prompt = question_input(q.stem, q.options, q.answer)
        for text, rating, kind in _explanations(q, include_candidates):
            if _passes(text, rating, counts, min_rating, min_words):
                records.append(ExplanationRecord(GENERATOR_INSTRUCTION, prompt, text.strip(),
                                                 {"id": q.id, "kind": kind}))
    return records, counts


def verifier_records(questions: Sequence[Mcq], *, min_words: int = 0
                     ) -> tuple[list[ExplanationRecord], FilterCounts]:
    """"Way 2" verifier records: every rated explanation of every question (the human one
    and all candidates, good and bad alike: the verifier must see both ends of the scale)."""
    counts, records = FilterCounts(), []
    for q in questions:
        prompt = question_input(q.stem, q.options, q.answer)
        for text, rating, kind in _explanations(q, include_candidates=True):
            if rating is None:
                counts.seen += 1
                counts.below_min_rating += 1
                continue
            if _passes(text, rating, counts, None, min_words):
                records.append(ExplanationRecord(VERIFIER_INSTRUCTION,
                                                 verifier_input(prompt, text),
                                                 rating_text(rating), {"id": q.id,
                                                                       "kind": kind}))
    return records, counts


# ---------------------------------------------------------------------- questions to explain
def questions_from_records(records: Sequence[ExplanationRecord], name: str) -> list[Mcq]:
    """Questions rebuilt from the original's generator JSON (input parsed back, output =
    the human explanation); ids from an `id` field, else `NAME:INDEX`."""
    out = []
    for i, r in enumerate(records):
        stem, options, answer = parse_question_input(r.input, f"{name} record {i}")
        qid = str(r.extra.get("id", f"{Path(name).stem}:{i}"))
        out.append(Mcq(id=qid, stem=stem, options=options, answer=answer, explanation=r.output))
    return out


def load_questions(path: str | Path | None, split: str = "test", test_fraction: float = 0.2,
                   seed: int = 0) -> list[Mcq]:
    """Questions from a question-bank JSONL (`data.mcq`), the original's JSON list, or (no
    path) the packaged demo bank's `split` ("train" | "test" | "all")."""
    from aes_jax.data.mcq import demo_mcqs, read_mcqs, split_questions

    if path:
        path = Path(path)
        if path.suffix == ".json":
            return questions_from_records(read_explanation_json(path), str(path))
        return read_mcqs(path)
    bank = demo_mcqs()
    if split == "all":
        return bank
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}: expected train, test or all")
    train, test = split_questions(bank, test_fraction, seed)
    return train if split == "train" else test
