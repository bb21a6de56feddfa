"""The LLaMA-AES conversation in text: the instruction the model reads and the answer it
writes, one digit per trait on the first line, optionally followed by feedback::

    4 3 4 3 4 3

    Essay Feedback: ...

:func:`build_instruction` writes the rubric-aware instruction (the essay always last,
after :data:`ESSAY_HEADER`), :func:`format_output` / :func:`parse_scores` write and read
the answer (:func:`score_fields`: where each digit was read), and :func:`rubric_feedback`
makes the SYNTHETIC template feedback used when a corpus has none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from aes_jax.data.score_codec import ScoreCodec

__all__ = [
    "FEEDBACK_MARKER",
    "ESSAY_HEADER",
    "DEFAULT_RUBRIC",
    "format_output",
    "parse_scores",
    "score_fields",
    "answer_status",
    "answer_line",
    "build_instruction",
    "essay_from_instruction",
    "rubric_feedback",
]

FEEDBACK_MARKER = "Essay Feedback:"
ESSAY_HEADER = "\n\nEssay:\n"  # the essay is everything after it: the instruction's tail


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


def score_fields(text: str, num_traits: int) -> list[tuple[int, int] | None]:
    """Where the parser reads each trait's digit: ``(digit, character index in text)`` per
    trait, None where it reads none (rules in :func:`parse_scores`).

    The character index lets expected-score decoding find the generated token that holds
    the same digit, so both decodings read one alignment (``eval/llm_scoring.py``).
    """
    start = 0
    line = ""
    for candidate in text.splitlines(keepends=True):
        if candidate.strip():
            line = candidate
            break
        start += len(candidate)
    # \S in a str pattern splits on exactly what str.split() splits on (str.isspace).
    fields = [(start + m.start(), m.group()) for m in re.finditer(r"\S+", line)]
    out: list[tuple[int, int] | None] = []
    for k in range(num_traits):
        at, token = fields[k] if k < len(fields) else (start, "")
        out.append((int(token), at) if len(token) == 1 and token in "0123456789" else None)
    return out


def parse_scores(text: str, num_traits: int) -> tuple[list[int | None], str]:
    """Read the trait digits from generated text: ``(digits, status)``.

    Only the first non-empty line counts; its whitespace-separated tokens are the traits
    in order, and each must be exactly one digit character. ``digits`` always has
    ``num_traits`` entries, None where a trait is missing or not a digit. ``status`` is
    ``"ok"`` (every trait has a digit; tokens past ``num_traits`` are ignored),
    ``"partial"`` (some do) or ``"failed"`` (none does, or no non-empty line). Nothing is
    guessed here: the caller decides the fallback for a None (e.g. the training mean).
    """
    digits = [None if f is None else f[0] for f in score_fields(text, num_traits)]
    return digits, answer_status(digits)


def answer_status(digits: Sequence[int | None]) -> str:
    """"ok" (every trait read), "partial" (some) or "failed" (none)."""
    found = sum(d is not None for d in digits)
    return "ok" if found == len(digits) else ("failed" if found == 0 else "partial")


def answer_line(output: str) -> str:
    """The first line of an answer: the trait digits."""
    end = output.find("\n")
    return output if end < 0 else output[:end]


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
        top = codecs[k].format_score(codecs[k].values[-1])
        return f"{traits[k]} ({codecs[k].format_score(scores[k])} of {top})"

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
