"""Scores from Stage-1 utilities alone: an essay's utility placed among anchor essays of
known score by an isotonic (monotone non-decreasing) fit of utility -> score, and the
snapping of continuous scores onto the ELLIPSE 0.5 grid."""

from __future__ import annotations

import numpy as np
from sklearn.isotonic import IsotonicRegression


def fit_isotonic(utilities: np.ndarray, scores: np.ndarray) -> IsotonicRegression:
    """Non-decreasing utility -> score on the anchors; utilities beyond them are clipped to
    the end anchors' scores."""
    model = IsotonicRegression(increasing=True, out_of_bounds="clip")
    return model.fit(np.asarray(utilities, np.float64), np.asarray(scores, np.float64))


def predict(model: IsotonicRegression, utilities: np.ndarray) -> np.ndarray:
    return model.predict(np.asarray(utilities, np.float64))


def snap(scores: np.ndarray, low: float = 1.0, high: float = 5.0, *, step: float = 0.5,
         binning: str = "round") -> np.ndarray:
    """Clip to [low, high], then onto the grid low + k * step: "round" to the nearest level
    (halves up: floor(x / step + 0.5)), "floor" down to the level below (the original)."""
    if binning not in ("round", "floor"):
        raise ValueError(f"binning={binning!r}: expected round or floor")
    x = np.clip(np.asarray(scores, np.float64), low, high) / step
    levels = np.floor(x + 0.5) if binning == "round" else np.floor(x + 1e-9)
    return np.clip(levels * step, low, high)
