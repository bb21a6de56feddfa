"""Multiple-choice questions with rated explanations: RLearner's question bank.

One JSON object per line (the project's demo corpus, ``aes_jax/data/demo/``):

    {"id": "bio-001", "subject": "biology", "topic": "cell biology", "stem": "...",
     "options": {"A": "...", "B": "...", ...}, "answer": "C",
     "explanation": "the good explanation", "explanation_rating": 4.9,
     "candidates": [{"kind": "vague", "text": "...", "rating": 2.2, "raters": 7}, ...],
     "source": "..."}

`candidates` are explanations of mixed quality with their average student rating (0-5):
`complete`, `vague`, `wrong_reasoning` (the right option, argued wrongly) and
`wrong_option` (an explanation that supports another option). Every line is checked;
an error names the file, the line and the field.
"""

from __future__ import annotations

import dataclasses
import json
import random
import string
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

from aes_jax.data.read_report import DataFormatError, jsonl_objects

__all__ = ["CANDIDATE_KINDS", "Candidate", "Mcq", "read_mcqs", "write_mcqs", "demo_mcqs",
           "split_questions", "MAX_RATING"]

CANDIDATE_KINDS = ("complete", "vague", "wrong_reasoning", "wrong_option")
MAX_RATING = 5.0
DEMO_FILES = ("rlearner_mcqs_part1.jsonl", "rlearner_mcqs_part2.jsonl")


@dataclasses.dataclass(frozen=True)
class Candidate:
    kind: str
    text: str
    rating: float  # average student rating, 0-5
    raters: int = 0


@dataclasses.dataclass(frozen=True)
class Mcq:
    id: str
    stem: str
    options: dict[str, str]  # letter -> option text, letters A, B, C, ... in order
    answer: str  # the correct letter
    explanation: str = ""  # the good (human) explanation
    explanation_rating: float | None = None
    candidates: tuple[Candidate, ...] = ()
    subject: str = ""
    topic: str = ""
    source: str = ""

    @property
    def answer_text(self) -> str:
        return self.options[self.answer]

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["candidates"] = [dataclasses.asdict(c) for c in self.candidates]
        return out


def _rating(value: Any, where: str, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataFormatError(f"{where}: {field} must be a number 0-{MAX_RATING:g}, got "
                              f"{value!r}")
    if not 0.0 <= float(value) <= MAX_RATING:
        raise DataFormatError(f"{where}: {field}={value} is outside 0-{MAX_RATING:g}")
    return float(value)


def _text(obj: dict, key: str, where: str, required: bool = True) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str) or (required and not value.strip()):
        raise DataFormatError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value


def _options(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or len(value) < 2:
        raise DataFormatError(f"{where}: 'options' must be an object of at least two "
                              f"options {{\"A\": text, \"B\": text, ...}}, got {value!r}")
    letters = list(string.ascii_uppercase[:len(value)])
    if list(value) != letters:
        raise DataFormatError(f"{where}: option letters must be {', '.join(letters)} in "
                              f"order, got {', '.join(map(str, value))}")
    for letter, text in value.items():
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(f"{where}: option {letter} must be a non-empty string")
    return dict(value)


def _candidate(value: Any, where: str) -> Candidate:
    if not isinstance(value, dict):
        raise DataFormatError(f"{where}: a candidate must be an object, got {value!r}")
    kind = _text(value, "kind", where)
    if kind not in CANDIDATE_KINDS:
        raise DataFormatError(f"{where}: candidate kind {kind!r} is not one of "
                              f"{', '.join(CANDIDATE_KINDS)}")
    raters = value.get("raters", 0)
    if isinstance(raters, bool) or not isinstance(raters, int) or raters < 0:
        raise DataFormatError(f"{where}: 'raters' must be a count >= 0, got {raters!r}")
    return Candidate(kind=kind, text=_text(value, "text", where),
                     rating=_rating(value.get("rating"), where, "rating"), raters=raters)


def mcq_from_dict(obj: Any, where: str) -> Mcq:
    """One question from its JSON object; `where` (file:line) starts every error."""
    if not isinstance(obj, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    options = _options(obj.get("options"), where)
    answer = obj.get("answer")
    if answer not in options:
        raise DataFormatError(f"{where}: 'answer' must be one of the option letters "
                              f"{', '.join(options)}, got {answer!r}")
    rating = obj.get("explanation_rating")
    candidates = obj.get("candidates", [])
    if not isinstance(candidates, list):
        raise DataFormatError(f"{where}: 'candidates' must be a list")
    return Mcq(id=_text(obj, "id", where), stem=_text(obj, "stem", where), options=options,
               answer=answer, explanation=_text(obj, "explanation", where, required=False),
               explanation_rating=(None if rating is None
                                   else _rating(rating, where, "explanation_rating")),
               candidates=tuple(_candidate(c, f"{where} candidate {k}")
                                for k, c in enumerate(candidates)),
               subject=_text(obj, "subject", where, required=False),
               topic=_text(obj, "topic", where, required=False),
               source=_text(obj, "source", where, required=False))


def parse_mcq_lines(lines: Sequence[str], name: str) -> list[Mcq]:
    """Questions from JSONL text lines (blank lines skipped); ids must be unique."""
    questions, seen = [], {}
    for where, obj in jsonl_objects(lines, name):
        mcq = mcq_from_dict(obj, where)
        if mcq.id in seen:
            raise DataFormatError(f"{where}: question id {mcq.id!r} repeats {seen[mcq.id]}")
        seen[mcq.id] = where
        questions.append(mcq)
    return questions


def read_mcqs(path: str | Path) -> list[Mcq]:
    """A question-bank JSONL file, every line checked."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from e
    return parse_mcq_lines(text.splitlines(), str(path))


def write_mcqs(path: str | Path, questions: Sequence[Mcq]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for q in questions:
            f.write(json.dumps(q.to_json(), ensure_ascii=False) + "\n")
    return path


def demo_mcqs() -> list[Mcq]:
    """The project-written demo bank packaged with aes_jax (200 questions, 5 subjects)."""
    questions = []
    folder = resources.files("aes_jax.data") / "demo"
    for name in DEMO_FILES:
        text = (folder / name).read_text(encoding="utf-8")
        questions += parse_mcq_lines(text.splitlines(), f"aes_jax/data/demo/{name}")
    return questions


def split_questions(questions: Sequence[Mcq], test_fraction: float, seed: int
                    ) -> tuple[list[Mcq], list[Mcq]]:
    """(train, test): a seeded split of the questions, stratified by subject, order kept."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: expected a value in (0, 1)")
    by_subject: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(questions):
        by_subject[q.subject].append(i)
    test = set()
    rng = random.Random(seed)
    for subject in sorted(by_subject):
        members = by_subject[subject]
        rng.shuffle(members)
        test.update(members[:round(len(members) * test_fraction)])
    return ([q for i, q in enumerate(questions) if i not in test],
            [q for i, q in enumerate(questions) if i in test])
