"""bench/trm_quality_report.py's comparison table on made-up predictions: every baseline beside
the TRM for every prompt, and a loss said as one (no data, no training)."""

import numpy as np

from aes_jax.eval import metrics
from bench import trm_quality_report as tq
from bench.trm_baselines import METHOD_LABELS


def _made_up(seed=0):
    rng = np.random.default_rng(seed)
    gold = {p: rng.integers(0, 4, 80) for p in (3, 4)}
    # On prompt 3 the TRM is worse than the length baseline, on prompt 4 better.
    noise = {"trm": {3: 1.2, 4: 0.3}, "length": {3: 0.3, 4: 1.0}, "tfidf": {3: 0.8, 4: 0.8},
             "tfidf+length": {3: 0.6, 4: 0.6}}
    raw = {m: {p: gold[p] + rng.normal(0, s, 80) for p, s in per.items()}
           for m, per in noise.items()}
    raw["constant"] = {p: np.full(80, 2.0) for p in gold}

    def qwk(m, p):
        return metrics.qwk(gold[p], metrics.round_and_clip(raw[m][p], 0, 3), 0, 3)

    trm_preds = {p: {i: (int(gold[p][i]), float(raw["trm"][p][i])) for i in range(80)}
                 for p in gold}
    base_preds = {m: {p: dict(enumerate(raw[m][p].tolist())) for p in gold}
                  for m in METHOD_LABELS}
    trm = {p: {"best": qwk("trm", p), "best_step": 300, "last": 0.5, "last_step": 450}
           for p in gold}
    base_qwk = {m: {p: qwk(m, p) for p in gold} for m in METHOD_LABELS}
    return trm, base_qwk, trm_preds, base_preds


def test_comparison_puts_every_baseline_beside_the_trm(capsys):
    trm, base_qwk, trm_preds, base_preds = _made_up()
    rows = tq.comparison([3, 4], trm, base_qwk, trm_preds, base_preds, resamples=50)
    assert [r["prompt"] for r in rows] == [3, 4, "mean"]
    p3, p4, _ = rows
    assert p3["best_baseline"] == "length" and p4["best_baseline"] == "tfidf+length"
    for r in (p3, p4):
        best = max(base_qwk[m][r["prompt"]] for m in METHOD_LABELS)
        assert np.isclose(r["margin"], trm[r["prompt"]]["best"] - best)
        assert np.isclose(r["bootstrap"]["observed"], r["margin"])
    assert p3["margin"] < 0 and p3["verdict"].startswith("TRM below best baseline")
    assert p4["margin"] > 0 and p4["verdict"].startswith("TRM above best baseline")
    tq.print_comparison(rows, 50)
    table = capsys.readouterr().out
    for text in ("constant", "length", "tfidf", "tfidf+length", "TRM best-dev", "TRM last",
                 "TRM below best baseline", "@300"):
        assert text in table


def test_verdict_without_interval():
    assert tq.verdict_line(-0.01, None) == "TRM below best baseline (no interval)"
    assert tq.verdict_line(0.02, [0.001, 0.04]).endswith("interval excludes 0")
