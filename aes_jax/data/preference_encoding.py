"""Preference pairs as token rows: prompt + completion, loss mask on the completion only.

As TRL does, the prompt keeps its end when it is too long (the question's last part and
the chat template's assistant header matter most) and the completion keeps its start;
what was cut is counted. Rows are right-padded; the attention mask and the completion
mask keep padding out of every log-prob.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from aes_jax.data.preferences import PreferencePair

__all__ = ["PairEncoding", "TruncationCounts", "completion_rows", "encode_pair",
           "encode_prompt", "pair_arrays"]


@dataclasses.dataclass(frozen=True)
class PairEncoding:
    prompt_ids: np.ndarray  # int32 [P]
    chosen_ids: np.ndarray  # int32 [C]: the chosen completion, then the end-of-answer id
    rejected_ids: np.ndarray  # int32 [R]


@dataclasses.dataclass
class TruncationCounts:
    pairs: int = 0
    prompts_cut: int = 0
    completions_cut: int = 0

    def line(self) -> str:
        return (f"{self.pairs} pairs ({self.prompts_cut} prompts cut to their end, "
                f"{self.completions_cut} completions cut)")


def encode_prompt(prompt: str, tokenizer: Any, chat_template: bool = True) -> list[int]:
    """The user turn as the model sees it: wrapped in the chat template, or as is."""
    return list(tokenizer.encode(tokenizer.chat_prompt(prompt) if chat_template else prompt))


def encode_pair(pair: PreferencePair, tokenizer: Any, *, max_prompt_tokens: int,
                max_completion_tokens: int, chat_template: bool = True,
                counts: TruncationCounts | None = None) -> PairEncoding:
    prompt = encode_prompt(pair.prompt, tokenizer, chat_template)
    end_id = int(tokenizer.end_of_answer_id)
    completions = []
    cut = False
    for text in (pair.chosen, pair.rejected):
        ids = list(tokenizer.encode(text)) + [end_id]
        cut |= len(ids) > max_completion_tokens
        completions.append(ids[:max_completion_tokens])
    if counts is not None:
        counts.pairs += 1
        counts.prompts_cut += int(len(prompt) > max_prompt_tokens)
        counts.completions_cut += int(cut)
    as_array = lambda ids: np.asarray(ids, np.int32)  # noqa: E731
    return PairEncoding(as_array(prompt[-max_prompt_tokens:]), as_array(completions[0]),
                        as_array(completions[1]))


def completion_rows(prompt_ids: Sequence[int], completion_ids: Sequence[int], length: int
                    ) -> dict[str, np.ndarray]:
    """One causal-LM row, right-padded to `length`: input_ids = ids[:-1], targets =
    ids[1:] (ids = prompt + completion), loss_mask on the completion's targets only."""
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


def pair_arrays(enc: PairEncoding, length: int) -> dict[str, np.ndarray]:
    """`chosen_*` and `rejected_*` rows of one pair (see `completion_rows`)."""
    out = {}
    for side, completion in (("chosen", enc.chosen_ids), ("rejected", enc.rejected_ids)):
        for key, value in completion_rows(enc.prompt_ids, completion, length).items():
            out[f"{side}_{key}"] = value
    return out
