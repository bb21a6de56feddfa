"""BM25 against rank_bm25.BM25Okapi (same tokenizer, k1, b, epsilon): every score and the
top-k, including a term in most passages (negative idf -> epsilon x mean idf), repeated
query terms and unknown words; the saved index loads back to the same scores."""

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from aes_jax.retrieval.base import Retriever
from aes_jax.retrieval.bm25 import BM25, tokenize, top_k

PASSAGES = [
    "Ada Byrne founded Acme in 1901 in Lyon.",
    "Acme makes anvils; Acme anvils are heavy.",
    "Lyon is a city in France on the Rhone.",
    "The Rhone flows through Lyon and Geneva.",
    "Geneva is a city in Switzerland.",
    "Ada Byrne was born in Lyon, France.",
    "A city is a large town.",
]


@pytest.mark.parametrize("k1,b", [(1.5, 0.75), (0.9, 0.4)])
def test_scores_and_top_k_equal_rank_bm25(k1, b):
    ours = BM25(PASSAGES, k1=k1, b=b)
    ref = BM25Okapi([tokenize(p) for p in PASSAGES], k1=k1, b=b, epsilon=0.25)
    # 'in' is in 4 of 7 passages: its raw idf is negative, both floor it at epsilon x mean.
    assert np.log(7 - 4 + 0.5) - np.log(4 + 0.5) < 0
    assert ours.idf[ours.vocab["in"]] == pytest.approx(ref.idf["in"]) and ref.idf["in"] > 0
    for query in ["Where was Ada Byrne born?", "city city in France", "anvils Acme",
                  "unknown words only", "in in in"]:
        want = ref.get_scores(tokenize(query))
        np.testing.assert_allclose(ours.scores(query), want, rtol=1e-12, atol=1e-12,
                                   err_msg=query)
        expected = sorted(range(len(PASSAGES)), key=lambda i: (-want[i], i))[:3]
        assert [i for i, _ in ours.search(query, 3)] == expected, query


def test_top_k_ties_and_the_store_round_trip(tmp_path):
    assert top_k(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 2) == [(1, 3.0), (2, 3.0)]
    assert top_k(np.zeros(4), 2) == [(0, 0.0), (1, 0.0)]
    assert top_k(np.array([1.0]), 5) == [(0, 1.0)]
    index = BM25(PASSAGES)
    assert isinstance(index, Retriever)
    loaded = BM25.load(index.save(tmp_path / "bm25"))
    assert loaded.passages == PASSAGES
    for query in ["Ada Byrne Lyon", "Geneva city"]:
        np.testing.assert_array_equal(loaded.scores(query), index.scores(query))
    assert loaded.search_many(["Acme", "Rhone"], 2) == index.search_many(["Acme", "Rhone"], 2)
    with pytest.raises(FileNotFoundError, match="no bm25.json"):
        BM25.load(tmp_path)
