"""`launch.build_preferences` as a function: candidates from the SFT generator at several
temperatures, the gold explanation added, everything scored by the verifier (or the
hybrid NLI + verifier score), chosen = best, rejected = worst, kept when the gap is at
least `min_score_gap`; optional hard negatives (a fluent explanation of a wrong option,
written by the same generator told that option is correct) as the rejected side.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np
from tqdm import tqdm

from aes_jax.data import explanations as ex
from aes_jax.data.mcq import Mcq
from aes_jax.data.preferences import (PreferencePair, PreferenceStats, ScoredCandidate,
                                      choose_pair, write_preferences)
from aes_jax.eval import generate as gen
from aes_jax.eval.explainer import Explainer

# NLI entailment probability of the correct option given each explanation: [N] in 0-1.
NliScorer = Callable[[Sequence[str], Sequence[str]], np.ndarray]


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    temperatures: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9, 1.1, 1.3)  # one candidate each
    top_p: float = 0.95
    top_k: int = 50
    repetition_penalty: float = 1.1
    max_new_tokens: int = 160
    include_gold: bool = True
    min_score_gap: float = 0.3
    hard_negative_share: float = 0.2  # of the kept pairs; 0 = none
    seed: int = 0
    batch_size: int = 8

    def __post_init__(self):
        if not self.temperatures or min(self.temperatures) <= 0:
            raise ValueError(f"temperatures={self.temperatures}: expected one or more > 0")
        if not 0.0 <= self.hard_negative_share <= 1.0:
            raise ValueError(f"hard_negative_share={self.hard_negative_share}: expected 0-1")

    def sampling(self, temperature: float) -> gen.SamplingConfig:
        return gen.SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=temperature,
                                  top_k=self.top_k, top_p=self.top_p,
                                  repetition_penalty=self.repetition_penalty)


def hybrid_score(verifier: np.ndarray, entailment: np.ndarray) -> np.ndarray:
    """0.5 * NLI entailment + 0.5 * (verifier - 1) / 4 (the verifier's 1-5 part on 0-1)."""
    return 0.5 * np.asarray(entailment) + 0.5 * (np.asarray(verifier) - 1.0) / 4.0


def _wrong_letter(q: Mcq, rng: np.random.Generator) -> str:
    return str(rng.choice([letter for letter in q.options if letter != q.answer]))


def _chunk_pairs(explainer: Explainer, questions: Sequence[Mcq], options: BuildOptions,
                 rng: jax.Array, hard_letters: dict[int, str], generator: str,
                 nli: NliScorer | None, counts: dict[str, int]
                 ) -> list[tuple[PreferencePair | None, bool]]:
    """(pair or None, hard negative used) for each question of one chunk. Empty generations
    (an immediate end token) are no candidates; `counts["empty_candidates"]` counts them."""
    texts: list[list[tuple[str, str]]] = [[] for _ in questions]
    for t in options.temperatures:
        rng, sub = jax.random.split(rng)
        for i, e in enumerate(explainer.explain(questions, generator, options.sampling(t), sub,
                                                options.batch_size)):
            if e.text.strip():
                texts[i].append((e.text, f"{generator}:t={t:g}"))
            else:
                counts["empty_candidates"] += 1
    if options.include_gold:
        for i, q in enumerate(questions):
            if q.explanation:
                texts[i].append((q.explanation, "gold"))
    hard_text: dict[int, str] = {}
    if hard_letters:
        order = sorted(hard_letters)
        prompts = [ex.generator_prompt(questions[i], hard_letters[i]) for i in order]
        rng, sub = jax.random.split(rng)
        made = explainer.generate(prompts, generator, options.sampling(0.7), sub,
                                  options.batch_size)
        hard_text = {i: e.text for i, e in zip(order, made) if e.text.strip()}
        counts["empty_candidates"] += len(order) - len(hard_text)
    # One verifier pass over every candidate and hard negative of the chunk.
    flat_q, flat_text = [], []
    for i, q in enumerate(questions):
        extra = [hard_text[i]] if i in hard_text else []
        for text in [t for t, _ in texts[i]] + extra:
            flat_q.append(q)
            flat_text.append(text)
    scores = explainer.score(flat_q, flat_text) if flat_q else np.zeros(0)
    if nli is not None and flat_q:
        scores = hybrid_score(scores, nli(flat_text, [q.answer_text for q in flat_q]))
    out, at = [], 0
    for i, q in enumerate(questions):
        pool = [ScoredCandidate(text, float(scores[at + j]), source)
                for j, (text, source) in enumerate(texts[i])]
        at += len(pool)
        hard = None
        if i in hard_text:
            hard = ScoredCandidate(hard_text[i], float(scores[at]), "hard_negative")
            at += 1
        pair = choose_pair(ex.generator_prompt(q), pool, options.min_score_gap, hard)
        if pair is not None:
            pair = dataclasses.replace(pair, extra={"id": q.id})
        out.append((pair, hard is not None))
    return out


def build_preferences(explainer: Explainer, questions: Sequence[Mcq], options: BuildOptions,
                      out_dir: str | Path, *, generator: str = "sft",
                      nli: NliScorer | None = None, progress: bool = True
                      ) -> tuple[list[PreferencePair], dict]:
    """Writes out_dir/pairs.jsonl (TRL's columns) and out_dir/stats.json; returns both.
    Questions go through in chunks of `batch_size` (every temperature, the hard negatives
    and the verifier per chunk), so the progress bar's questions/s is the real rate."""
    out_dir = Path(out_dir)
    rng = jax.random.key(options.seed)
    np_rng = np.random.default_rng(options.seed)
    n_hard = round(len(questions) * options.hard_negative_share)
    hard_for = set(np_rng.permutation(len(questions))[:n_hard].tolist())
    stats = PreferenceStats(min_score_gap=options.min_score_gap)
    counts = {"empty_candidates": 0}
    pairs: list[PreferencePair] = []
    began = time.perf_counter()
    bar = tqdm(total=len(questions), unit="question", disable=not progress,
               desc="preference pairs")
    for start in range(0, len(questions), options.batch_size):
        chunk = list(questions[start:start + options.batch_size])
        letters = {i - start: _wrong_letter(questions[i], np_rng)
                   for i in range(start, start + len(chunk)) if i in hard_for}
        rng, sub = jax.random.split(rng)
        for pair, hard in _chunk_pairs(explainer, chunk, options, sub, letters, generator, nli,
                                       counts):
            stats.add(pair, hard=hard and pair is not None)
            if pair is not None:
                pairs.append(pair)
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - began
    summary = {**stats.to_json(), **counts, "seconds": seconds,
               "questions_per_s": len(questions) / seconds if seconds else 0.0,
               "candidates_per_question": len(options.temperatures) + int(options.include_gold),
               "score": "hybrid (0.5 NLI + 0.5 verifier)" if nli is not None else "verifier",
               "options": dataclasses.asdict(options)}
    write_preferences(out_dir / "pairs.jsonl", pairs)
    (out_dir / "stats.json").write_text(json.dumps(summary, indent=1) + "\n")
    return pairs, summary
