"""Instruction data for the LLaMA-AES multi-trait scorer: prompts, answers, masks, JSONL.

The model reads an instruction (what to score, each trait's digit range and rubric line,
the answer format, the essay) and answers with one digit per trait on the first line,
optionally followed by feedback::

    4 3 4 3 4 3

    Essay Feedback: ...

Every trait score travels as ONE digit token, so a number-token loss can read the model's
distribution over the ten digit tokens at exactly that position. :class:`ScoreCodec` maps a
trait's score grid onto digits; :func:`encode_example` tokenises an example and finds the
digit tokens (refusing a tokenizer that merges a digit with anything); :func:`training_arrays`
gives the shifted causal-LM rows with the loss masks:

* ``loss_mask``: every answer token and the final end-of-answer token (cross-entropy);
* ``digit_mask`` / ``digit_value`` / ``trait_index``: the score-digit targets (NTL);
* ``feedback_mask``: the feedback tokens after ``Essay Feedback:`` (EMO).

Prompt tokens are in no mask. A dataset is a directory of ``{train,dev,test}.jsonl`` in the
PyTorch original's layout (one ``{"instruction", "output"}`` object per line, plus
``essay_id``/``traits``/``scores``/``source``) and ``manifest.json`` (format
``aes_jax.mtl/1``) naming the traits and their codecs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aes_jax.data import asap, asap_demo, ell

__all__ = [
    "FEEDBACK_MARKER",
    "ESSAY_HEADER",
    "MTL_VERSION",
    "DEFAULT_RUBRIC",
    "ELL_CODEC",
    "ScoreCodec",
    "MtlExample",
    "Encoded",
    "read_jsonl",
    "read_jsonl_counted",
    "write_jsonl",
    "format_output",
    "parse_scores",
    "build_instruction",
    "essay_from_instruction",
    "rubric_feedback",
    "asap_traits_and_codecs",
    "ell_traits_and_codecs",
    "examples_from_asap",
    "examples_from_ell",
    "check_example",
    "encode_example",
    "training_arrays",
    "mtl_manifest",
    "refuse_existing",
    "write_mtl_dir",
    "load_mtl_dir",
    "demo_ell_rows",
    "write_demo_ell_csv",
]

log = logging.getLogger(__name__)

FEEDBACK_MARKER = "Essay Feedback:"
ESSAY_HEADER = "\n\nEssay:\n"  # the essay is everything after it: the instruction's tail
MTL_VERSION = "aes_jax.mtl/1"
SPLITS = ("train", "dev", "test")
_GRID_TOL = 1e-6

# ----------------------------------------------------------------------------- codec


@dataclasses.dataclass(frozen=True)
class ScoreCodec:
    """A trait's score grid ``lo, lo + step, ..., hi`` <-> one digit token each.

    Integer grids inside 0-9 keep the score as its own digit (ASAP++ traits 1-6, 0-3,
    0-4), so answers read naturally. Other grids number their n values: digits 1..n when
    n <= 9 (ELLIPSE 1.0-5.0 in halves -> 1..9, i.e. 2s - 1), 0..9 when n == 10. A grid of
    more than ten values cannot be one digit token and is refused at construction.
    """

    lo: float
    hi: float
    step: float = 1.0

    def __post_init__(self) -> None:
        lo, hi, step = float(self.lo), float(self.hi), float(self.step)
        if not all(math.isfinite(v) for v in (lo, hi, step)) or step <= 0 or hi < lo:
            raise ValueError(f"ScoreCodec({self.lo}, {self.hi}, step={self.step}): need "
                             "finite lo <= hi and step > 0")
        steps = (hi - lo) / step
        if abs(steps - round(steps)) > _GRID_TOL:
            raise ValueError(f"ScoreCodec({self.lo}, {self.hi}, step={self.step}): hi - lo "
                             "is not a whole number of steps")
        n = int(round(steps)) + 1
        if n > 10 and not self._identity(lo, hi, step):
            raise ValueError(
                f"score range {self.lo:g}-{self.hi:g} in steps of {self.step:g} has {n} "
                "values and does not fit one digit token (at most 10 values); pass a "
                "coarser step, or rescale the scores first")

    @staticmethod
    def _identity(lo: float, hi: float, step: float) -> bool:
        return lo.is_integer() and hi.is_integer() and step == 1.0 and 0 <= lo and hi <= 9

    @property
    def n(self) -> int:
        """How many scores the grid holds."""
        return int(round((float(self.hi) - float(self.lo)) / float(self.step))) + 1

    @property
    def identity(self) -> bool:
        """True when the digit is the score itself."""
        return self._identity(float(self.lo), float(self.hi), float(self.step))

    @property
    def _offset(self) -> int:
        """digit = index + offset."""
        if self.identity:
            return int(self.lo)
        return 1 if self.n <= 9 else 0

    @property
    def digit_range(self) -> tuple[int, int]:
        """Inclusive (lowest, highest) digit."""
        return self._offset, self._offset + self.n - 1

    @property
    def values(self) -> tuple[float, ...]:
        """Every score on the grid, lowest first."""
        return tuple(self._value(i) for i in range(self.n))

    def _value(self, index: int) -> float:
        # Rounded so that e.g. 0.1 * 3 comes back as 0.3: decode gives the grid's literals.
        return float(round(float(self.lo) + index * float(self.step), 9))

    def encode(self, score: float) -> int:
        """The digit of ``score``, which must lie on the grid (within a tolerance)."""
        try:
            x = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"score {score!r} is not a number") from None
        index = (x - float(self.lo)) / float(self.step)
        i = int(round(index)) if math.isfinite(index) else -1
        if not 0 <= i < self.n or abs(index - i) > _GRID_TOL:
            raise ValueError(f"score {score!r} is not on the grid {self.lo:g}-{self.hi:g} "
                             f"in steps of {self.step:g}")
        return i + self._offset

    def decode(self, digit: int) -> float:
        """The score a digit stands for; a digit outside :attr:`digit_range` raises."""
        lo_d, hi_d = self.digit_range
        if isinstance(digit, bool) or int(digit) != digit or not lo_d <= int(digit) <= hi_d:
            raise ValueError(f"digit {digit!r} is outside this codec's digits {lo_d}-{hi_d}")
        return self._value(int(digit) - self._offset)

    def to_scores(self, digits: Any) -> np.ndarray:
        """Continuous inverse of the codec: digits, possibly fractional (expected values,
        votes as floats), -> the original scale. Linear, so means survive the mapping."""
        d0 = self.digit_range[0]
        return self.decode(d0) + (np.asarray(digits, np.float64) - d0) * float(self.step)

    def to_dict(self) -> dict[str, Any]:
        lo_d, hi_d = self.digit_range
        return {"lo": float(self.lo), "hi": float(self.hi), "step": float(self.step),
                "digits": [lo_d, hi_d]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScoreCodec:
        """Inverse of :meth:`to_dict` (``digits`` is informative and checked if present)."""
        try:
            codec = cls(float(d["lo"]), float(d["hi"]), float(d.get("step", 1.0)))
        except (KeyError, TypeError) as e:
            raise ValueError(f"codec {dict(d)!r}: expected keys lo, hi, step ({e})") from None
        if "digits" in d and list(d["digits"]) != list(codec.digit_range):
            raise ValueError(f"codec {dict(d)!r}: digits {d['digits']} disagree with the "
                             f"grid's {list(codec.digit_range)}")
        return codec

    def describe(self) -> str:
        """Short human text of the digit range (and, if not the score itself, its mapping)."""
        lo_d, hi_d = self.digit_range
        if self.identity:
            return f"{lo_d}-{hi_d}"
        return (f"{lo_d}-{hi_d} stand for scores {_fmt(self, self.values[0])}-"
                f"{_fmt(self, self.values[-1])} in steps of {float(self.step):g}")


def _fmt(codec: ScoreCodec, value: float) -> str:
    """A score as a reader expects it: ``4`` on integer grids, ``3.5``/``3.0`` otherwise."""
    if codec.identity or (float(codec.step).is_integer() and float(codec.lo).is_integer()):
        return str(int(round(value)))
    return f"{value:.1f}" if abs(value * 10 - round(value * 10)) < 1e-9 else f"{value:g}"


ELL_CODEC = ScoreCodec(ell.ELL_RANGE[0], ell.ELL_RANGE[1], ell.ELL_STEP)

# ----------------------------------------------------------------------------- examples


@dataclasses.dataclass
class MtlExample:
    instruction: str
    output: str
    essay_id: str = ""
    traits: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()   # original scale, in ``traits`` order
    source: str = ""                 # file:line the essay (or the JSONL row) came from

    @property
    def essay(self) -> str | None:
        """The essay inside the instruction (see :func:`essay_from_instruction`), for
        ``encode_example(..., essay=example.essay)``; None if it was not built here."""
        return essay_from_instruction(self.instruction)

    def name(self) -> str:
        """How error messages refer to this example."""
        parts = [f"essay {self.essay_id}" if self.essay_id else "",
                 f"({self.source})" if self.source else ""]
        named = " ".join(p for p in parts if p)
        return named or f"example {self.instruction[:40]!r}..."


def _example_from_json(obj: Any, where: str) -> MtlExample:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object with \"instruction\" and \"output\", "
                         f"got {type(obj).__name__}")
    for key in ("instruction", "output"):
        if not isinstance(obj.get(key), str):
            raise ValueError(f"{where}: expected a string \"{key}\" field, got "
                             f"{obj.get(key)!r:.60}")
    instruction = obj["instruction"]
    extra = obj.get("input")
    if isinstance(extra, str) and extra.strip():
        # Alpaca-style rows put the essay in "input"; it belongs after the instruction.
        instruction = f"{instruction}\n\n{extra}"
    traits = obj.get("traits", [])
    scores = obj.get("scores", [])
    if not isinstance(traits, list) or not all(isinstance(t, str) for t in traits):
        raise ValueError(f"{where}: \"traits\" must be a list of strings, got {traits!r:.80}")
    if not isinstance(scores, list) or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
        raise ValueError(f"{where}: \"scores\" must be a list of numbers, got {scores!r:.80}")
    if traits and scores and len(traits) != len(scores):
        raise ValueError(f"{where}: {len(traits)} traits but {len(scores)} scores")
    essay_id = obj.get("essay_id", "")
    if not isinstance(essay_id, (str, int)) or isinstance(essay_id, bool):
        raise ValueError(f"{where}: \"essay_id\" must be a string or an integer")
    source = obj.get("source", "")
    return MtlExample(instruction=instruction, output=obj["output"], essay_id=str(essay_id),
                      traits=tuple(traits), scores=tuple(float(s) for s in scores),
                      source=str(source) if source else where)


def read_jsonl_counted(path: str | os.PathLike) -> tuple[list[MtlExample], int]:
    """(examples, blank lines skipped) of a JSONL file; a bad line raises naming file:line.

    An example without a ``source`` key gets the JSONL ``file:line`` as its source, so
    later errors can point back at the row.
    """
    path = Path(path)
    examples: list[MtlExample] = []
    blank = 0
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                blank += 1
                continue
            where = f"{path}:{line_no}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); "
                                 "expected one object with \"instruction\" and \"output\" "
                                 "per line") from None
            examples.append(_example_from_json(obj, where))
    return examples, blank


def read_jsonl(path: str | os.PathLike) -> list[MtlExample]:
    """Examples of a JSONL file (see :func:`read_jsonl_counted`); blank lines are logged."""
    examples, blank = read_jsonl_counted(path)
    if blank:
        log.info("%s: skipped %d blank line(s)", path, blank)
    return examples


def _example_to_json(example: MtlExample) -> dict[str, Any]:
    obj: dict[str, Any] = {"instruction": example.instruction, "output": example.output}
    if example.essay_id:
        obj["essay_id"] = example.essay_id
    if example.traits:
        obj["traits"] = list(example.traits)
    if example.scores:
        obj["scores"] = [float(s) for s in example.scores]
    if example.source:
        obj["source"] = example.source
    return obj


def write_jsonl(path: str | os.PathLike, examples: Sequence[MtlExample]) -> int:
    """Write one JSON object per line (written to a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for example in examples:
            f.write(json.dumps(_example_to_json(example), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return len(examples)


# ----------------------------------------------------------------------------- answers


def format_output(digits: Sequence[int], feedback: str | None = None) -> str:
    """``"4 3 4"``, or ``"4 3 4\\n\\nEssay Feedback: <feedback>"`` when feedback is given."""
    if not digits:
        raise ValueError("format_output: no digits")
    for d in digits:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d <= 9:
            raise ValueError(f"format_output: {d!r} is not a digit 0-9")
    line = " ".join(str(int(d)) for d in digits)
    if feedback is None or not feedback.strip():
        return line
    return f"{line}\n\n{FEEDBACK_MARKER} {feedback.strip()}"


def parse_scores(text: str, num_traits: int) -> tuple[list[int | None], str]:
    """Read the trait digits from generated text: ``(digits, status)``.

    Only the first non-empty line counts; its whitespace-separated tokens are the traits
    in order, and each must be exactly one digit character. ``digits`` always has
    ``num_traits`` entries, None where a trait is missing or not a digit. ``status`` is
    ``"ok"`` (every trait has a digit; tokens past ``num_traits`` are ignored),
    ``"partial"`` (some do) or ``"failed"`` (none does, or no non-empty line). Nothing is
    guessed here: the caller decides the fallback for a None (e.g. the training mean).
    """
    first = next((line for line in text.splitlines() if line.strip()), "")
    tokens = first.split()
    digits: list[int | None] = []
    for k in range(num_traits):
        token = tokens[k] if k < len(tokens) else ""
        digits.append(int(token) if len(token) == 1 and token in "0123456789" else None)
    found = sum(d is not None for d in digits)
    status = "ok" if found == num_traits else ("failed" if found == 0 else "partial")
    return digits, status


# ----------------------------------------------------------------------------- instructions

# One line per trait, in the project's own words: what a rater looks at.
DEFAULT_RUBRIC: dict[str, str] = {
    # ELLIPSE (English language learners)
    "cohesion": "how well the text hangs together: paragraphs, transitions and a clear "
                "line of ideas from start to end",
    "syntax": "range and control of sentence structures, from simple to complex",
    "vocabulary": "range and precision of the words chosen for the topic",
    "phraseology": "natural use of phrases, collocations and idioms",
    "grammar": "accuracy of verb forms, agreement, word forms and word order",
    "conventions": "spelling, capitalisation and punctuation",
    # ASAP++
    "Content": "relevance, depth and support of the ideas",
    "Organization": "overall structure, paragraphing and logical order",
    "Word Choice": "precise, varied words that fit purpose and audience",
    "Sentence Fluency": "flow, rhythm and variety of the sentences",
    "Conventions": "spelling, punctuation, capitalisation and grammar",
    "Prompt Adherence": "how closely the response answers the prompt",
    "Language": "control of grammar, vocabulary and mechanics",
    "Narrativity": "coherence and engagement of the narration or explanation",
}


def _rubric_line(trait: str, rubric: Mapping[str, str]) -> str:
    if trait in rubric:
        return rubric[trait]
    folded = {k.casefold(): v for k, v in rubric.items()}
    return folded.get(trait.casefold(), "")


def build_instruction(essay: str, traits: Sequence[str], codecs: Sequence[ScoreCodec], *,
                      prompt_text: str | None = None, rubric: Mapping[str, str] | None = None,
                      with_feedback: bool = False) -> str:
    """The rubric-aware instruction: traits with digit ranges, the answer format, the essay.

    ``rubric=None`` uses :data:`DEFAULT_RUBRIC` (pass ``{}`` for none). The essay always
    comes last, after :data:`ESSAY_HEADER`, so it can be found (and cut) again.
    """
    if len(traits) != len(codecs) or not traits:
        raise ValueError(f"build_instruction: {len(traits)} traits but {len(codecs)} codecs")
    rubric = DEFAULT_RUBRIC if rubric is None else rubric
    k = len(traits)
    lines = [f"You are an experienced writing assessor. Score the student essay below on "
             f"{k} trait{'s' if k > 1 else ''}, one digit per trait."]
    for trait, codec in zip(traits, codecs):
        desc = _rubric_line(trait, rubric)
        lo_d, hi_d = codec.digit_range
        lines.append(f"- {trait} ({lo_d}-{hi_d})" + (f": {desc}" if desc else ""))
    for codec in dict.fromkeys(c for c in codecs if not c.identity):  # once per scale
        users = [t for t, c in zip(traits, codecs) if c == codec]
        who = "every trait" if len(users) == k else ", ".join(users)
        lines.append(f"For {who}, digits {codec.describe()}.")
    order = ", ".join(traits)
    lines.append("")
    lines.append(f"Answer format: on the first line write exactly {k} single digits "
                 f"separated by single spaces, in this order: {order}.")
    if with_feedback:
        lines.append(f"Then leave one blank line and write \"{FEEDBACK_MARKER}\" followed by "
                     "a short paragraph of feedback for the student.")
    else:
        lines.append("Write nothing else.")
    text = "\n".join(lines)
    if prompt_text and prompt_text.strip():
        text += f"\n\nWriting prompt:\n{prompt_text.strip()}"
    return text + ESSAY_HEADER + essay


def essay_from_instruction(instruction: str) -> str | None:
    """The essay of an instruction built by :func:`build_instruction` (None if absent).

    Used to pass ``essay=`` to :func:`encode_example` for JSONL rows, which store only the
    instruction.
    """
    at = instruction.find(ESSAY_HEADER)
    return None if at < 0 else instruction[at + len(ESSAY_HEADER):]


_BAND_SENTENCE = (
    "The essay gets only part of its message across; the basics need steady practice.",
    "The essay conveys its main ideas, with uneven control of the language.",
    "The essay is clear and well controlled overall.",
)
_TIPS: dict[str, str] = {
    "cohesion": "link paragraphs with transitions and keep one idea per paragraph",
    "syntax": "mix short sentences with longer ones joined by clauses",
    "vocabulary": "replace general words with precise ones for the topic",
    "phraseology": "read model texts aloud and reuse their natural phrases",
    "grammar": "check verb tenses and subject-verb agreement sentence by sentence",
    "conventions": "proofread for spelling, capitals and punctuation before handing in",
    "content": "support each claim with a specific example or detail",
    "organization": "plan an introduction, body paragraphs and a conclusion",
    "word choice": "choose precise, vivid words over general ones",
    "sentence fluency": "vary how sentences begin and how long they are",
    "prompt adherence": "reread the prompt and answer every part of it",
    "language": "proofread grammar and word choice carefully",
    "narrativity": "guide the reader through events in a clear order",
}


def rubric_feedback(traits: Sequence[str], digits: Sequence[int],
                    codecs: Sequence[ScoreCodec]) -> str:
    """A short feedback paragraph built deterministically from the trait scores alone.

    SYNTHETIC template text: ELLIPSE and ASAP++ carry no written feedback, so this stands
    in for it when a dataset is built with ``--feedback=rubric`` (to exercise the feedback
    path and its loss). It names the overall level band, the strongest and weakest trait
    with their scores, and one tip for the weakest; it says nothing a rater wrote.
    """
    if not (len(traits) == len(digits) == len(codecs)) or not traits:
        raise ValueError(f"rubric_feedback: {len(traits)} traits, {len(digits)} digits, "
                         f"{len(codecs)} codecs")
    scores = [c.decode(d) for c, d in zip(codecs, digits)]
    position = []
    for codec, d in zip(codecs, digits):
        lo_d, hi_d = codec.digit_range
        position.append((d - lo_d) / (hi_d - lo_d) if hi_d > lo_d else 1.0)
    mean = sum(position) / len(position)
    band = 0 if mean < 1 / 3 else (1 if mean < 2 / 3 else 2)
    out = [_BAND_SENTENCE[band]]
    best = max(range(len(traits)), key=lambda k: position[k])   # first on ties
    worst = min(range(len(traits)), key=lambda k: position[k])

    def said(k: int) -> str:
        top = _fmt(codecs[k], codecs[k].values[-1])
        return f"{traits[k]} ({_fmt(codecs[k], scores[k])} of {top})"

    if position[best] == position[worst]:
        out.append(f"All traits are at the same level, e.g. {said(0)}.")
    else:
        out.append(f"The strongest trait is {said(best)}; the weakest is {said(worst)}.")
    if position[worst] < 1.0:
        tip = _TIPS.get(traits[worst].casefold(), f"revise with {traits[worst]} in mind")
        out.append(f"To improve, {tip}.")
    else:
        out.append("Keep up this standard.")
    return " ".join(out)


# ----------------------------------------------------------------------------- datasets


def asap_traits_and_codecs(prompt: int) -> tuple[tuple[str, ...], tuple[ScoreCodec, ...]]:
    """ASAP++ traits of ``prompt`` (1-6) and their codecs (identity digits)."""
    if prompt not in asap.TRAIT_NAMES:
        raise ValueError(f"prompt {prompt} has no ASAP++ trait scores (only prompts "
                         f"{sorted(asap.TRAIT_NAMES)} do)")
    traits = asap.TRAIT_NAMES[prompt]
    return traits, tuple(ScoreCodec(*map(float, asap.score_range(prompt, t))) for t in traits)


def ell_traits_and_codecs() -> tuple[tuple[str, ...], tuple[ScoreCodec, ...]]:
    """The six ELLIPSE traits, each with the 1.0-5.0 half-step codec (digits 1-9)."""
    return ell.ELL_TRAITS, (ELL_CODEC,) * len(ell.ELL_TRAITS)


def _example(essay_text: str, essay_id: str, source: str, traits: Sequence[str],
             codecs: Sequence[ScoreCodec], scores: Sequence[float], with_feedback: bool,
             prompt_text: str | None) -> MtlExample:
    try:
        digits = [c.encode(s) for c, s in zip(codecs, scores)]
    except ValueError as e:
        raise ValueError(f"{source}: essay {essay_id}: {e}") from None
    feedback = rubric_feedback(traits, digits, codecs) if with_feedback else None
    return MtlExample(
        instruction=build_instruction(essay_text, traits, codecs, prompt_text=prompt_text,
                                      with_feedback=with_feedback),
        output=format_output(digits, feedback), essay_id=essay_id, traits=tuple(traits),
        scores=tuple(float(s) for s in scores), source=source)


def examples_from_asap(essays: Sequence[asap.Essay], *, with_feedback: bool,
                       prompt_texts: Mapping[int, str] | None = None) -> list[MtlExample]:
    """One example per essay over its prompt's ASAP++ traits (the holistic score unused).

    An essay without trait scores (e.g. from the official layout) is an error naming its
    file:line: the scorer has nothing to learn from it.
    """
    out = []
    for essay in essays:
        where = f"{essay.source}:{essay.line}"
        if not essay.traits:
            raise ValueError(f"{where}: essay {essay.essay_id} (prompt {essay.prompt}) has no "
                             "ASAP++ trait scores; the mtl format needs the traits layout "
                             "(essay_id, essay_set, essay, score, <traits>)")
        traits, codecs = asap_traits_and_codecs(essay.prompt)
        text = (prompt_texts or {}).get(essay.prompt)
        out.append(_example(essay.text, str(essay.essay_id), where, traits, codecs,
                            [essay.traits[t] for t in traits], with_feedback, text))
    return out


def examples_from_ell(records: Sequence[ell.EllEssay], *,
                      with_feedback: bool) -> list[MtlExample]:
    """One example per ELLIPSE essay over the six traits (unscored essays are an error)."""
    traits, codecs = ell_traits_and_codecs()
    out = []
    for rec in records:
        where = f"{rec.source}:{rec.line}"
        missing = [t for t in traits if t not in rec.scores]
        if missing:
            raise ValueError(f"{where}: essay {rec.text_id} has no {missing} score(s); "
                             "unscored essays (test.csv) cannot be training examples")
        out.append(_example(rec.text, rec.text_id, where, traits, codecs,
                            [rec.scores[t] for t in traits], with_feedback, None))
    return out


def _answer_line(output: str) -> str:
    end = output.find("\n")
    return output if end < 0 else output[:end]


def check_example(example: MtlExample, codecs: Sequence[ScoreCodec],
                  traits: Sequence[str] | None = None) -> list[int]:
    """The example's digits after checking them against ``codecs`` (and ``traits``).

    The first line must hold exactly one digit per codec, each in its codec's range; when
    the example carries traits/scores they must agree. Errors name the example.
    """
    k = len(codecs)
    line = _answer_line(example.output)
    tokens = line.split()
    digits, status = parse_scores(line, k)
    if status != "ok" or len(tokens) != k or line != " ".join(tokens):
        raise ValueError(f"{example.name()}: the output's first line {line!r:.80} is not "
                         f"{k} single digits separated by single spaces")
    for trait_k, (codec, d) in enumerate(zip(codecs, digits)):
        lo_d, hi_d = codec.digit_range
        if not lo_d <= d <= hi_d:  # type: ignore[operator]
            raise ValueError(f"{example.name()}: digit {d} of trait {trait_k} is outside its "
                             f"codec's digits {lo_d}-{hi_d}")
    if traits is not None and example.traits and tuple(example.traits) != tuple(traits):
        raise ValueError(f"{example.name()}: traits {list(example.traits)} differ from the "
                         f"dataset's {list(traits)}")
    if example.scores:
        if len(example.scores) != k:
            raise ValueError(f"{example.name()}: {len(example.scores)} scores for {k} traits")
        for codec, d, s in zip(codecs, digits, example.scores):
            try:
                expected = codec.encode(s)
            except ValueError as e:
                raise ValueError(f"{example.name()}: {e}") from None
            if expected != d:
                raise ValueError(f"{example.name()}: score {s:g} encodes to digit "
                                 f"{expected} but the output says {d}")
    return digits  # type: ignore[return-value]


# ----------------------------------------------------------------------------- encoding


@dataclasses.dataclass
class Encoded:
    prompt_ids: np.ndarray     # int32 [P]: the chat-wrapped instruction
    output_ids: np.ndarray     # int32 [O]: the answer, then the end-of-answer id
    digit_pos: np.ndarray      # int32 [K]: index into output_ids of trait k's digit
    digit_value: np.ndarray    # float32 [K]: that digit, 0-9
    feedback_mask: np.ndarray  # bool [O]: tokens after FEEDBACK_MARKER (end id excluded)
    truncated_words: int = 0   # essay words cut so the example fits max_tokens


def _digit_positions(example: MtlExample, ids: Sequence[int],
                     offsets: Sequence[tuple[int, int]], num_traits: int,
                     tokenizer: Any) -> list[int]:
    """Token index of each score digit; each must be one token spanning just that digit."""
    line = _answer_line(example.output)
    spans = [m.start() for m in re.finditer(r"\S+", line)][:num_traits]
    positions = []
    for k, c in enumerate(spans):
        holders = [j for j, (s, e) in enumerate(offsets) if s <= c < e]
        if len(holders) != 1 or tuple(offsets[holders[0]]) != (c, c + 1):
            shown = ", ".join(f"token {j} {example.output[slice(*offsets[j])]!r} "
                              f"(id {int(ids[j])})" for j in holders)
            raise ValueError(
                f"{example.name()}: score digit {k} ({line[c]!r} at character {c} of the "
                f"output) is not one token of its own but {shown or 'in no token'}; the "
                f"number-token loss needs one token per digit, and "
                f"{type(tokenizer).__name__} does not split it off (use a tokenizer that "
                "splits digits, e.g. LLaMA-3/SmolLM2)")
        positions.append(holders[0])
    return positions


def _encode_output(example: MtlExample, tokenizer: Any, num_traits: int
                   ) -> tuple[list[int], list[int], np.ndarray]:
    ids, offsets = tokenizer.encode_with_offsets(example.output)
    if len(ids) != len(offsets):
        raise ValueError(f"{type(tokenizer).__name__}: {len(ids)} ids but {len(offsets)} "
                         "offsets")
    positions = _digit_positions(example, ids, offsets, num_traits, tokenizer)
    feedback = np.zeros(len(ids) + 1, dtype=bool)  # + the end-of-answer token, never feedback
    first_nl = example.output.find("\n")
    marker = example.output.find(FEEDBACK_MARKER, first_nl) if first_nl >= 0 else -1
    if marker >= 0:
        start = marker + len(FEEDBACK_MARKER)
        for j, (s, e) in enumerate(offsets):
            feedback[j] = s >= start and e > s
    end_id = getattr(tokenizer, "end_of_answer_id", None)
    if end_id is None:
        raise ValueError(f"{type(tokenizer).__name__} has no end_of_answer_id (eos)")
    return list(ids) + [int(end_id)], positions, feedback


def encode_example(example: MtlExample, tokenizer: Any, codecs: Sequence[ScoreCodec], *,
                   max_tokens: int, essay: str | None = None) -> Encoded:
    """Tokenise an example into prompt and answer ids with the digit and feedback positions.

    The answer is never cut. When prompt + answer exceed ``max_tokens`` and ``essay`` (the
    raw essay, which must end the instruction, see :func:`essay_from_instruction`) is
    given, the essay is cut to its longest word prefix that fits, keeping its original
    spacing; without ``essay`` that is an error naming the example and the lengths.
    """
    digits = check_example(example, codecs)
    output_ids, positions, feedback = _encode_output(example, tokenizer, len(codecs))

    def prompt_ids(instruction: str) -> list[int]:
        return list(tokenizer.encode(tokenizer.chat_prompt(instruction)))

    prompt = prompt_ids(example.instruction)
    truncated = 0
    if len(prompt) + len(output_ids) > max_tokens:
        if essay is None:
            raise ValueError(f"{example.name()}: {len(prompt)} prompt + {len(output_ids)} "
                             f"answer tokens exceed max_tokens={max_tokens}; pass the essay "
                             "text (essay=) to cut it, or raise max_tokens")
        if not essay or not example.instruction.endswith(essay):
            raise ValueError(f"{example.name()}: the essay text given is not the end of the "
                             "instruction, so it cannot be cut there")
        head = example.instruction[:len(example.instruction) - len(essay)]
        ends = [m.end() for m in re.finditer(r"\S+", essay)]

        def fits(keep: int) -> list[int] | None:
            ids = prompt_ids(head + essay[:ends[keep - 1]] if keep else head)
            return ids if len(ids) + len(output_ids) <= max_tokens else None

        best = fits(0)
        if best is None:
            raise ValueError(f"{example.name()}: even with the essay cut to nothing the "
                             f"prompt and {len(output_ids)} answer tokens exceed "
                             f"max_tokens={max_tokens}")
        lo, hi = 0, len(ends) - 1  # the largest keep that fits (full length did not)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            ids = fits(mid)
            if ids is not None:
                lo, best = mid, ids
            else:
                hi = mid - 1
        prompt, truncated = best, len(ends) - lo
    return Encoded(prompt_ids=np.asarray(prompt, dtype=np.int32),
                   output_ids=np.asarray(output_ids, dtype=np.int32),
                   digit_pos=np.asarray(positions, dtype=np.int32),
                   digit_value=np.asarray(digits, dtype=np.float32),
                   feedback_mask=feedback, truncated_words=truncated)


def training_arrays(enc: Encoded, length: int | None = None) -> dict[str, np.ndarray]:
    """Causal-LM rows: ``input_ids = ids[:-1]``, ``targets = ids[1:]``, ids = prompt+output.

    Masks are over targets: ``loss_mask`` (answer tokens incl. the end-of-answer token),
    ``digit_mask`` with ``digit_value`` (float, the digit) and ``trait_index`` (k, else -1),
    ``feedback_mask``. With ``length``, rows are right-padded (ids 0, masks False, values
    0, trait_index -1); a longer example raises.
    """
    p, o = len(enc.prompt_ids), len(enc.output_ids)
    if p < 1 or o < 1:
        raise ValueError(f"training_arrays: need a non-empty prompt and answer (got {p}, {o})")
    ids = np.concatenate([enc.prompt_ids, enc.output_ids]).astype(np.int32)
    n = len(ids) - 1
    size = n if length is None else int(length)
    if n > size:
        raise ValueError(f"example needs {n} positions (prompt {p} + answer {o} - 1) but "
                         f"length={size}")
    out = {
        "input_ids": np.zeros(size, np.int32), "targets": np.zeros(size, np.int32),
        "loss_mask": np.zeros(size, bool), "digit_mask": np.zeros(size, bool),
        "digit_value": np.zeros(size, np.float32), "trait_index": np.full(size, -1, np.int32),
        "feedback_mask": np.zeros(size, bool),
    }
    out["input_ids"][:n] = ids[:-1]
    out["targets"][:n] = ids[1:]
    out["loss_mask"][p - 1:n] = True          # target t is ids[t + 1]: output j at p + j - 1
    at = p - 1 + enc.digit_pos
    out["digit_mask"][at] = True
    out["digit_value"][at] = enc.digit_value
    out["trait_index"][at] = np.arange(len(at), dtype=np.int32)
    out["feedback_mask"][p - 1:n] = enc.feedback_mask
    return out


# ----------------------------------------------------------------------------- directories


def mtl_manifest(traits: Sequence[str], codecs: Sequence[ScoreCodec],
                 counts: Mapping[str, int], source_info: Mapping[str, Any]) -> dict[str, Any]:
    """The ``manifest.json`` of a dataset directory.

    ``source_info`` adds what the builder knows (``sources``, ``skipped``,
    ``skip_examples``, ``split``, ``feedback``, ...); ``sources`` and ``skipped`` default
    to empty.
    """
    if len(traits) != len(codecs):
        raise ValueError(f"mtl_manifest: {len(traits)} traits but {len(codecs)} codecs")
    manifest: dict[str, Any] = {
        "format": MTL_VERSION,
        "traits": list(traits),
        "codecs": [c.to_dict() for c in codecs],  # aligned with "traits"
        "counts": {s: int(n) for s, n in counts.items()},
        "sources": [],
        "skipped": {},
        "answer_format": "first line: one digit per trait, space-separated, in trait order"
                         f"; optional blank line + '{FEEDBACK_MARKER} ...'",
    }
    manifest.update(source_info)
    return manifest


def refuse_existing(output_dir: str | os.PathLike, overwrite: bool) -> None:
    """Raise FileExistsError if ``output_dir`` holds an mtl dataset and ``overwrite`` is
    off. Builders call it before the slow part, so a refusal costs nothing."""
    asap.refuse_existing(Path(output_dir), overwrite,
                         names=("manifest.json", *(f"{s}.jsonl" for s in SPLITS)))


def write_mtl_dir(output_dir: str | os.PathLike, splits: Mapping[str, Sequence[MtlExample]],
                  manifest: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write ``{split}.jsonl`` per split and ``manifest.json`` last (its presence = done)."""
    output_dir = Path(output_dir)
    refuse_existing(output_dir, overwrite)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "manifest.json").unlink(missing_ok=True)
    for split, examples in splits.items():
        write_jsonl(output_dir / f"{split}.jsonl", examples)
    tmp = output_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, output_dir / "manifest.json")
    return output_dir


def load_mtl_dir(path: str | os.PathLike, traits: Sequence[str] | None = None,
                 codecs: Sequence[ScoreCodec] | None = None
                 ) -> tuple[dict[str, Any], dict[str, list[MtlExample]]]:
    """(manifest, split -> examples) of a dataset directory, every example checked.

    With ``manifest.json`` the traits and codecs come from it (and must match any given);
    a plain directory of JSONL files is accepted only when ``traits`` and ``codecs`` are
    passed, and gets a manifest made up from them.
    """
    path = Path(path)
    manifest_path = path / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != MTL_VERSION:
            raise ValueError(f"{manifest_path}: format {manifest.get('format')!r}, expected "
                             f"{MTL_VERSION!r}; rebuild with launch.build_dataset --format=mtl")
        m_traits = list(manifest["traits"])
        m_codecs = [ScoreCodec.from_dict(c) for c in manifest["codecs"]]
        if len(m_codecs) != len(m_traits):
            raise ValueError(f"{manifest_path}: {len(m_traits)} traits but {len(m_codecs)} "
                             "codecs")
        if traits is not None and list(traits) != m_traits:
            raise ValueError(f"{manifest_path}: traits {m_traits}, but {list(traits)} given")
        if codecs is not None and list(codecs) != m_codecs:
            raise ValueError(f"{manifest_path}: codecs {m_codecs}, but {list(codecs)} given")
        traits, codecs = m_traits, m_codecs
        names = list(manifest.get("counts", {})) or list(SPLITS)
    else:
        if traits is None or codecs is None:
            raise FileNotFoundError(f"{path}: no manifest.json; pass traits and codecs to read "
                                    "a plain directory of JSONL files")
        if len(traits) != len(codecs):
            raise ValueError(f"{len(traits)} traits but {len(codecs)} codecs")
        names = [s for s in SPLITS if (path / f"{s}.jsonl").is_file()]
        if not names:
            raise FileNotFoundError(f"{path}: none of {[f'{s}.jsonl' for s in SPLITS]}")
        manifest = mtl_manifest(traits, codecs, {}, {"note": "no manifest.json; traits and "
                                                     "codecs given by the caller"})
    splits: dict[str, list[MtlExample]] = {}
    blanks: dict[str, int] = {}
    for split in names:
        file = path / f"{split}.jsonl"
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing (the manifest lists split {split!r})")
        examples, blanks[split] = read_jsonl_counted(file)
        for example in examples:
            check_example(example, codecs, traits)
        expected = manifest.get("counts", {}).get(split)
        if manifest_path.is_file() and expected is not None and expected != len(examples):
            raise ValueError(f"{file}: {len(examples)} examples but the manifest says "
                             f"{expected}; the dataset is damaged, rebuild it")
        splits[split] = examples
    if not manifest_path.is_file():
        manifest["counts"] = {s: len(v) for s, v in splits.items()}
    manifest["blank_lines"] = blanks
    return manifest, splits


# ----------------------------------------------------------------------------- demo corpus

DEMO_ELL_HEADER = ("text_id", "full_text", *ell.ELL_TRAITS)
_DEMO_PROMPT = 1  # asap_demo's persuasive-letter topic: argumentative, like ELLIPSE
# Per-trait offsets (in score units) so traits differ on average, as in ELLIPSE, where
# conventions and grammar run lower than vocabulary.
_DEMO_TRAIT_SHIFT = {"cohesion": 0.0, "syntax": 0.0, "vocabulary": 0.25, "phraseology": 0.0,
                     "grammar": -0.25, "conventions": -0.1}


def demo_ell_rows(n: int = 240, seed: int = 0) -> list[list[str]]:
    """A SYNTHETIC corpus in the Kaggle ELLIPSE ``train.csv`` layout, header excluded.

    NOT ELLIPSE data: each essay comes from the asap_demo generator (it starts with
    ``asap_demo.MARKER``) at a quality q drawn from Beta(2.5, 2.5); every trait score is
    ``1 + 4 q`` plus a per-trait shift and Gaussian noise (sd 0.35), snapped to the 0.5
    grid and clipped to 1.0-5.0. Text and scores share q, so scores are learnable from
    the text while no model can be exact. Deterministic in ``seed``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng([int(seed), 0xE1])
    rows = []
    for k in range(n):
        q = float(rng.beta(2.5, 2.5))
        text = asap_demo.demo_essay(rng, _DEMO_PROMPT, q)
        scores = []
        for trait in ell.ELL_TRAITS:
            raw = 1.0 + 4.0 * q + _DEMO_TRAIT_SHIFT[trait] + rng.normal(0.0, 0.35)
            scores.append(float(np.clip(np.round(raw * 2) / 2, 1.0, 5.0)))
        rows.append([f"DEMO{k:08X}", text, *(f"{s:.1f}" for s in scores)])
    return rows


def write_demo_ell_csv(path: str | os.PathLike, n: int = 240, seed: int = 0) -> Path:
    """Write :func:`demo_ell_rows` as a Kaggle-layout ``train.csv``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(DEMO_ELL_HEADER)
        writer.writerows(demo_ell_rows(n, seed))
    return path
