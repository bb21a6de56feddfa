"""Tokenizers the tasks use: a UTF-8 byte tokenizer for tiny test models, and HF
tokenizers from a local model directory.

Both also serve the instruction-tuned scorer (``aes_jax.data.mtl_encoding``), which needs
three things beyond encode/decode: character offsets (to find the token holding each score
digit), the chat wrapping of an instruction, and the id that ends an answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

# For models without a chat template (and the byte tokenizer): an Alpaca-style wrapping
# whose last line tells where the answer starts.
PLAIN_PROMPT = "### Instruction:\n{instruction}\n\n### Response:\n"


def plain_prompt(instruction: str) -> str:
    """The chat-template-free wrapping of ``instruction``, ending where the answer begins."""
    return PLAIN_PROMPT.format(instruction=instruction)


class TextTokenizer(Protocol):
    vocab_size: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ChatTokenizer(TextTokenizer, Protocol):
    """What the instruction-tuned scorer needs on top of :class:`TextTokenizer`."""

    end_of_answer_id: int

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]: ...

    def chat_prompt(self, instruction: str) -> str: ...


class ByteTokenizer:
    """ids 0..2 are pad/bos/eos; byte b is id b + 3. Needs no files, fits tiny models."""

    pad_id, bos_id, eos_id = 0, 1, 2
    end_of_answer_id = eos_id
    vocab_size = 259

    def encode(self, text: str) -> list[int]:
        return [b + 3 for b in text.encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 3 for i in ids if i >= 3).decode("utf-8", errors="replace")

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Byte ids and, per id, the (start, end) *character* span it belongs to.

        Every byte of a multi-byte character gets that character's span, so offsets index
        ``text`` (a str), as those of HF tokenizers do.
        """
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for i, ch in enumerate(text):
            raw = ch.encode("utf-8")
            ids.extend(b + 3 for b in raw)
            offsets.extend([(i, i + 1)] * len(raw))
        return ids, offsets

    def chat_prompt(self, instruction: str) -> str:
        """No chat template exists for byte models: the plain Instruction/Response form."""
        return plain_prompt(instruction)


class HFTokenizer:
    """A transformers tokenizer from a local directory (no hub access)."""

    def __init__(self, model_dir: str | Path):
        from transformers import AutoTokenizer

        self.model_dir = str(model_dir)
        self._tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self.eos_id = self._tok.eos_token_id
        self.pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self.eos_id
        self.vocab_size = len(self._tok)
        # An instruct model ends its turn with eos (SmolLM2: <|im_end|>), so a generated
        # answer stops there and training teaches it to.
        self.end_of_answer_id = self._tok.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self._tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids)

    def encode_with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids (no special tokens added) and each token's (start, end) character span."""
        if not getattr(self._tok, "is_fast", False):
            raise ValueError(
                f"{self.model_dir}: encode_with_offsets needs a fast (Rust, tokenizer.json) "
                f"tokenizer for character offsets, but {type(self._tok).__name__} is a slow "
                "one; add a tokenizer.json to the model directory")
        enc = self._tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [(int(s), int(e)) for s, e in enc["offset_mapping"]]

    def chat_prompt(self, instruction: str) -> str:
        """``instruction`` as one user turn plus the assistant header the answer follows.

        Falls back to :func:`plain_prompt` when the tokenizer has no chat template (base
        models), so the same code serves both.
        """
        if not getattr(self._tok, "chat_template", None):
            return plain_prompt(instruction)
        return self._tok.apply_chat_template([{"role": "user", "content": instruction}],
                                             add_generation_prompt=True, tokenize=False)
