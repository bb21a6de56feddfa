"""A SYNTHETIC corpus in the Kaggle ELLIPSE ``train.csv`` layout, for demos and tests of
the LLaMA-AES path without the real data (see :func:`demo_ell_rows`)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from aes_jax.data import asap_demo, ell

__all__ = ["DEMO_ELL_HEADER", "demo_ell_rows", "write_demo_ell_csv"]

DEMO_ELL_HEADER = ("text_id", "full_text", *ell.ELL_TRAITS)
_DEMO_PROMPT = 1  # asap_demo's persuasive-letter topic: argumentative, like ELLIPSE
# Per-trait offsets (in score units) so traits differ on average, as in ELLIPSE, where
# conventions and grammar run lower than vocabulary.
_DEMO_TRAIT_SHIFT = {"cohesion": 0.0, "syntax": 0.0, "vocabulary": 0.25, "phraseology": 0.0,
                     "grammar": -0.25, "conventions": -0.1}


def demo_ell_rows(n: int = 240, seed: int = 0) -> list[list[str]]:
    """A SYNTHETIC corpus in the Kaggle ELLIPSE ``train.csv`` layout, header excluded.

    NOT ELLIPSE data: each essay comes from the asap_demo generator (it starts with
    ``asap_demo.MARKER``) at a quality q drawn from Beta(2.5, 2.5); every trait score is
    ``1 + 4 q`` plus a per-trait shift and Gaussian noise (sd 0.35), snapped to the 0.5
    grid and clipped to 1.0-5.0. Text and scores share q, so scores are learnable from
    the text while no model can be exact. Deterministic in ``seed``.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = np.random.default_rng([int(seed), 0xE1])
    rows = []
    for k in range(n):
        q = float(rng.beta(2.5, 2.5))
        text = asap_demo.demo_essay(rng, _DEMO_PROMPT, q)
        scores = []
        for trait in ell.ELL_TRAITS:
            raw = 1.0 + 4.0 * q + _DEMO_TRAIT_SHIFT[trait] + rng.normal(0.0, 0.35)
            scores.append(float(np.clip(np.round(raw * 2) / 2, 1.0, 5.0)))
        rows.append([f"DEMO{k:08X}", text, *(f"{s:.1f}" for s in scores)])
    return rows


def write_demo_ell_csv(path: str | os.PathLike, n: int = 240, seed: int = 0) -> Path:
    """Write :func:`demo_ell_rows` as a Kaggle-layout ``train.csv``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(DEMO_ELL_HEADER)
        writer.writerows(demo_ell_rows(n, seed))
    return path
