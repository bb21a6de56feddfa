"""An ASAP TFDS dataset (``asap_aes`` / ``asap_traits``) as TRM-AES's data: tokenised on use.

One TFDS build serves every tokenizer: the raw essays are read with ``tfds.data_source``
and each is tokenised and assembled (``[CLS] prompt [SEP] essay [SEP]``, truncated to
``max_tokens``) exactly as :func:`aes_jax.data.asap_records.build_dataset` does, the first
time it is read. :class:`TfdsAsapSource` gives the arrays
:class:`aes_jax.data.asap_records.AsapDataSource` gives, in the same order (both sort a
split by prompt, then essay_id), so the same seed gives the same batches.
:func:`tfds_manifest` is the part of ``manifest.json`` a task reads, from the dataset's
info and the tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from aes_jax.data.asap import normalize
from aes_jax.data.wordpiece import (WordPieceTokenizer, assemble_ids, load_tokenizer,
                                    prompt_token_ids)

__all__ = ["tfds_manifest", "TfdsAsapSource"]


def _builder(name: str, data_dir: str | os.PathLike):
    import tensorflow_datasets as tfds

    import aes_jax.datasets  # noqa: F401  (registers the builders)

    return tfds.builder(name, data_dir=os.fspath(data_dir) if data_dir else None)


def tfds_manifest(name: str, data_dir: str | os.PathLike | None, tokenizer: WordPieceTokenizer,
                  max_tokens: int,
                  prompt_texts: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The manifest fields TRM-AES reads (score ranges, traits, tokenizer, max_tokens,
    splits) for a built ASAP TFDS dataset ``name`` (``asap_traits/prompt_3`` etc.)."""
    if max_tokens < 4:
        raise ValueError(f"a TFDS dataset is tokenised when read: give data.max_tokens "
                         f"(at least 4), got {max_tokens}")
    info = _builder(name, data_dir).info
    meta = info.metadata
    if meta is None or "score_ranges" not in meta:
        raise ValueError(f"{name} in {data_dir}: not an ASAP dataset of aes_jax.datasets "
                         "(no score ranges in its metadata)")
    prompt_ids = prompt_token_ids(tokenizer, prompt_texts, meta["prompts"])
    return {
        "format": f"tfds:{info.full_name}", "tfds_name": name,
        "tfds_dir": os.fspath(data_dir or ""),
        "prompts": list(meta["prompts"]),
        "splits": {s: info.splits[s].num_examples for s in info.splits},
        "score_ranges": dict(meta["score_ranges"]),
        "trait_ranges": dict(meta["trait_ranges"]),
        "trait_names": list(meta["trait_names"]),
        "trait_axis": list(meta["trait_axis"]),
        "tokenizer": {"dir": tokenizer.model_dir, "vocab_size": tokenizer.vocab_size,
                      "cls_id": tokenizer.cls_id, "sep_id": tokenizer.sep_id,
                      "pad_id": tokenizer.pad_id,
                      "layout": "[CLS] prompt [SEP] essay [SEP]" if prompt_ids
                      else "[CLS] essay [SEP]"},
        "prompt_texts": {str(p): prompt_texts[p] for p in prompt_ids} if prompt_ids else {},
        "max_tokens": int(max_tokens),
        "overlength": {"policy": "truncate"},
        "split": dict(meta["split"]),
    }


class TfdsAsapSource:
    """Random-access grain source over one split of an ASAP TFDS dataset, tokenised on use.

    ``source[i]`` holds what ``AsapDataSource`` holds: ``essay_id``, ``prompt``,
    ``input_ids``, ``score``, ``target`` and trait arrays over the manifest's
    ``trait_names`` (the traits the dataset holds, not the full TFDS axis).
    """

    def __init__(self, manifest: Mapping[str, Any], split: str,
                 tokenizer: WordPieceTokenizer | None = None):
        import tensorflow_datasets as tfds

        import aes_jax.datasets  # noqa: F401

        if split not in manifest["splits"]:
            raise ValueError(f"{manifest['tfds_name']}: no split {split!r}; it has "
                             f"{list(manifest['splits'])}")
        self.manifest, self.split = manifest, split
        self._source = tfds.data_source(manifest["tfds_name"],
                                        data_dir=manifest["tfds_dir"] or None, split=split)
        self.tok = tokenizer or load_tokenizer(manifest["tokenizer"]["dir"])
        texts = {int(k): v for k, v in manifest["prompt_texts"].items()}
        self._prompt_ids = prompt_token_ids(self.tok, texts, manifest["prompts"])
        self.trait_names: list[str] = list(manifest["trait_names"])
        axis = list(manifest["trait_axis"])
        self._axis = [axis.index(t) for t in self.trait_names]
        self._cache: dict[int, dict[str, Any]] = {}  # index -> arrays: tokenise once

    def __len__(self) -> int:
        return len(self._source)

    def _to_arrays(self, ex: Mapping[str, Any]) -> dict[str, Any]:
        prompt, score = int(ex["prompt"]), int(ex["score"])
        text = ex["essay"].decode("utf-8") if isinstance(ex["essay"], bytes) else ex["essay"]
        ids = self.tok.encode_many([text])[0]
        seq, _ = assemble_ids(ids, self.tok.cls_id, self.tok.sep_id,
                              self._prompt_ids.get(prompt), self.manifest["max_tokens"])
        n = len(self.trait_names)
        scores = np.full(n, -1, dtype=np.int32)
        targets = np.zeros(n, dtype=np.float32)
        for k, (name, j) in enumerate(zip(self.trait_names, self._axis)):
            if ex["trait_mask"][j]:
                scores[k] = ex["trait_scores"][j]
                targets[k] = normalize(int(scores[k]), prompt, name)
        return {"essay_id": np.int64(ex["essay_id"]), "prompt": np.int32(prompt),
                "input_ids": np.asarray(seq, dtype=np.int32), "score": np.int32(score),
                "target": np.float32(normalize(score, prompt)), "trait_scores": scores,
                "trait_targets": targets, "trait_mask": scores >= 0}

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index not in self._cache:
            self._cache[index] = self._to_arrays(self._source[index])
        return self._cache[index]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self[i] for i in indices]

    def __repr__(self) -> str:
        return (f"TfdsAsapSource({self.manifest['tfds_name']!r}, {self.split!r}: "
                f"{len(self)} essays)")
