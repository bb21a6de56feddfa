"""BM25 speed (not a test): aes_jax.retrieval.bm25 (rank_bm25's formulas on a sparse
precomputed index) vs rank_bm25.BM25Okapi vs bm25s (method "robertson", its closest
variant), on the project-written multi-hop demo corpus's passage store, the demo
questions as queries: index build seconds, queries/s for top-k, and whether each one's
top-k equals rank_bm25's (the reference).

    python -m bench.bm25_speed [--queries=500 --k=4]
"""

from __future__ import annotations

import time

import numpy as np
from absl import app, flags

QUERIES = flags.DEFINE_integer("queries", 500, "Demo questions used as queries.")
K = flags.DEFINE_integer("k", 4, "Passages per query.")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main(argv):
    del argv
    import bm25s
    from rank_bm25 import BM25Okapi

    from aes_jax.data.multihop_demo import demo_examples
    from aes_jax.retrieval.bm25 import BM25, tokenize
    from bench.table import print_aligned

    examples, store = demo_examples()
    passages = list(store.values())
    queries = [e.question for e in examples[:QUERIES.value]]
    k = K.value
    tokenized = [tokenize(p) for p in passages]
    ref, ref_build = _timed(lambda: BM25Okapi(tokenized))
    ref_top, ref_s = _timed(lambda: [list(np.argsort(-ref.get_scores(tokenize(q)),
                                                     kind="stable")[:k]) for q in queries])
    ours, ours_build = _timed(lambda: BM25(passages))
    ours_top, ours_s = _timed(lambda: [[i for i, _ in ours.search(q, k)] for q in queries])

    def build_bm25s():
        index = bm25s.BM25(method="robertson", k1=1.5, b=0.75)
        index.index([tokenize(p) for p in passages], show_progress=False)
        return index

    other, other_build = _timed(build_bm25s)
    other_top, other_s = _timed(lambda: [list(other.retrieve([tokenize(q)], k=k,
                                                             show_progress=False)[0][0])
                                         for q in queries])

    def same(tops):
        return sum(list(a) == list(b) for a, b in zip(tops, ref_top)) / len(queries)

    rows = [["aes_jax.retrieval.bm25", f"{ours_build:.3f}", f"{len(queries) / ours_s:,.0f}",
             f"{same(ours_top):.3f}"],
            ["rank_bm25 BM25Okapi", f"{ref_build:.3f}", f"{len(queries) / ref_s:,.0f}", "1.000"],
            ["bm25s (robertson)", f"{other_build:.3f}", f"{len(queries) / other_s:,.0f}",
             f"{same(other_top):.3f}"]]
    print(f"{len(passages)} passages, {len(queries)} queries, top-{k}")
    print_aligned([("implementation", "build s", "queries/s", "top-k = rank_bm25"),
                   *map(tuple, rows)])


if __name__ == "__main__":
    app.run(main)
