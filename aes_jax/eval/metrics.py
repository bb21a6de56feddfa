"""Scoring metrics for automated essay scoring, in plain numpy.

Everything here is pure numpy so that evaluation never depends on scikit-learn at runtime;
scikit-learn serves only as the test oracle (tests/test_metrics.py).

Conventions that matter for comparability with the AES literature:

* QWK is computed per prompt (and per trait) on that prompt's own rating range and then
  averaged over prompts; it is never pooled across prompts. Pooling mixes score scales
  (ASAP prompt 1 is 2-12, prompt 8 is 0-60), so a pooled kappa mostly measures whether
  the model can tell prompts apart, and it is not the number papers report.
* Degenerate QWK: the kappa ratio is 0/0 only when every gold rating and every prediction
  is the same single value, i.e. the two vectors are identical. We return 1.0 there
  (perfect agreement), where sklearn's ``cohen_kappa_score`` returns nan by default; this
  equals sklearn with ``replace_undefined_by=1.0``. A nan would silently poison a mean
  over prompts, and identical vectors are agreement however one reads it.
* Real-valued predictions are turned into ratings by rounding half up and clipping to the
  prompt's range (``round_and_clip``); RMSE/MAE are reported on the raw predictions.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np

FISHER_CLIP = 0.999  # arctanh(+-1) is infinite; one perfect prompt must not dominate the mean


# --------------------------------------------------------------------------- validation


def _as_1d(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _as_ratings(name: str, values: Any) -> np.ndarray:
    """Integer ratings as int64. Float arrays holding whole numbers (as pandas produces) are
    accepted; anything else (2.5, nan, strings) is refused rather than silently truncated,
    because a truncated prediction would give a plausible but wrong kappa."""
    arr = _as_1d(name, values)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must hold integer ratings, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    bad = ~np.isfinite(arr) | (arr != np.round(arr))
    if bad.any():
        idx = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must hold integer ratings; element {idx} is {arr[idx]!r} "
            f"({int(bad.sum())} non-integer value(s)). Round real-valued predictions first "
            "(see round_and_clip).")
    return arr.astype(np.int64)


def _check_range(min_rating: int, max_rating: int) -> tuple[int, int]:
    lo, hi = int(min_rating), int(max_rating)
    if lo != min_rating or hi != max_rating or lo > hi:
        raise ValueError(f"rating range must be integers with min <= max, got "
                         f"({min_rating!r}, {max_rating!r})")
    return lo, hi


def _paired(y_true: Any, y_pred: Any, as_ratings: bool) -> tuple[np.ndarray, np.ndarray]:
    conv = _as_ratings if as_ratings else (lambda n, v: _as_1d(n, v).astype(np.float64))
    t, p = conv("y_true", y_true), conv("y_pred", y_pred)
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if t.size == 0:
        raise ValueError("y_true and y_pred are empty; a metric over no essays is undefined")
    return t, p


# --------------------------------------------------------------------------- agreement


def round_and_clip(y_pred_raw: Any, min_rating: int, max_rating: int) -> np.ndarray:
    """Real-valued predictions -> integer ratings in [min_rating, max_rating].

    Rounds half up (2.5 -> 3, 3.5 -> 4) rather than numpy's half-to-even, whose direction
    would depend on the parity of the neighbouring rating."""
    lo, hi = _check_range(min_rating, max_rating)
    raw = _as_1d("y_pred_raw", y_pred_raw).astype(np.float64)
    if not np.isfinite(raw).all():
        raise ValueError("y_pred_raw contains nan or inf; cannot turn it into ratings")
    return np.clip(np.floor(raw + 0.5), lo, hi).astype(np.int64)


def confusion_matrix(y_true: Any, y_pred: Any, min_rating: int, max_rating: int) -> np.ndarray:
    """Counts [K, K] with K = max - min + 1; row = gold rating, column = predicted rating
    (sklearn's orientation). Gold outside the range is an error (the range is wrong);
    predictions outside it are clipped, since a model may legitimately overshoot."""
    lo, hi = _check_range(min_rating, max_rating)
    t, p = _paired(y_true, y_pred, as_ratings=True)
    out = (t < lo) | (t > hi)
    if out.any():
        raise ValueError(f"y_true has {int(out.sum())} rating(s) outside [{lo}, {hi}], e.g. "
                         f"{int(t[out][0])}; check the prompt's rating range")
    p = np.clip(p, lo, hi)
    k = hi - lo + 1
    return np.bincount((t - lo) * k + (p - lo), minlength=k * k).reshape(k, k)


def qwk(y_true: Any, y_pred: Any, min_rating: int, max_rating: int) -> float:
    """Quadratic weighted kappa of integer ratings on [min_rating, max_rating].

    Equals ``sklearn.metrics.cohen_kappa_score(y_true, clip(y_pred), weights="quadratic",
    labels=range(min_rating, max_rating + 1))``, except in the one degenerate case (all
    ratings on both sides the same value, so the vectors are identical), where this
    returns 1.0 and sklearn returns nan. Predictions outside the range are clipped;
    non-integer values raise ValueError."""
    cm = confusion_matrix(y_true, y_pred, min_rating, max_rating).astype(np.float64)
    idx = np.arange(cm.shape[0], dtype=np.float64)
    weights = (idx[:, None] - idx[None, :]) ** 2
    expected = np.outer(cm.sum(axis=1), cm.sum(axis=0)) / cm.sum()
    disagreement_expected = float((weights * expected).sum())
    if disagreement_expected == 0.0:  # exact: a sum of non-negative terms, 0 only if all on one cell
        return 1.0
    return 1.0 - float((weights * cm).sum()) / disagreement_expected


def exact_accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of essays whose predicted rating equals the gold rating (pass rounded ratings)."""
    t, p = _paired(y_true, y_pred, as_ratings=False)
    return float(np.mean(t == p))


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error, on whatever scale the inputs are in."""
    t, p = _paired(y_true, y_pred, as_ratings=False)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error, on whatever scale the inputs are in."""
    t, p = _paired(y_true, y_pred, as_ratings=False)
    return float(np.mean(np.abs(t - p)))


def mcrmse(y_true: Any, y_pred: Any) -> float:
    """Mean column-wise RMSE over [N, T] arrays (Kaggle ELLIPSE / Feedback Prize metric):
    each of the T measures counts equally however its errors are spread."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim != 2 or t.shape != p.shape or t.shape[0] == 0:
        raise ValueError(f"mcrmse needs two non-empty [N, T] arrays of one shape, got "
                         f"{t.shape} and {p.shape}")
    return float(np.mean(np.sqrt(np.mean((t - p) ** 2, axis=0))))


def fisher_z_mean(kappas: Sequence[float]) -> float:
    """Average of kappas through Fisher's z: tanh(mean(arctanh(k))).

    Each kappa is first clipped to [-0.999, 0.999] (FISHER_CLIP) because arctanh(1) is
    infinite, and a single perfectly scored prompt would otherwise make the mean 1.0."""
    k = np.asarray(kappas, dtype=np.float64).reshape(-1)
    if k.size == 0:
        raise ValueError("fisher_z_mean of no kappas is undefined")
    if not np.isfinite(k).all():
        raise ValueError(f"fisher_z_mean got non-finite kappas: {k.tolist()}")
    return float(np.tanh(np.mean(np.arctanh(np.clip(k, -FISHER_CLIP, FISHER_CLIP)))))


# --------------------------------------------------------------------------- reports


def _prompt_key(p: Any) -> Hashable:
    """numpy scalars -> Python ints/strs, so reports serialise to JSON and index naturally."""
    return p.item() if isinstance(p, np.generic) else p


def _scores(y_true: np.ndarray, y_raw: np.ndarray, lo: int, hi: int) -> dict[str, float | int]:
    rated = round_and_clip(y_raw, lo, hi)
    return {"qwk": qwk(y_true, rated, lo, hi), "rmse": rmse(y_true, y_raw),
            "mae": mae(y_true, y_raw), "exact": exact_accuracy(y_true, rated),
            "n": int(y_true.size)}


def _summary(per_prompt: dict) -> dict[str, Any]:
    kappas = [row["qwk"] for row in per_prompt.values()]
    return {"per_prompt": per_prompt, "mean_qwk": float(np.mean(kappas)),
            "fisher_z_qwk": fisher_z_mean(kappas)}


def per_prompt_report(essay_prompts: Any, y_true: Any, y_pred_raw: Any,
                      ranges: Mapping[Any, tuple[int, int]]) -> dict[str, Any]:
    """Per-prompt scores and their averages.

    ``y_pred_raw`` are real-valued predictions on the original score scale. For each prompt
    they are rounded half up and clipped to ``ranges[prompt]`` for QWK and exact accuracy;
    RMSE and MAE use the raw (unrounded, unclipped) predictions so they reflect the
    regressor itself. QWK is NEVER pooled across prompts: ``mean_qwk`` is the plain mean of
    the per-prompt kappas and ``fisher_z_qwk`` their Fisher-z mean.

    Returns {"per_prompt": {prompt: {"qwk", "rmse", "mae", "exact", "n"}}, "mean_qwk",
    "fisher_z_qwk"}, prompts in sorted order."""
    prompts = _as_1d("essay_prompts", essay_prompts)
    t = _as_1d("y_true", y_true)
    raw = _as_1d("y_pred_raw", y_pred_raw).astype(np.float64)
    if not prompts.shape == t.shape == raw.shape:
        raise ValueError(f"essay_prompts, y_true and y_pred_raw differ in length: "
                         f"{prompts.shape[0]}, {t.shape[0]}, {raw.shape[0]}")
    if prompts.size == 0:
        raise ValueError("per_prompt_report got no essays")
    per_prompt = {}
    for p in np.unique(prompts):
        key = _prompt_key(p)
        if key not in ranges:
            raise KeyError(f"no rating range for prompt {key!r}; ranges has {sorted(ranges)}")
        lo, hi = ranges[key]
        mask = prompts == p
        per_prompt[key] = _scores(_as_ratings(f"y_true (prompt {key!r})", t[mask]),
                                  raw[mask], lo, hi)
    return _summary(per_prompt)


def per_trait_report(essay_prompts: Any, trues: Mapping[str, Any], preds: Mapping[str, Any],
                     ranges: Mapping[tuple[Any, str], tuple[int, int]]) -> dict[str, Any]:
    """Per-prompt scores for each trait (ASAP++ / ELLIPSE style multi-trait scoring).

    Not every prompt is scored on every trait: an essay whose gold for a trait is NaN is
    skipped for that trait and counted in ``skipped[trait]`` (so a silently empty trait is
    visible). A (prompt, trait) with any gold needs ``ranges[(prompt, trait)] = (lo, hi)``.
    QWK is never pooled across prompts or traits.

    Returns {"per_trait": {trait: per_prompt_report(...) for the essays it covers},
    "skipped": {trait: n_essays_without_gold}, "mean_qwk": mean over all (prompt, trait)
    kappas, "fisher_z_qwk": their Fisher-z mean}. A trait with no gold at all appears only
    in "skipped"."""
    prompts = _as_1d("essay_prompts", essay_prompts)
    if set(trues) != set(preds):
        raise ValueError(f"trues and preds name different traits: {sorted(trues)} vs "
                         f"{sorted(preds)}")
    per_trait, skipped, kappas = {}, {}, []
    for trait in trues:
        t = _as_1d(f"trues[{trait!r}]", trues[trait]).astype(np.float64)
        raw = _as_1d(f"preds[{trait!r}]", preds[trait]).astype(np.float64)
        if not prompts.shape == t.shape == raw.shape:
            raise ValueError(f"trait {trait!r}: essay_prompts, gold and predictions differ in "
                             f"length: {prompts.shape[0]}, {t.shape[0]}, {raw.shape[0]}")
        has_gold = ~np.isnan(t)
        skipped[trait] = int((~has_gold).sum())
        if not has_gold.any():
            continue
        trait_ranges = {_prompt_key(p): ranges[(_prompt_key(p), trait)]
                        for p in np.unique(prompts[has_gold]) if (_prompt_key(p), trait) in ranges}
        try:
            report = per_prompt_report(prompts[has_gold], t[has_gold], raw[has_gold],
                                       trait_ranges)
        except (KeyError, ValueError) as err:
            raise type(err)(f"trait {trait!r}: {err.args[0] if err.args else err}") from err
        per_trait[trait] = report
        kappas.extend(row["qwk"] for row in report["per_prompt"].values())
    if not kappas:
        raise ValueError("per_trait_report: no trait has any gold rating")
    return {"per_trait": per_trait, "skipped": skipped, "mean_qwk": float(np.mean(kappas)),
            "fisher_z_qwk": fisher_z_mean(kappas)}


def trait_key(trait: str) -> str:
    """A trait name as a metric / column key: "Word Choice" -> "word_choice"."""
    return trait.lower().replace(" ", "_")


def trait_report(gold_digits: np.ndarray, pred_digits: np.ndarray, traits: Sequence[str],
                 codecs: Sequence[Any]) -> dict[str, Any]:
    """QWK per trait on the digit scale and MCRMSE on the original score scale.

    gold_digits, pred_digits [N, K], column k the digits of ``traits[k]``, read with
    ``codecs[k]``: ``.digit_range -> (lo, hi)`` and ``.to_scores(digits)`` (digits ->
    original scores, linear for fractional digits). Gold must hold whole digits.

        qwk_per_trait[t] = qwk(gold_t, round_and_clip(pred_t, lo_t, hi_t), lo_t, hi_t)
        qwk_mean         = mean over traits of qwk_per_trait
        mcrmse           = mcrmse([to_scores_t(gold_t)], [to_scores_t(pred_t)])

    Predictions may be real-valued (teacher-forced expected digits) or integer (parsed
    answers; rounding then changes nothing). MCRMSE uses the unrounded predictions, so
    it measures the expected value itself rather than the rating made from it.

    Returns {"qwk_per_trait": {trait: qwk}, "qwk_mean": float, "mcrmse": float}, traits in
    the given order.
    """
    gold = np.asarray(gold_digits, dtype=np.float64)
    pred = np.asarray(pred_digits, dtype=np.float64)
    k = len(traits)
    if gold.ndim != 2 or gold.shape != pred.shape or gold.shape[1] != k or gold.shape[0] == 0:
        raise ValueError(f"gold_digits and pred_digits must both be non-empty [N, {k}] (one "
                         f"column per trait), got {gold.shape} and {pred.shape}")
    if len(codecs) != k:
        raise ValueError(f"{k} traits but {len(codecs)} codecs; need one codec per trait")
    if len(set(traits)) != k:
        raise ValueError(f"trait names repeat: {list(traits)}; their QWKs would overwrite "
                         "each other")
    qwks: dict[str, float] = {}
    for j, (trait, codec) in enumerate(zip(traits, codecs)):
        lo, hi = codec.digit_range
        qwks[trait] = qwk(_as_ratings(f"gold_digits[:, {j}] ({trait!r})", gold[:, j]),
                          round_and_clip(pred[:, j], lo, hi), lo, hi)
    return {"qwk_per_trait": qwks, "qwk_mean": float(np.mean(list(qwks.values()))),
            "mcrmse": trait_mcrmse(gold, pred, codecs)}


def trait_mcrmse(gold_digits: Any, pred_digits: Any, codecs: Sequence[Any]) -> float:
    """MCRMSE on the original score scale of [N, K] digits (column k read with
    ``codecs[k].to_scores``), predictions used as they are (rounded or not)."""
    gold = np.asarray(gold_digits, dtype=np.float64)
    pred = np.asarray(pred_digits, dtype=np.float64)
    if gold.ndim != 2 or gold.shape != pred.shape or gold.shape[1] != len(codecs):
        raise ValueError(f"trait_mcrmse needs [N, {len(codecs)}] gold and predictions, got "
                         f"{gold.shape} and {pred.shape}")

    def scores(digits: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(c.to_scores(digits[:, k]), dtype=np.float64)
                         for k, c in enumerate(codecs)], axis=1)
    return mcrmse(scores(gold), scores(pred))


def lm_summary(outputs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """`loss` (mean NLL from `losses.lm.nll_sums` outputs) and `perplexity` = exp(loss)."""
    metrics = mean_from_sums(outputs)
    metrics["perplexity"] = float(np.exp(min(metrics["loss"], 50.0)))
    return metrics


def mean_from_sums(outputs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Adds `<name>_sum` and `<name>_count` over eval batches and reports `<name>` =
    sum / count (the per-batch outputs of a task's eval_step)."""
    totals: dict[str, float] = {}
    for out in outputs:
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + float(v)
    return {k[: -len("_sum")]: v / max(totals.get(k[: -len("_sum")] + "_count", 0.0), 1e-12)
            for k, v in totals.items() if k.endswith("_sum")}


def pearson(y_true: Any, y_pred: Any) -> float:
    """Pearson's r; 0.0 when either side is constant (no linear relation to speak of)."""
    t, p = _paired(y_true, y_pred, as_ratings=False)
    if len(t) < 2 or np.std(t) == 0 or np.std(p) == 0:
        return 0.0
    return float(np.corrcoef(t, p)[0, 1])


def grouped_pair_accuracy(groups: Any, y_true: Any, y_pred: Any) -> tuple[float, int]:
    """(share, count) of the pairs inside a group (e.g. the explanations of one question)
    with different true values that the predictions order the same way; a predicted tie
    counts half. (0.0, 0) when no group holds such a pair."""
    t, p = _paired(y_true, y_pred, as_ratings=False)
    g = _as_1d("groups", groups)
    if len(g) != len(t):
        raise ValueError(f"groups has {len(g)} values, y_true {len(t)}")
    correct, count = 0.0, 0
    for key in np.unique(g):
        idx = np.flatnonzero(g == key)
        dt = np.sign(t[idx][:, None] - t[idx][None, :])
        dp = np.sign(p[idx][:, None] - p[idx][None, :])
        upper = np.triu(np.ones_like(dt, dtype=bool), 1) & (dt != 0)
        correct += float(np.sum(np.where(dp[upper] == 0, 0.5, dp[upper] == dt[upper])))
        count += int(upper.sum())
    return (correct / count if count else 0.0), count
