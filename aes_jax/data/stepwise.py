"""StepER's stepwise records: one multi-hop question as the three step types a student
learns, each an (input, output) pair built from the question, the reasoning so far and
the passages retrieved at that step.

    init  question + the first passages             -> the first reasoning step
    exp   question + reasoning so far + new passages -> the next reasoning step
    agg   question + all reasoning + the last passages -> "So the answer is: ..."

Records are JSONL: {"id", "question", "answer", "steps": [{"type", "input", "output",
"passages": [passage indices into the store]}]} (+ "teacher"). The prompt builders here
are the ones training and stepwise inference use, so the student sees at inference what
it was trained on. `oracle_record` writes a trace from a demo question's known hop chain
with BM25 retrieval at every step (query: the question, then the last reasoning step),
and keeps it only if every hop's passage was retrieved at its step (as the paper keeps
only traces whose answer is right); the reason for each drop is counted.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Sequence

from aes_jax.data.multihop import MultihopExample
from aes_jax.data.read_report import DataFormatError, jsonl_objects
from aes_jax.retrieval.base import Retriever

STEP_TYPES = ("init", "exp", "agg")
ANSWER_PREFIX = "So the answer is: "
INSTRUCTION = "Answer the question by reasoning step by step over the passages."


@dataclasses.dataclass(frozen=True)
class Step:
    type: str
    input: str
    output: str
    passages: tuple[int, ...]

    def to_json(self) -> dict:
        return {"type": self.type, "input": self.input, "output": self.output,
                "passages": list(self.passages)}


@dataclasses.dataclass(frozen=True)
class StepwiseRecord:
    id: str
    question: str
    answer: str
    steps: tuple[Step, ...]
    teacher: str = ""

    def to_json(self) -> dict:
        return {"id": self.id, "question": self.question, "answer": self.answer,
                "steps": [s.to_json() for s in self.steps], "teacher": self.teacher}


def format_passages(passages: Sequence[str]) -> str:
    return "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))


def step_prompt(kind: str, question: str, reasoning: Sequence[str],
                passages: Sequence[str]) -> str:
    """The input of a step of type `kind` (the student's prompt, before the chat template)."""
    if kind not in STEP_TYPES:
        raise ValueError(f"step type {kind!r}: expected one of {', '.join(STEP_TYPES)}")
    parts = [INSTRUCTION, "", "Passages:", format_passages(passages), "", f"Question: {question}"]
    if kind != "init":
        parts.append("Reasoning so far: " + " ".join(reasoning))
    parts.append({"init": "Write the first reasoning step.",
                  "exp": "Write the next reasoning step.",
                  "agg": "Give the final answer."}[kind])
    return "\n".join(parts)


def answer_output(answer: str) -> str:
    return f"{ANSWER_PREFIX}{answer}"


def passage_text(title: str, text: str) -> str:
    return f"{title}: {text}"


@dataclasses.dataclass
class OracleCounts:
    questions: int = 0
    kept: int = 0
    hop_not_retrieved: int = 0  # a hop's passage was not in its step's top-k
    no_hops: int = 0  # a question without a known hop chain (not a demo question)

    def line(self) -> str:
        return (f"{self.kept} of {self.questions} questions kept ({self.hop_not_retrieved} "
                f"with a hop passage outside its step's top-k, {self.no_hops} without a hop "
                "chain)")


def oracle_record(example: MultihopExample, retriever: Retriever, titles: Sequence[str],
                  k: int, counts: OracleCounts) -> StepwiseRecord | None:
    """The trace of a demo question from its hop chain (`extra["hops"]`), or None (counted)."""
    counts.questions += 1
    hops = example.extra.get("hops")
    if not hops:
        counts.no_hops += 1
        return None
    steps, reasoning, query = [], [], example.question
    for j, (title, sentence) in enumerate(hops):
        found = [i for i, _ in retriever.search(query, k)]
        if title not in {titles[i] for i in found}:
            counts.hop_not_retrieved += 1
            return None
        texts = [retriever.passages[i] for i in found]
        kind = "init" if j == 0 else "exp"
        steps.append(Step(kind, step_prompt(kind, example.question, reasoning, texts),
                          sentence, tuple(found)))
        reasoning.append(sentence)
        query = sentence
    found = [i for i, _ in retriever.search(query, k)]
    steps.append(Step("agg", step_prompt("agg", example.question, reasoning,
                                         [retriever.passages[i] for i in found]),
                      answer_output(example.answer), tuple(found)))
    counts.kept += 1
    return StepwiseRecord(example.id, example.question, example.answer, tuple(steps), "oracle")


def single_step_record(example: MultihopExample, retriever: Retriever, k: int,
                       teacher: str = "oracle") -> StepwiseRecord:
    """Vanilla KD's record: one retrieval for the question, then the answer directly (one
    aggregation step, no reasoning)."""
    found = [i for i, _ in retriever.search(example.question, k)]
    step = Step("agg", step_prompt("agg", example.question, [],
                                   [retriever.passages[i] for i in found]),
                answer_output(example.answer), tuple(found))
    return StepwiseRecord(example.id, example.question, example.answer, (step,), teacher)


def write_records(path: str | Path, records: Iterable[StepwiseRecord]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r.to_json()) + "\n")
    return path


def read_records(path: str | Path) -> list[StepwiseRecord]:
    """Every line checked; an error names the file, the line and the field."""
    path = Path(path)
    out = []
    for where, obj in jsonl_objects(path.read_text().splitlines(), str(path)):
        for key in ("id", "question", "answer"):
            if not isinstance(obj.get(key), str):
                raise DataFormatError(f"{where}: {key!r} must be a string")
        steps = obj.get("steps")
        if not isinstance(steps, list) or not steps:
            raise DataFormatError(f"{where}: 'steps' must be a non-empty list")
        parsed = []
        for j, s in enumerate(steps):
            if not isinstance(s, dict) or s.get("type") not in STEP_TYPES:
                raise DataFormatError(f"{where}: steps[{j}].type must be one of "
                                      f"{', '.join(STEP_TYPES)}")
            if not isinstance(s.get("input"), str) or not isinstance(s.get("output"), str):
                raise DataFormatError(f"{where}: steps[{j}] needs 'input' and 'output' strings")
            passages = s.get("passages", [])
            if not isinstance(passages, list) or not all(isinstance(i, int) for i in passages):
                raise DataFormatError(f"{where}: steps[{j}].passages must be a list of "
                                      "passage indices")
            parsed.append(Step(s["type"], s["input"], s["output"], tuple(passages)))
        out.append(StepwiseRecord(obj["id"], obj["question"], obj["answer"], tuple(parsed),
                                  str(obj.get("teacher", ""))))
    return out
