"""Preference pairs as token rows (`data.chat_rows`): one row per side, the loss mask on
the completion only, what was cut counted."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from aes_jax.data.chat_rows import CutCounts, completion_rows, encode_completion, encode_prompt
from aes_jax.data.preferences import PreferencePair

__all__ = ["PairEncoding", "encode_pair", "pair_arrays"]


@dataclasses.dataclass(frozen=True)
class PairEncoding:
    prompt_ids: np.ndarray  # int32 [P]
    chosen_ids: np.ndarray  # int32 [C]: the chosen completion, then the end-of-answer id
    rejected_ids: np.ndarray  # int32 [R]


def encode_pair(pair: PreferencePair, tokenizer: Any, *, max_prompt_tokens: int,
                max_completion_tokens: int, chat_template: bool = True,
                counts: CutCounts | None = None) -> PairEncoding:
    prompt, prompt_cut = encode_prompt(pair.prompt, tokenizer, max_prompt_tokens,
                                       chat_template)
    (chosen, chosen_cut), (rejected, rejected_cut) = [
        encode_completion(text, tokenizer, max_completion_tokens)
        for text in (pair.chosen, pair.rejected)]
    if counts is not None:
        counts.add(prompt_cut, chosen_cut or rejected_cut)
    return PairEncoding(prompt, chosen, rejected)


def pair_arrays(enc: PairEncoding, length: int) -> dict[str, np.ndarray]:
    """`chosen_*` and `rejected_*` rows of one pair (see `completion_rows`)."""
    out = {}
    for side, completion in (("chosen", enc.chosen_ids), ("rejected", enc.rejected_ids)):
        for key, value in completion_rows(enc.prompt_ids, completion, length).items():
            out[f"{side}_{key}"] = value
    return out
