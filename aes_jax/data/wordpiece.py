"""BERT uncased WordPiece tokenisation of ASAP essays: ``[CLS] prompt [SEP] essay [SEP]``.

The dataset builder, the length report and scoring new essays all assemble ids here, so
an essay is tokenised and cut the same way wherever it is read.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WordPieceTokenizer", "load_tokenizer", "assemble_ids", "prompt_token_ids"]


@dataclasses.dataclass
class WordPieceTokenizer:
    """A BERT uncased WordPiece tokenizer (``tokenizers``) with padding/truncation off."""

    tokenizer: Any
    model_dir: str
    cls_id: int
    sep_id: int
    pad_id: int
    vocab_size: int

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """Word-piece ids of each text, without special tokens (batched, in Rust)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts),
                                                           add_special_tokens=False)]


def load_tokenizer(model_dir: str | os.PathLike | None = None) -> WordPieceTokenizer:
    """From a local HF dir: ``tokenizer.json`` if present, else ``vocab.txt`` (uncased)."""
    from tokenizers import Tokenizer

    if model_dir is None:
        from aes_jax.interop import assets
        model_dir = assets.minilm_dir()
    model_dir = Path(model_dir)
    if (model_dir / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    elif (model_dir / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer
        tok = BertWordPieceTokenizer(str(model_dir / "vocab.txt"), lowercase=True)
    else:
        raise FileNotFoundError(f"{model_dir}: no tokenizer.json or vocab.txt (expected a "
                                "BERT WordPiece HF tokenizer directory)")
    # The packaged tokenizer.json pads and truncates to 128; we assemble and cut ourselves.
    tok.no_padding()
    tok.no_truncation()
    ids = {name: tok.token_to_id(name) for name in ("[CLS]", "[SEP]", "[PAD]")}
    missing = [name for name, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"{model_dir}: the tokenizer has no {missing} token; expected a BERT "
                         "WordPiece vocabulary")
    return WordPieceTokenizer(tokenizer=tok, model_dir=str(model_dir), cls_id=ids["[CLS]"],
                              sep_id=ids["[SEP]"], pad_id=ids["[PAD]"],
                              vocab_size=tok.get_vocab_size())


def assemble_ids(essay_ids: Sequence[int], cls_id: int, sep_id: int,
                 prompt_ids: Sequence[int] | None = None,
                 max_tokens: int | None = None) -> tuple[list[int], int]:
    """``[CLS] prompt [SEP] essay [SEP]`` (``[CLS] essay [SEP]`` without a prompt).

    Returns (ids, full length before truncation). With ``max_tokens`` the *essay* is cut so
    the sequence fits, keeping the prompt and the closing ``[SEP]``.
    """
    head = [cls_id] + ([*prompt_ids, sep_id] if prompt_ids else [])
    full = len(head) + len(essay_ids) + 1
    room = len(essay_ids) if max_tokens is None else max_tokens - len(head) - 1
    if room < 1:
        raise ValueError(f"max_tokens={max_tokens} leaves no room for the essay after "
                         f"{len(head) + 1} prompt and special tokens")
    return head + list(essay_ids[:room]) + [sep_id], full


def prompt_token_ids(tok: WordPieceTokenizer, texts: Mapping[int, str] | None,
                     prompts: Iterable[int]) -> dict[int, list[int]]:
    """prompt -> word-piece ids of its text, for the ``prompts`` given a non-blank text."""
    if not texts:
        return {}
    texts = {int(k): v for k, v in texts.items()}
    return {p: tok.encode_many([texts[p]])[0] for p in prompts if texts.get(p, "").strip()}
