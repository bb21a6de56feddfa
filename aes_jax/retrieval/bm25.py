"""BM25 (Okapi) over a fixed passage store, with rank_bm25's exact formulas and a sparse
precomputed index, so a query costs one sparse product instead of a pass over every
document in Python.

    idf(t)     = ln(N - n_t + 0.5) - ln(n_t + 0.5); a negative idf (t in more than half the
                 passages) becomes epsilon x the mean idf (rank_bm25's BM25Okapi)
    score(q,d) = sum over query tokens t (repeats count) of
                 idf(t) f_td (k1 + 1) / (f_td + k1 (1 - b + b |d| / avgdl))

`tokenize` lower-cases and splits into runs of letters and digits. The index is built
once (`BM25(passages)`) and saved / loaded as a directory (`save`, `BM25.load`): the
passages, the vocabulary, the weight matrix and the settings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

_TOKEN = re.compile(r"[0-9a-z]+")
FORMAT = "aes_jax.bm25/1"


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k highest scores, best first, ties to the lower index."""
    k = min(k, len(scores))
    if k <= 0:
        return []
    candidates = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    # A tie at the k-th score may leave lower indices outside: take every index that ties it.
    cutoff = scores[candidates].min()
    candidates = np.flatnonzero(scores >= cutoff)
    order = np.lexsort((candidates, -scores[candidates]))[:k]
    return [(int(candidates[i]), float(scores[candidates[i]])) for i in order]


class BM25:
    def __init__(self, passages: Sequence[str], k1: float = 1.5, b: float = 0.75,
                 epsilon: float = 0.25, tokenizer: Callable[[str], list[str]] = tokenize):
        if not passages:
            raise ValueError("BM25 needs at least one passage")
        if k1 < 0 or not 0.0 <= b <= 1.0:
            raise ValueError(f"BM25: k1={k1} must be >= 0 and b={b} in [0, 1]")
        self.passages = list(passages)
        self.k1, self.b, self.epsilon = float(k1), float(b), float(epsilon)
        self.tokenizer = tokenizer
        self.vocab: dict[str, int] = {}
        rows, cols, counts = [], [], []
        lengths = np.zeros(len(self.passages))
        for d, text in enumerate(self.passages):
            tokens = tokenizer(text)
            lengths[d] = len(tokens)
            ids, n = np.unique([self.vocab.setdefault(t, len(self.vocab)) for t in tokens],
                               return_counts=True)
            rows += [d] * len(ids)
            cols += ids.tolist()
            counts += n.tolist()
        freqs = sp.csc_matrix((np.asarray(counts, np.float64), (rows, cols)),
                              shape=(len(self.passages), len(self.vocab)))
        self.idf = self._idf(np.diff(freqs.indptr), len(self.passages))
        avgdl = lengths.mean()
        norm = self.k1 * (1.0 - self.b + self.b * lengths / avgdl) if avgdl else np.full_like(
            lengths, self.k1)
        f = freqs.tocoo()
        weights = (self.idf[f.col] * f.data * (self.k1 + 1.0) / (f.data + norm[f.row]))
        # [vocab, passages]: a query's scores are its token counts times these rows.
        self.weights = sp.csr_matrix((weights, (f.col, f.row)),
                                     shape=(len(self.vocab), len(self.passages)))

    def _idf(self, doc_freq: np.ndarray, n: int) -> np.ndarray:
        idf = np.log(n - doc_freq + 0.5) - np.log(doc_freq + 0.5)
        floor = self.epsilon * idf.mean() if len(idf) else 0.0
        return np.where(idf < 0, floor, idf)

    def scores(self, query: str) -> np.ndarray:
        """[passages] float64 BM25 scores of `query`."""
        ids = [self.vocab[t] for t in self.tokenizer(query) if t in self.vocab]
        if not ids:
            return np.zeros(len(self.passages))
        unique, counts = np.unique(ids, return_counts=True)
        return np.asarray(counts.astype(np.float64) @ self.weights[unique].toarray())

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        return top_k(self.scores(query), k)

    def search_many(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        return [self.search(q, k) for q in queries]

    # ------------------------------------------------------------------ store
    def save(self, directory: str | Path) -> Path:
        """DIR/passages.jsonl, DIR/vocab.json, DIR/weights.npz, DIR/bm25.json."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "passages.jsonl", "w") as f:
            for text in self.passages:
                f.write(json.dumps(text) + "\n")
        (out / "vocab.json").write_text(json.dumps(self.vocab))
        sp.save_npz(out / "weights.npz", self.weights)
        np.save(out / "idf.npy", self.idf)
        (out / "bm25.json").write_text(json.dumps(
            {"format": FORMAT, "k1": self.k1, "b": self.b, "epsilon": self.epsilon,
             "passages": len(self.passages), "vocab": len(self.vocab),
             "tokenizer": "aes_jax.retrieval.bm25.tokenize"}, indent=1) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "BM25":
        """An index `save` wrote (its own tokenizer); errors name the missing file."""
        d = Path(directory)
        meta_path = d / "bm25.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{d}: no bm25.json (not a saved BM25 index)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT}")
        self = cls.__new__(cls)
        self.passages = [json.loads(line) for line in
                         (d / "passages.jsonl").read_text().splitlines()]
        self.k1, self.b, self.epsilon = meta["k1"], meta["b"], meta["epsilon"]
        self.tokenizer = tokenize
        self.vocab = json.loads((d / "vocab.json").read_text())
        self.weights = sp.load_npz(d / "weights.npz").tocsr()
        self.idf = np.load(d / "idf.npy")
        if len(self.passages) != meta["passages"] or self.weights.shape != (
                len(self.vocab), len(self.passages)):
            raise ValueError(f"{d}: the index files disagree (passages "
                             f"{len(self.passages)}, weights {self.weights.shape})")
        return self

