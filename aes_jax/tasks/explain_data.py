"""What RLearner's generator (SFT) and verifier tasks share: where the explanation records
come from, their filters, the split, and the tokenised rows.

Records come from a JSON file in the original's format (`data.train_file`, optional
`data.eval_file`), or, when none is given, from the training questions of the packaged
project-written demo bank (its held-out questions stay out of every training set, for the
generation benchmarks). Both write what they train on as the original's JSON into
WORKDIR/data/, with the filter counts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aes_jax.data import explanations as ex
from aes_jax.data.chat_rows import CutCounts, encode_completion, encode_prompt
from aes_jax.data.mcq import Mcq, demo_mcqs, split_questions

log = logging.getLogger(__name__)

RecordBuilder = Callable[[list[Mcq]], tuple[list[ex.ExplanationRecord], ex.FilterCounts]]


@dataclasses.dataclass(frozen=True)
class ExplanationData:
    """config.data of the SFT and verifier tasks, validated once."""

    train_file: str = ""  # the original's JSON list; "" = the demo bank's training questions
    eval_file: str = ""  # "" = hold out eval_fraction of the questions (seeded)
    eval_fraction: float = 0.1
    demo_questions: int = 0  # demo bank: the first N training questions (0 = all)
    demo_test_fraction: float = 0.2  # demo bank: questions never trained on
    split_seed: int = 0
    min_rating: float = 3.0  # SFT on the bank: the original's minimum average rating
    min_words: int = 10  # the original's minimum explanation length (words)
    include_candidates: bool = False  # SFT on the bank: rated candidates too, not only gold
    max_prompt_tokens: int = 384
    max_completion_tokens: int = 160
    chat_template: bool = True

    def __post_init__(self):
        if not self.eval_file and not 0.0 < self.eval_fraction < 1.0:
            raise ValueError(f"config.data.eval_fraction={self.eval_fraction}: expected (0, 1)")
        if self.max_prompt_tokens < 1 or self.max_completion_tokens < 1:
            raise ValueError("config.data.max_prompt_tokens and max_completion_tokens must "
                             "be >= 1")

    @classmethod
    def from_config(cls, data: Any) -> "ExplanationData":
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    def demo_questions_for_training(self) -> list[Mcq]:
        train, _ = split_questions(demo_mcqs(), self.demo_test_fraction, self.split_seed)
        return train[:self.demo_questions] if self.demo_questions else train


def question_key(record: ex.ExplanationRecord) -> str:
    """The question a record is about: its input before any explanation."""
    return record.input.split(ex.EXPLANATION_MARKER, 1)[0]


def _filtered_file(path: str, min_words: int) -> tuple[list[ex.ExplanationRecord],
                                                       ex.FilterCounts]:
    counts, kept = ex.FilterCounts(), []
    for r in ex.read_explanation_json(path):
        counts.seen += 1
        if not r.output.strip():
            counts.no_explanation += 1
        elif ex.word_count(r.output) < min_words:
            counts.too_few_words += 1
        else:
            counts.kept += 1
            kept.append(r)
    return kept, counts


def load_records(d: ExplanationData, from_bank: RecordBuilder, *, min_words: int,
                 out_dir: Path, name: str) -> dict[str, list[ex.ExplanationRecord]]:
    """{"train", "eval"} records; written to out_dir/{name}_{split}.json with the counts."""
    if d.train_file:
        records, counts = _filtered_file(d.train_file, min_words)
        what = d.train_file
    else:
        records, counts = from_bank(d.demo_questions_for_training())
        what = "the packaged demo bank (project-written)"
    if d.eval_file:
        train, evals = records, _filtered_file(d.eval_file, min_words)[0]
    else:  # whole questions go to eval, so no question is in both splits
        questions = sorted({question_key(r) for r in records})
        order = np.random.default_rng(d.split_seed).permutation(len(questions))
        held = {questions[i] for i in order[:max(1, round(len(questions) * d.eval_fraction))]}
        train = [r for r in records if question_key(r) not in held]
        evals = [r for r in records if question_key(r) in held]
    if not train or not evals:
        raise ValueError(f"{what}: {counts.line()}; that leaves {len(train)} train / "
                         f"{len(evals)} eval records")
    log.info("%s records from %s: %s -> %d train / %d eval", name, what, counts.line(),
             len(train), len(evals))
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("eval", evals)):
        ex.write_explanation_json(out_dir / f"{name}_{split}.json", rows)
    (out_dir / f"{name}_filters.json").write_text(json.dumps(
        {"source": what, **dataclasses.asdict(counts)}, indent=1) + "\n")
    return {"train": train, "eval": evals}


def encode_record(record: ex.ExplanationRecord, tokenizer: Any, d: ExplanationData,
                  counts: CutCounts) -> tuple[np.ndarray, np.ndarray]:
    """(prompt ids, completion ids) of a record, cut to the configured lengths (counted)."""
    prompt, prompt_cut = encode_prompt(record.prompt, tokenizer, d.max_prompt_tokens,
                                       d.chat_template)
    completion, completion_cut = encode_completion(record.output, tokenizer,
                                                   d.max_completion_tokens)
    counts.add(prompt_cut, completion_cut)
    return prompt, completion
