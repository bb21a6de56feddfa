"""LLaMA-AES examples as token ids with their loss masks.

:func:`encode_example` tokenises an example into chat-wrapped prompt ids and answer ids
and finds the score digit tokens (refusing a tokenizer that merges a digit with anything);
:func:`training_arrays` gives the shifted causal-LM rows with the loss masks:

* ``loss_mask``: every answer token and the final end-of-answer token (cross-entropy);
* ``digit_mask`` / ``digit_value`` / ``trait_index``: the score-digit targets (NTL);
* ``feedback_mask``: the feedback tokens after ``Essay Feedback:`` (EMO).

Prompt tokens are in no mask.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from aes_jax.data.answer_format import FEEDBACK_MARKER, answer_line
from aes_jax.data.mtl_io import MtlExample, check_example
from aes_jax.data.score_codec import ScoreCodec

__all__ = ["Encoded", "encode_example", "training_arrays"]


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
    line = answer_line(example.output)
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
