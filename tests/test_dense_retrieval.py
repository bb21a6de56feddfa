"""The dense retriever: JAX inner-product top-k equals numpy's on any encoder's vectors,
and the packaged MiniLM (mean-pooled, normalised) finds paraphrased passages."""

import hashlib

import numpy as np

from aes_jax.retrieval.base import Retriever
from aes_jax.retrieval.dense import DenseRetriever


def _hashing_encoder(texts):
    out = np.zeros((len(texts), 64), np.float32)
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 64] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_top_k_equals_numpy_inner_products():
    passages = [f"passage {i} about topic {i % 7} and item {i % 5}" for i in range(40)]
    retriever = DenseRetriever(passages, _hashing_encoder)
    assert isinstance(retriever, Retriever)
    queries = ["topic 3 item 2", "passage 17", "nothing known here"]
    want = _hashing_encoder(queries) @ _hashing_encoder(passages).T
    for query, row, got in zip(queries, want, retriever.search_many(queries, 5)):
        np.testing.assert_allclose([s for _, s in got], np.sort(row)[::-1][:5], rtol=1e-5)
        assert all(abs(row[i] - s) < 1e-5 for i, s in got), query


def test_minilm_finds_paraphrases():
    passages = ["The cat sat on the warm windowsill all afternoon.",
                "Interest rates were raised by the central bank.",
                "The football match ended in a draw after extra time."]
    retriever = DenseRetriever.minilm(passages)
    norms = np.linalg.norm(np.asarray(retriever.embeddings), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    assert retriever.search("a kitten resting by the window", 1)[0][0] == 0
    assert retriever.search("monetary policy tightening", 1)[0][0] == 1
    assert [i for i, _ in retriever.search("soccer game tied", 3)][0] == 2
