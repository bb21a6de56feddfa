"""Prompt + completion as one causal-LM row, the loss mask on the completion only: the
rows SFT trains on and DPO scores.

As TRL does, a prompt that is too long keeps its end (the question's last part and the
chat template's assistant header matter most) and a completion keeps its start. Rows are
right-padded; the attention mask and the completion mask keep padding out of the loss.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

__all__ = ["CutCounts", "encode_prompt", "encode_completion", "completion_rows"]


@dataclasses.dataclass
class CutCounts:
    """How many examples were encoded and how many had their prompt or completion cut."""

    examples: int = 0
    prompts_cut: int = 0
    completions_cut: int = 0

    def add(self, prompt_cut: bool, completion_cut: bool) -> None:
        self.examples += 1
        self.prompts_cut += int(prompt_cut)
        self.completions_cut += int(completion_cut)

    @property
    def any_cut(self) -> bool:
        return bool(self.prompts_cut or self.completions_cut)

    def line(self) -> str:
        return (f"{self.examples} examples ({self.prompts_cut} prompts cut to their end, "
                f"{self.completions_cut} completions cut)")


def encode_prompt(prompt: str, tokenizer: Any, max_tokens: int, chat_template: bool = True
                  ) -> tuple[np.ndarray, bool]:
    """(ids [<= max_tokens] int32, cut?) of the user turn as the model sees it: wrapped in
    the chat template (or as is), its last `max_tokens` tokens."""
    ids = list(tokenizer.encode(tokenizer.chat_prompt(prompt) if chat_template else prompt))
    return np.asarray(ids[-max_tokens:], np.int32), len(ids) > max_tokens


def encode_completion(text: str, tokenizer: Any, max_tokens: int) -> tuple[np.ndarray, bool]:
    """(ids int32, cut?): the text then the end-of-answer id, its first `max_tokens`."""
    ids = list(tokenizer.encode(text)) + [int(tokenizer.end_of_answer_id)]
    return np.asarray(ids[:max_tokens], np.int32), len(ids) > max_tokens


def completion_rows(prompt_ids: Sequence[int], completion_ids: Sequence[int], length: int
                    ) -> dict[str, np.ndarray]:
    """One row right-padded to `length`: input_ids = ids[:-1], targets = ids[1:] (ids =
    prompt + completion), loss_mask on the completion's targets only, attention_mask."""
    p, c = len(prompt_ids), len(completion_ids)
    if p < 1 or c < 1:
        raise ValueError(f"completion_rows: need a non-empty prompt and completion (got {p}, "
                         f"{c})")
    ids = np.concatenate([np.asarray(prompt_ids), np.asarray(completion_ids)]).astype(np.int32)
    n = len(ids) - 1
    if n > length:
        raise ValueError(f"a row needs {n} positions (prompt {p} + completion {c} - 1) but "
                         f"length={length}")
    row = {"input_ids": np.zeros(length, np.int32), "targets": np.zeros(length, np.int32),
           "loss_mask": np.zeros(length, bool), "attention_mask": np.zeros(length, bool)}
    row["input_ids"][:n] = ids[:-1]
    row["targets"][:n] = ids[1:]
    row["loss_mask"][p - 1:n] = True
    row["attention_mask"][:n] = True
    return row
