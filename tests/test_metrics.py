"""aes_jax.eval.metrics against scikit-learn (the oracle) and hand-computed numbers, and
aes_jax.eval.plots writing readable PNGs of the promised size."""

import json
import math
import warnings

import matplotlib.image as mpimg
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from aes_jax.eval import metrics, plots


def sk_qwk(t, p, lo, hi, undefined=1.0):
    """sklearn's QWK on clipped predictions; `undefined` is our documented degenerate value.
    sklearn's warnings about that case (and about single-label inputs) are expected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cohen_kappa_score(t, np.clip(p, lo, hi), weights="quadratic",
                                 labels=list(range(lo, hi + 1)), replace_undefined_by=undefined)


# --------------------------------------------------------------------------- QWK


def test_qwk_matches_sklearn_on_random_cases():
    rng = np.random.default_rng(0)
    for case in range(300):
        lo = int(rng.integers(-2, 4))
        hi = lo + int(rng.integers(0, 13))
        n = int(rng.integers(1, 120))
        t = rng.integers(lo, hi + 1, size=n)
        kind = case % 4
        if kind == 0:    # independent, some predictions beyond the range (clipped)
            p = rng.integers(lo - 3, hi + 4, size=n)
        elif kind == 1:  # noisy copy of the gold
            p = t + rng.integers(-1, 2, size=n)
        elif kind == 2:  # narrow gold distribution, few labels used
            t = rng.integers(lo, min(lo + 1, hi) + 1, size=n)
            p = rng.integers(lo, hi + 1, size=n)
        else:            # float arrays holding whole numbers are accepted
            p = rng.integers(lo, hi + 1, size=n).astype(np.float64)
        got = metrics.qwk(t, p, lo, hi)
        assert got == pytest.approx(sk_qwk(t, p, lo, hi), abs=1e-12), (case, lo, hi, n)


@pytest.mark.parametrize("lo,hi", [(1, 4), (0, 3), (2, 12), (0, 60)])
def test_qwk_perfect_reversed_and_constant(lo, hi):
    t = np.arange(lo, hi + 1)
    assert metrics.qwk(t, t, lo, hi) == pytest.approx(1.0)
    assert metrics.qwk(t, t[::-1], lo, hi) == pytest.approx(sk_qwk(t, t[::-1], lo, hi))
    assert metrics.qwk(t, t[::-1], lo, hi) == pytest.approx(-1.0)
    constant = np.full_like(t, (lo + hi) // 2)
    assert metrics.qwk(t, constant, lo, hi) == pytest.approx(0.0)
    assert metrics.qwk(t, constant, lo, hi) == pytest.approx(sk_qwk(t, constant, lo, hi))


def test_qwk_degenerate_case_is_one_where_sklearn_gives_nan():
    t = p = np.array([2, 2, 2])
    assert metrics.qwk(t, p, 1, 4) == 1.0
    with pytest.warns(Warning, match="undefined"):
        assert math.isnan(cohen_kappa_score(t, p, weights="quadratic", labels=[1, 2, 3, 4]))
    assert metrics.qwk([3], [3], 3, 3) == 1.0  # one-rating scale: always degenerate
    # Both sides constant but different is *not* degenerate: kappa 0, as in sklearn.
    assert metrics.qwk([2, 2, 2], [3, 3, 3], 1, 4) == pytest.approx(0.0)
    assert sk_qwk([2, 2, 2], [3, 3, 3], 1, 4) == pytest.approx(0.0)


def test_qwk_clips_predictions_but_not_gold():
    t = np.array([1, 2, 3, 4, 4])
    assert metrics.qwk(t, [-5, 2, 3, 9, 4], 1, 4) == metrics.qwk(t, [1, 2, 3, 4, 4], 1, 4)
    assert metrics.qwk(t, [-5, 2, 3, 9, 4], 1, 4) == 1.0
    with pytest.raises(ValueError, match="outside"):
        metrics.qwk([0, 1, 2], [1, 1, 2], 1, 4)


@pytest.mark.parametrize("bad", [[1, 2.5, 3], [1, np.nan, 3], ["a", "b", "c"], [True, False, True]])
def test_qwk_rejects_non_integer_ratings(bad):
    with pytest.raises(ValueError, match="integer ratings"):
        metrics.qwk([1, 2, 3], bad, 1, 4)


def test_qwk_rejects_bad_shapes_and_ranges():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.qwk([1, 2], [1, 2, 3], 1, 4)
    with pytest.raises(ValueError, match="empty"):
        metrics.qwk([], [], 1, 4)
    with pytest.raises(ValueError, match="min <= max"):
        metrics.qwk([1], [1], 4, 1)


def test_confusion_matrix_matches_sklearn():
    rng = np.random.default_rng(1)
    for _ in range(50):
        lo = int(rng.integers(0, 3))
        hi = lo + int(rng.integers(1, 8))
        t = rng.integers(lo, hi + 1, size=60)
        p = rng.integers(lo - 2, hi + 3, size=60)
        ours = metrics.confusion_matrix(t, p, lo, hi)
        theirs = sk_confusion_matrix(t, np.clip(p, lo, hi), labels=list(range(lo, hi + 1)))
        np.testing.assert_array_equal(ours, theirs)
        assert ours.sum() == 60


def test_round_and_clip_rounds_half_up():
    got = metrics.round_and_clip([0.49, 0.5, 1.5, 2.5, -3.0, 7.6], 0, 5)
    np.testing.assert_array_equal(got, [0, 1, 2, 3, 0, 5])


# --------------------------------------------------------------------------- simple errors


def test_rmse_mae_exact_mcrmse():
    t, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 1.0, 4.0])
    assert metrics.rmse(t, p) == pytest.approx(math.sqrt((0.25 + 4.0) / 4))
    assert metrics.mae(t, p) == pytest.approx((0.5 + 2.0) / 4)
    assert metrics.exact_accuracy([1, 2, 3, 4], [1, 2, 1, 4]) == 0.75

    rng = np.random.default_rng(2)
    yt, yp = rng.normal(size=(37, 6)), rng.normal(size=(37, 6))
    direct = np.mean([math.sqrt(sum((yt[i, j] - yp[i, j]) ** 2 for i in range(37)) / 37)
                      for j in range(6)])
    assert metrics.mcrmse(yt, yp) == pytest.approx(direct, rel=1e-12)
    # Not the same as one RMSE over all cells when columns differ in error size.
    yp[:, 0] += 5.0
    assert metrics.mcrmse(yt, yp) != pytest.approx(metrics.rmse(yt.ravel(), yp.ravel()))
    with pytest.raises(ValueError, match=r"\[N, T\]"):
        metrics.mcrmse(yt[:, 0], yp[:, 0])


def test_fisher_z_mean_known_numbers():
    # tanh((arctanh 0.5 + arctanh 0.7) / 2) = tanh((0.549306 + 0.867301) / 2)
    assert metrics.fisher_z_mean([0.5, 0.7]) == pytest.approx(0.6096, abs=1e-4)
    assert metrics.fisher_z_mean([0.3]) == pytest.approx(0.3)
    assert metrics.fisher_z_mean([0.4, -0.4]) == pytest.approx(0.0, abs=1e-15)
    # Clipping at 0.999: perfect kappas stay finite and do not swamp the others.
    assert metrics.fisher_z_mean([1.0, 1.0]) == pytest.approx(0.999)
    assert metrics.fisher_z_mean([1.0, 0.0]) == pytest.approx(math.tanh(math.atanh(0.999) / 2))
    assert metrics.fisher_z_mean([1.0, 0.0]) == pytest.approx(0.9562, abs=1e-4)
    for bad in ([], [0.5, float("nan")]):
        with pytest.raises(ValueError):
            metrics.fisher_z_mean(bad)


# --------------------------------------------------------------------------- reports

# Prompt 1 on 1-4: predictions round onto the gold exactly.
# Prompt 2 on 0-2: 1.5 rounds up to 2, 2.9 rounds to 3 and is clipped to 2.
PROMPTS = np.array([1, 1, 1, 1, 2, 2, 2, 2])
GOLD = np.array([1, 2, 3, 4, 0, 1, 2, 2])
RAW = np.array([1.2, 2.4, 2.6, 4.0, 0.4, 1.5, 1.0, 2.9])
RANGES = {1: (1, 4), 2: (0, 2)}


def test_per_prompt_report_exact_numbers():
    report = metrics.per_prompt_report(PROMPTS, GOLD, RAW, RANGES)
    p1, p2 = report["per_prompt"][1], report["per_prompt"][2]
    assert p1 == pytest.approx({"qwk": 1.0, "rmse": 0.3, "mae": 0.25, "exact": 1.0, "n": 4})
    # Prompt 2 rated [0, 2, 1, 2]: observed weighted disagreement 2, expected 22/4 -> 7/11.
    assert p2 == pytest.approx({"qwk": 7 / 11, "rmse": math.sqrt(2.22 / 4), "mae": 0.7,
                                "exact": 0.5, "n": 4})
    assert p2["qwk"] == pytest.approx(sk_qwk(GOLD[4:], [0, 2, 1, 2], 0, 2))
    assert report["mean_qwk"] == pytest.approx(9 / 11)
    assert report["fisher_z_qwk"] == pytest.approx(
        math.tanh((math.atanh(0.999) + math.atanh(7 / 11)) / 2))
    json.dumps(report)  # plain Python types, loggable as is


def test_per_prompt_report_does_not_pool():
    report = metrics.per_prompt_report(PROMPTS, GOLD, RAW, RANGES)
    rated = np.concatenate([metrics.round_and_clip(RAW[:4], 1, 4),
                            metrics.round_and_clip(RAW[4:], 0, 2)])
    pooled = metrics.qwk(GOLD, rated, 0, 4)
    assert pooled == pytest.approx(sk_qwk(GOLD, rated, 0, 4))
    assert abs(pooled - report["mean_qwk"]) > 0.05
    assert abs(pooled - report["fisher_z_qwk"]) > 0.05


def test_per_prompt_report_errors():
    with pytest.raises(KeyError, match="prompt 2"):
        metrics.per_prompt_report(PROMPTS, GOLD, RAW, {1: (1, 4)})
    with pytest.raises(ValueError, match="differ in length"):
        metrics.per_prompt_report(PROMPTS[:-1], GOLD, RAW, RANGES)
    raw = RAW.copy()
    raw[3] = np.nan
    with pytest.raises(ValueError, match="nan"):
        metrics.per_prompt_report(PROMPTS, GOLD, raw, RANGES)


def test_per_trait_report_skips_missing_gold():
    trues = {"content": GOLD.astype(float),
             "organization": np.array([1, 2, 3, 4, np.nan, np.nan, np.nan, np.nan]),
             "style": np.full(8, np.nan)}
    # organization on prompt 1 only; predictions for essays without gold are never read
    preds = {"content": RAW, "organization": np.array([1.2, 2.6, 2.4, 3.4, 9, 9, 9, 9]),
             "style": np.zeros(8)}
    ranges = {(1, "content"): (1, 4), (2, "content"): (0, 2), (1, "organization"): (1, 4)}
    report = metrics.per_trait_report(PROMPTS, trues, preds, ranges)
    assert report["skipped"] == {"content": 0, "organization": 4, "style": 8}
    assert set(report["per_trait"]) == {"content", "organization"}
    content = report["per_trait"]["content"]["per_prompt"]
    assert content[1] == pytest.approx({"qwk": 1.0, "rmse": 0.3, "mae": 0.25, "exact": 1.0,
                                        "n": 4})
    assert content[2] == pytest.approx({"qwk": 7 / 11, "rmse": math.sqrt(2.22 / 4),
                                        "mae": 0.7, "exact": 0.5, "n": 4})
    # organization rated [1, 3, 2, 3] against [1, 2, 3, 4]: observed weighted
    # disagreement 0 + 1 + 1 + 1 = 3; expected = sum_j c_j sum_i (i - j)^2 / 4 with
    # predicted counts c = (1, 1, 2, 0) and row sums (14, 6, 6, 14) -> 32 / 4 = 8; 1 - 3/8.
    organization = report["per_trait"]["organization"]["per_prompt"]
    assert list(organization) == [1]
    assert organization[1] == pytest.approx({"qwk": 5 / 8, "rmse": math.sqrt(1.12 / 4),
                                             "mae": 0.5, "exact": 0.25, "n": 4})
    assert organization[1]["qwk"] == pytest.approx(sk_qwk([1, 2, 3, 4], [1, 3, 2, 3], 1, 4))
    # Averages over the three (prompt, trait) kappas, never a pooled kappa.
    assert report["mean_qwk"] == pytest.approx((1.0 + 7 / 11 + 5 / 8) / 3)
    assert report["fisher_z_qwk"] == pytest.approx(math.tanh(
        (math.atanh(0.999) + math.atanh(7 / 11) + math.atanh(5 / 8)) / 3))
    json.dumps(report)


def test_per_trait_report_errors_name_the_trait():
    trues, preds = {"content": GOLD.astype(float)}, {"content": RAW}
    with pytest.raises(KeyError, match="content"):
        metrics.per_trait_report(PROMPTS, trues, preds, {(1, "content"): (1, 4)})
    with pytest.raises(ValueError, match="different traits"):
        metrics.per_trait_report(PROMPTS, trues, {"style": RAW}, {})
    with pytest.raises(ValueError, match="no trait has any gold"):
        metrics.per_trait_report(PROMPTS, {"x": np.full(8, np.nan)}, {"x": RAW}, {})


# --------------------------------------------------------------------------- trait reports


class LinearCodec:
    """Test double for a score codec: digits lo..hi <-> scores first + (d - lo) * step."""

    def __init__(self, lo: int, hi: int, first: float, step: float):
        self.digit_range = (lo, hi)
        self._first, self._step = first, step

    def to_scores(self, digits):
        return self._first + (np.asarray(digits, np.float64) - self.digit_range[0]) * self._step


TRAITS = ["Cohesion", "Word Choice", "Conventions"]
CODECS = [LinearCodec(1, 9, 1.0, 0.5),   # ELLIPSE-like: digits 1..9 are 1.0..5.0 in halves
          LinearCodec(0, 3, 0.0, 1.0),   # identity digits
          LinearCodec(2, 6, 10.0, 5.0)]  # a scale far from the digits: MCRMSE must use it


def _trait_case(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    gold = np.stack([rng.integers(c.digit_range[0], c.digit_range[1] + 1, n)
                     for c in CODECS], axis=1).astype(np.float32)
    # Real-valued predictions near the gold, some beyond the range (clipped for QWK only).
    pred = (gold + rng.normal(0, 1.2, gold.shape)).astype(np.float32)
    return gold, pred


def _numpy_mcrmse(gold, pred):
    t = np.stack([c.to_scores(gold[:, k]) for k, c in enumerate(CODECS)], axis=1)
    p = np.stack([c.to_scores(pred[:, k]) for k, c in enumerate(CODECS)], axis=1)
    return float(np.mean(np.sqrt(np.mean((t - p) ** 2, axis=0))))


def test_trait_key():
    assert metrics.trait_key("Word Choice") == "word_choice"
    assert metrics.trait_key("cohesion") == "cohesion"
    assert metrics.trait_key("Sentence  Fluency") == "sentence__fluency"


@pytest.mark.parametrize("seed", range(5))
def test_trait_report_matches_sklearn_and_numpy(seed):
    gold, pred = _trait_case(seed)
    report = metrics.trait_report(gold, pred, TRAITS, CODECS)
    assert list(report["qwk_per_trait"]) == TRAITS
    for k, (trait, codec) in enumerate(zip(TRAITS, CODECS)):
        lo, hi = codec.digit_range
        rated = np.clip(np.floor(pred[:, k].astype(np.float64) + 0.5), lo, hi).astype(int)
        assert report["qwk_per_trait"][trait] == pytest.approx(
            sk_qwk(gold[:, k].astype(int), rated, lo, hi), abs=1e-12)
    assert report["qwk_mean"] == pytest.approx(np.mean(list(report["qwk_per_trait"].values())))
    # MCRMSE on the original scale and on the unrounded predictions.
    assert report["mcrmse"] == pytest.approx(_numpy_mcrmse(gold, pred), rel=1e-12)
    rounded = np.floor(pred + 0.5)
    assert report["mcrmse"] != pytest.approx(_numpy_mcrmse(gold, rounded), rel=1e-6)


def test_trait_report_integer_predictions_are_used_as_they_are():
    # Parsed answers are whole digits (possibly out of range); rounding must not move
    # them, so the real-valued and integer paths give the same numbers.
    gold, pred = _trait_case(7)
    pred_int = np.floor(pred + 0.5).astype(np.int64)
    as_int = metrics.trait_report(gold.astype(np.int64), pred_int, TRAITS, CODECS)
    as_float = metrics.trait_report(gold, pred_int.astype(np.float32), TRAITS, CODECS)
    assert as_int == as_float
    for k, (trait, codec) in enumerate(zip(TRAITS, CODECS)):
        lo, hi = codec.digit_range
        assert as_int["qwk_per_trait"][trait] == pytest.approx(
            sk_qwk(gold[:, k].astype(int), pred_int[:, k], lo, hi), abs=1e-12)
    assert as_int["mcrmse"] == pytest.approx(_numpy_mcrmse(gold, pred_int), rel=1e-12)


def test_trait_mcrmse_hand_numbers():
    # Cohesion digits 1-9 = 1.0-5.0 in halves: gold 3 -> 2.0, pred 4.5 -> 2.75 (error 0.75);
    # gold 5 -> 3.0, pred 5 -> 3.0. Word Choice identity: errors 1 and 0. Conventions
    # 10 + 5 (d - 2): gold 2 -> 10, pred 2.2 -> 11 (error 1); gold 6 -> 30, pred 6 -> 30.
    gold = np.array([[3, 1, 2], [5, 2, 6]])
    pred = np.array([[4.5, 2, 2.2], [5, 2, 6]])
    want = (math.sqrt(0.75 ** 2 / 2) + math.sqrt(1 / 2) + math.sqrt(1 / 2)) / 3
    assert metrics.trait_mcrmse(gold, pred, CODECS) == pytest.approx(want, rel=1e-12)
    assert metrics.trait_report(gold, pred, TRAITS, CODECS)["mcrmse"] == pytest.approx(want)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        metrics.trait_mcrmse(gold[:, :2], pred[:, :2], CODECS)


def test_trait_report_perfect_predictions():
    gold, _ = _trait_case(1)
    report = metrics.trait_report(gold, gold, TRAITS, CODECS)
    assert report["qwk_per_trait"] == {t: 1.0 for t in TRAITS}
    assert report["qwk_mean"] == 1.0 and report["mcrmse"] == 0.0


def test_trait_report_errors():
    gold, pred = _trait_case(2, n=5)
    with pytest.raises(ValueError, match="one column per trait"):
        metrics.trait_report(gold[:, :2], pred[:, :2], TRAITS, CODECS)
    with pytest.raises(ValueError, match="one column per trait"):
        metrics.trait_report(gold, pred[:4], TRAITS, CODECS)
    with pytest.raises(ValueError, match="one column per trait"):
        metrics.trait_report(gold[:0], pred[:0], TRAITS, CODECS)
    with pytest.raises(ValueError, match="2 codecs"):
        metrics.trait_report(gold, pred, TRAITS, CODECS[:2])
    with pytest.raises(ValueError, match="repeat"):
        metrics.trait_report(gold, pred, ["a", "b", "a"], CODECS)
    fractional = gold.copy()
    fractional[3, 1] = 1.5
    with pytest.raises(ValueError, match="Word Choice"):
        metrics.trait_report(fractional, pred, TRAITS, CODECS)


# --------------------------------------------------------------------------- plots


def _png_shape(path):
    assert path.exists() and path.stat().st_size > 0
    return mpimg.imread(path).shape


def test_confusion_matrix_png(tmp_path):
    cm = metrics.confusion_matrix(GOLD[:4], [1, 2, 2, 4], 1, 4)
    out = plots.confusion_matrix_png(cm, [1, 2, 3, 4], "prompt 1", tmp_path / "sub" / "cm.png")
    assert out == tmp_path / "sub" / "cm.png"
    assert _png_shape(out) == (500, 600, 4)
    big = plots.confusion_matrix_png(np.eye(61, dtype=int), list(range(61)), "prompt 8",
                                     tmp_path / "cm61.png")
    h, w, _ = _png_shape(big)
    assert (w, h) == tuple(int(s * plots.DPI) for s in plots.confusion_figsize(61))
    with pytest.raises(ValueError, match="does not match"):
        plots.confusion_matrix_png(cm, [1, 2, 3], "bad", tmp_path / "bad.png")


def test_learning_curve_png(tmp_path):
    log = tmp_path / "run" / "metrics.jsonl"
    log.parent.mkdir()
    lines = [{"step": s, "loss": 2.0 / s, "lr": 1e-3} for s in range(1, 21)]
    lines += [{"step": s, "eval_loss": 2.5 / s, "eval_mean_qwk": 0.1 * s ** 0.5} for s in (5, 10, 15, 20)]
    lines += [{"step": 3, "loss": float("nan")}]  # resume re-log of step 3; nan is skipped
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = plots.learning_curve_png(log, tmp_path / "curve.png")
    assert _png_shape(out) == (500, 800, 4)
    # Only the QWK-like key present is still a plot.
    only_qwk = tmp_path / "qwk.jsonl"
    only_qwk.write_text(json.dumps({"step": 1, "eval_mean_qwk": 0.5}) + "\n")
    assert _png_shape(plots.learning_curve_png(only_qwk, tmp_path / "c2.png")) == (500, 800, 4)


def test_learning_curve_png_errors_name_the_file(tmp_path):
    empty = tmp_path / "metrics.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="metrics.jsonl has no metric records"):
        plots.learning_curve_png(empty, tmp_path / "x.png")
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"step": 1, "lr": 0.1}) + "\n")
    with pytest.raises(ValueError, match=r"other.jsonl has none of the keys.*lr"):
        plots.learning_curve_png(other, tmp_path / "x.png")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"step": 1, "loss": 1}\n{"step": 2, \n')
    with pytest.raises(ValueError, match="broken.jsonl:2"):
        plots.learning_curve_png(broken, tmp_path / "x.png")


def test_qwk_vs_m_png(tmp_path):
    ms = [1, 2, 4, 8, 16]
    out = plots.qwk_vs_m_png(ms, {"majority": [0.6, 0.65, 0.68, 0.7, 0.71],
                                  "mean": [0.6, 0.66, 0.7, 0.72, 0.72]}, tmp_path / "m.png")
    assert _png_shape(out) == (450, 700, 4)
    with pytest.raises(ValueError, match="'mean' has 2 values"):
        plots.qwk_vs_m_png(ms, {"mean": [0.1, 0.2]}, tmp_path / "bad.png")


def test_length_histogram_png(tmp_path):
    rng = np.random.default_rng(3)
    lengths = {1: rng.integers(100, 900, 200), 2: rng.integers(50, 400, 150), 3: []}
    out = plots.length_histogram_png(lengths, 512, tmp_path / "len.png")
    assert _png_shape(out) == (500, 800, 4)
    out = plots.length_histogram_png(lengths, None, tmp_path / "len_nolimit.png")
    assert _png_shape(out) == (500, 800, 4)
    with pytest.raises(ValueError, match="no lengths"):
        plots.length_histogram_png({1: []}, 512, tmp_path / "none.png")
