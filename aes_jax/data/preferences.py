"""Preference pairs for DPO: TRL's columns as JSONL, the chosen/rejected rule, and stats.

One object per line:

    {"prompt": "...", "chosen": "...", "rejected": "...", "chosen_score": 4.1,
     "rejected_score": 1.2, "source": "sft:t=0.7 > sft:t=1.3"}

`prompt` is the user turn (instruction + input, no chat template; the DPO task wraps it
in the tokenizer's template). For each question the candidates are scored, chosen = the
best, rejected = the worst, and the pair is kept when the gap is at least
`min_score_gap`; every question dropped is counted.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from aes_jax.data.explanations import generator_prompt
from aes_jax.data.mcq import Mcq
from aes_jax.data.read_report import DataFormatError, jsonl_objects

__all__ = ["PreferencePair", "ScoredCandidate", "PreferenceStats", "choose_pair",
           "read_preferences", "write_preferences", "pairs_from_ratings", "GAP_BINS"]

# Gap histogram bin edges (the last bin is open).
GAP_BINS = (0.0, 0.5, 1.0, 2.0, 3.0)


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float
    source: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def gap(self) -> float:
        return self.chosen_score - self.rejected_score

    def to_json(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected,
                "chosen_score": self.chosen_score, "rejected_score": self.rejected_score,
                "source": self.source, **self.extra}


@dataclasses.dataclass(frozen=True)
class ScoredCandidate:
    text: str
    score: float
    source: str  # where it came from: "gold", "sft:t=0.7", "hard_negative", a rating kind


def choose_pair(prompt: str, candidates: Sequence[ScoredCandidate], min_score_gap: float,
                hard_negative: ScoredCandidate | None = None) -> PreferencePair | None:
    """chosen = the best candidate, rejected = the worst (or `hard_negative` when given);
    None when the gap is below `min_score_gap` or both are the same text. Ties go to the
    earlier candidate."""
    if not candidates:
        return None
    scores = [c.score for c in candidates]
    best = candidates[int(np.argmax(scores))]
    worst = hard_negative or candidates[int(np.argmin(scores))]
    if best.score - worst.score < min_score_gap or best.text == worst.text:
        return None
    return PreferencePair(prompt, best.text, worst.text, float(best.score), float(worst.score),
                          f"{best.source} > {worst.source}")


@dataclasses.dataclass
class PreferenceStats:
    """What the builder kept, as the stats JSON next to the pairs."""

    questions: int = 0
    pairs: int = 0
    dropped_small_gap: int = 0
    hard_negatives: int = 0
    min_score_gap: float = 0.0
    gaps: list[float] = dataclasses.field(default_factory=list)

    def add(self, pair: PreferencePair | None, hard: bool = False) -> None:
        self.questions += 1
        if pair is None:
            self.dropped_small_gap += 1
            return
        self.pairs += 1
        self.hard_negatives += int(hard)
        self.gaps.append(pair.gap)

    def to_json(self) -> dict[str, Any]:
        edges = list(GAP_BINS) + [float("inf")]
        counts = np.histogram(self.gaps, bins=edges)[0] if self.gaps else [0] * len(GAP_BINS)
        labels = [f"{lo:g}-{hi:g}" if hi != float("inf") else f">={lo:g}"
                  for lo, hi in zip(edges[:-1], edges[1:])]
        return {"questions": self.questions, "pairs": self.pairs,
                "dropped_small_gap": self.dropped_small_gap,
                "min_score_gap": self.min_score_gap,
                "hard_negatives": self.hard_negatives,
                "hard_negative_share": self.hard_negatives / self.pairs if self.pairs else 0.0,
                "mean_gap": float(np.mean(self.gaps)) if self.gaps else 0.0,
                "gap_histogram": dict(zip(labels, map(int, counts)))}

    def line(self) -> str:
        s = self.to_json()
        return (f"{s['pairs']} pairs from {s['questions']} questions ({s['dropped_small_gap']} "
                f"dropped: gap < {self.min_score_gap:g}; {s['hard_negatives']} hard negatives; "
                f"mean gap {s['mean_gap']:.2f}; gaps {s['gap_histogram']})")


def pairs_from_ratings(questions: Sequence[Mcq], min_score_gap: float = 0.3
                       ) -> tuple[list[PreferencePair], PreferenceStats]:
    """Pairs from the human ratings alone: each question's gold explanation and rated
    candidates as the candidate set (no generator, no verifier). The demo DPO data."""
    stats, pairs = PreferenceStats(min_score_gap=min_score_gap), []
    for q in questions:
        pool = [ScoredCandidate(c.text, c.rating, c.kind) for c in q.candidates]
        if q.explanation and q.explanation_rating is not None:
            pool.insert(0, ScoredCandidate(q.explanation, q.explanation_rating, "gold"))
        pair = choose_pair(generator_prompt(q), pool, min_score_gap)
        stats.add(pair, hard=pair is not None and pair.source.endswith("wrong_option"))
        if pair is not None:
            pairs.append(dataclasses.replace(pair, extra={"id": q.id}))
    return pairs, stats


# ---------------------------------------------------------------------- JSONL
def _score(obj: dict, key: str, where: str) -> float:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataFormatError(f"{where}: {key!r} must be a number, got {value!r}")
    return float(value)


def read_preferences(path: str | Path) -> list[PreferencePair]:
    """A preference JSONL file; every line checked (blank lines skipped)."""
    path = Path(path)
    pairs = []
    for where, obj in jsonl_objects(path.read_text(encoding="utf-8").splitlines(), str(path)):
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(obj.get(key), str) or not obj[key].strip():
                raise DataFormatError(f"{where}: {key!r} must be a non-empty string")
        source = obj.get("source", "")
        if not isinstance(source, str):
            raise DataFormatError(f"{where}: 'source' must be a string")
        known = {"prompt", "chosen", "rejected", "chosen_score", "rejected_score", "source"}
        pairs.append(PreferencePair(
            obj["prompt"], obj["chosen"], obj["rejected"],
            _score(obj, "chosen_score", where) if "chosen_score" in obj else float("nan"),
            _score(obj, "rejected_score", where) if "rejected_score" in obj else float("nan"),
            source, {k: v for k, v in obj.items() if k not in known}))
    if not pairs:
        raise DataFormatError(f"{path}: no preference pairs")
    return pairs


def write_preferences(path: str | Path, pairs: Iterable[PreferencePair]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p.to_json(), ensure_ascii=False) + "\n")
    return path
