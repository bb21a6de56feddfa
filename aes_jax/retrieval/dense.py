"""Dense retrieval: passages and queries embedded by one encoder (default: the packaged
all-MiniLM-L6-v2, mean-pooled and normalised), exact inner-product search in JAX (one
matrix product and `lax.top_k` per batch of queries; no approximate index)."""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Encoder = Callable[[Sequence[str]], np.ndarray]  # texts -> [N, D] float32


@functools.partial(jax.jit, static_argnames="k")
def _search(passages: jax.Array, queries: jax.Array, k: int):
    return jax.lax.top_k(queries @ passages.T, k)


class DenseRetriever:
    def __init__(self, passages: Sequence[str], encode: Encoder,
                 embeddings: np.ndarray | None = None):
        if not passages:
            raise ValueError("DenseRetriever needs at least one passage")
        self.passages, self.encode = list(passages), encode
        vectors = encode(self.passages) if embeddings is None else embeddings
        if vectors.shape[0] != len(self.passages):
            raise ValueError(f"{vectors.shape[0]} embeddings for {len(self.passages)} passages")
        self.embeddings = jnp.asarray(vectors, jnp.float32)

    @classmethod
    def minilm(cls, passages: Sequence[str]) -> "DenseRetriever":
        from aes_jax.interop.assets import minilm_dir
        from aes_jax.interop.torch_ref.text_scorers import MeanPooledEncoder

        return cls(passages, MeanPooledEncoder(minilm_dir()))

    def search_many(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        k = min(k, len(self.passages))
        scores, ids = _search(self.embeddings, jnp.asarray(self.encode(list(queries))), k)
        scores, ids = np.asarray(scores), np.asarray(ids)
        return [[(int(i), float(s)) for i, s in zip(row_ids, row_scores)]
                for row_ids, row_scores in zip(ids, scores)]

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        return self.search_many([query], k)[0]
