"""How a generative scorer writes its scores: the value object that free-generation
scoring (`eval/llm_scoring.py`), self-consistency and the export's `score_format.json`
read, instead of reaching into a task."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from aes_jax.data.score_codec import ScoreCodec


@dataclasses.dataclass(frozen=True)
class ScoreFormat:
    traits: tuple[str, ...]
    codecs: tuple[ScoreCodec, ...]  # trait score <-> one digit
    digit_ids: tuple[int, ...]  # the token of each digit 0-9 (or the digits the vocab has)
    digit_values: tuple[float, ...]  # the digit each of those tokens stands for
    fallback_digits: tuple[int, ...]  # per trait, for unreadable answers (training mode)
    end_of_answer_id: int
    newline_ids: tuple[int, ...] = ()  # single tokens "\n" / "\n\n": the score line ends
    mtl: bool = True  # answers carry feedback after the score line

    @property
    def digit_ranges(self) -> list[tuple[int, int]]:
        return [c.digit_range for c in self.codecs]

    def fallback_by_trait(self) -> dict[str, int]:
        """{trait: fallback digit}, as the metrics JSON and the sample bank record them."""
        return {t: int(d) for t, d in zip(self.traits, self.fallback_digits)}

    def stop_token_ids(self, score_line_only: bool = True) -> tuple[int, ...]:
        """End of answer, plus (score_line_only) the newline tokens: votes and parsing read
        only the first line, so sampling the feedback after it would be wasted work."""
        stops = [self.end_of_answer_id, *(self.newline_ids if score_line_only else ())]
        return tuple(dict.fromkeys(int(s) for s in stops))

    def to_json(self) -> dict[str, Any]:
        """The export's score_format.json: what a user needs to read the model's answers."""
        return {
            "traits": list(self.traits), "codecs": [c.to_dict() for c in self.codecs],
            "digit_token_ids": list(self.digit_ids), "mtl": bool(self.mtl),
            "answer_format": "digits separated by spaces on the first line, trait order as "
                             "in 'traits'" + (", then a blank line and 'Essay Feedback:'"
                                              if self.mtl else ""),
        }


def newline_token_ids(tokenizer: Any) -> tuple[int, ...]:
    """The ids of "\\n" and "\\n\\n" where each is a single token."""
    ids = [tokenizer.encode(text) for text in ("\n", "\n\n")]
    return tuple(int(x[0]) for x in ids if len(x) == 1)


def mode_digits(digits: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per trait (column), the most frequent digit: the documented parse-failure fallback."""
    table = np.asarray(digits, np.int64)
    return tuple(int(np.bincount(table[:, k]).argmax()) for k in range(table.shape[1]))


@dataclasses.dataclass
class ScoringInput:
    """One essay to score by free generation."""

    essay_id: str
    prompt_ids: np.ndarray  # chat-templated instruction, ends with the assistant header
    gold: np.ndarray | None  # [K] gold digits, None when unknown
