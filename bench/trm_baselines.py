"""The simple baselines bench/trm_quality.py scores the TRM against, fitted per prompt.

Each is fitted on the prompt's train essays, its hyper-parameter chosen on dev by mean QWK
(ties: lower dev RMSE), and scored on test:
  constant      the train mean score, rounded (QWK is 0 by construction)
  length        ridge regression on the word count (alpha on dev)
  tfidf         ridge on TF-IDF word 1-2 grams (sublinear tf, min_df 2, fitted on train),
                alpha on dev
  tfidf+length  the same TF-IDF features + standardised length features (log words,
                chars, sentences, distinct words; mean word length), alpha on dev
Defines no flags; bench/trm_quality.py and bench/trm_quality_report.py import it.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any

import numpy as np

from bench.table import log

SPLITS = ("train", "dev", "test")
LENGTH_ALPHAS = tuple(float(a) for a in np.logspace(-3, 3, 7))
TFIDF_ALPHAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
METHOD_LABELS = {"constant": "constant (train mean)", "length": "ridge(word count)",
                 "tfidf": "ridge(tfidf 1-2g)", "tfidf+length": "ridge(tfidf 1-2g + length)"}

_SENT = re.compile(r"[.!?]+(?:\s|$)")


def length_features(texts: list[str]) -> np.ndarray:
    rows = []
    for t in texts:
        words = t.split()
        n = max(len(words), 1)
        rows.append([np.log1p(len(words)), np.log1p(len(t)), np.log1p(len(_SENT.findall(t)) + 1),
                     np.log1p(len({w.lower() for w in words})),
                     sum(len(w) for w in words) / n])
    return np.asarray(rows, np.float64)


def word_counts(texts: list[str]) -> np.ndarray:
    return np.asarray([[len(t.split())] for t in texts], np.float64)


def _score(gold: np.ndarray, raw: np.ndarray, prompt: int) -> dict[str, float]:
    from aes_jax.data import asap
    from aes_jax.eval import metrics

    lo, hi = asap.score_range(prompt)
    return metrics.per_prompt_report(np.full(len(gold), prompt), gold, raw,
                                     {prompt: (lo, hi)})["per_prompt"][prompt]


def fit_select(make_xy, alphas, y_train, y_dev, y_test, prompt):
    """Ridge for each alpha on train; the alpha with the best dev QWK (then lower dev RMSE)
    predicts test. make_xy() -> (X_train, X_dev, X_test)."""
    from sklearn.linear_model import Ridge

    x_tr, x_dev, x_te = make_xy()
    best = None
    for alpha in alphas:
        model = Ridge(alpha=alpha).fit(x_tr, y_train)
        dev = _score(y_dev, model.predict(x_dev), prompt)
        key = (dev["qwk"], -dev["rmse"])
        if best is None or key > best[0]:
            best = (key, alpha, model, dev)
    _, alpha, model, dev = best
    test_raw = model.predict(x_te)
    return {"alpha": alpha, "dev": dev, "test": _score(y_test, test_raw, prompt)}, test_raw


def run_baselines(essays: dict[str, list], prompts: list[int]
                  ) -> tuple[dict[str, Any], dict[str, dict[int, dict[int, float]]]]:
    """(report, test predictions {method: {prompt: {essay_id: raw prediction}}})."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import StandardScaler

    out: dict[str, Any] = {m: {"per_prompt": {}} for m in METHOD_LABELS}
    preds: dict[str, dict[int, dict[int, float]]] = {m: {} for m in METHOD_LABELS}
    for p in prompts:
        by = {s: [e for e in essays[s] if e.prompt == p] for s in SPLITS}
        text = {s: [e.text for e in by[s]] for s in SPLITS}
        y = {s: np.asarray([e.score for e in by[s]], np.int64) for s in SPLITS}
        ids = [e.essay_id for e in by["test"]]

        const = float(np.floor(y["train"].mean() + 0.5))
        out["constant"]["per_prompt"][p] = {
            "value": const, "train_mean": float(y["train"].mean()),
            "dev": _score(y["dev"], np.full(len(y["dev"]), const), p),
            "test": _score(y["test"], np.full(len(y["test"]), const), p)}
        preds["constant"][p] = dict.fromkeys(ids, const)

        def length_xy():
            scaler = StandardScaler().fit(word_counts(text["train"]))
            return tuple(scaler.transform(word_counts(text[s])) for s in SPLITS)

        out["length"]["per_prompt"][p], raw = fit_select(length_xy, LENGTH_ALPHAS, y["train"],
                                                         y["dev"], y["test"], p)
        preds["length"][p] = dict(zip(ids, raw.tolist()))

        def tfidf_xy(with_length: bool):
            vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True,
                                  lowercase=True).fit(text["train"])
            if not with_length:
                return tuple(vec.transform(text[s]).tocsr() for s in SPLITS)
            scaler = StandardScaler().fit(length_features(text["train"]))
            return tuple(sparse.hstack([vec.transform(text[s]), sparse.csr_matrix(
                scaler.transform(length_features(text[s])))]).tocsr() for s in SPLITS)

        for m in ("tfidf", "tfidf+length"):
            out[m]["per_prompt"][p], raw = fit_select(
                partial(tfidf_xy, m == "tfidf+length"), TFIDF_ALPHAS, y["train"], y["dev"],
                y["test"], p)
            preds[m][p] = dict(zip(ids, raw.tolist()))
            out[m]["per_prompt"][p]["ngram_range"] = [1, 2]
        for m in METHOD_LABELS:
            r = out[m]["per_prompt"][p]
            log(f"baseline {m:12s} p{p}: dev QWK {r['dev']['qwk']:.4f}, test QWK "
                f"{r['test']['qwk']:.4f}, test RMSE {r['test']['rmse']:.4f}"
                + (f" (alpha {r['alpha']:g})" if "alpha" in r else ""))
    for m in METHOD_LABELS:
        pp = out[m]["per_prompt"]
        out[m]["test_mean_qwk"] = float(np.mean([pp[p]["test"]["qwk"] for p in prompts]))
        out[m]["test_mean_rmse"] = float(np.mean([pp[p]["test"]["rmse"] for p in prompts]))
        out[m]["dev_mean_qwk"] = float(np.mean([pp[p]["dev"]["qwk"] for p in prompts]))
        out[m]["n_test"] = {p: pp[p]["test"]["n"] for p in prompts}
    return out, preds


def check_refit(saved: dict[str, Any], refit: dict[str, Any], prompts: list[int],
                where: str) -> None:
    """The refitted baselines must reproduce the saved ones (ridge is deterministic); files
    from before tfidf-only existed call tfidf+length "tfidf"."""
    renamed = {} if "tfidf+length" in saved else {"tfidf": "tfidf+length"}
    for old, per in saved.items():
        new = renamed.get(old, old)
        for p in prompts:
            a = per["per_prompt"][str(p)]["test"]["qwk"]
            b = refit[new]["per_prompt"][p]["test"]["qwk"]
            if abs(a - b) > 1e-9:
                log(f"WARNING: {where}: {new} p{p} test QWK refitted {b:.4f}, saved {a:.4f}")
