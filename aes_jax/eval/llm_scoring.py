"""Free-generation scoring for LLaMA-AES: greedy answers, expected-score decoding and
sampled answers for self-consistency, all through the jitted sampler in `eval/generate.py`.

Expected-score decoding costs nothing extra: the sampler records the digit tokens' logits
at every step, and at the step that wrote trait k's score the probability-weighted mean
over the digits (softmax restricted to the digit tokens) is that trait's expected score.

Parse failures (a trait with no readable digit) are counted and replaced by the trait's
most frequent training digit (`ScoreFormat.fallback_digits`): a constant prediction, the
least informative guess, so failures cost QWK instead of silently vanishing.

Everything here takes the model to run (a LlamaConfig and params, LoRA merged), the
tokenizer and a `ScoreFormat`; nothing reaches into a task.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from tqdm import tqdm

from aes_jax.data.answer_format import parse_scores
from aes_jax.data.score_format import ScoreFormat, ScoringInput
from aes_jax.eval import metrics
from aes_jax.eval.generate import SamplingConfig, generate
from aes_jax.models.llama import LlamaConfig

PROMPT_BUCKET = 64  # prompt widths are rounded up to this, so few shapes are compiled


def _left_pad_to(seqs: Sequence[np.ndarray], width: int, pad_id: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(seqs), width), pad_id, np.int32)
    mask = np.zeros((len(seqs), width), bool)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = seq
        mask[row, width - len(seq):] = True
    return ids, mask


def _batches(prompt_ids: Sequence[np.ndarray], batch_size: int
             ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Longest first, fixed batch size (the last batch repeats its first row): (rows, seqs)."""
    order = np.argsort([-len(p) for p in prompt_ids], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        seqs = [prompt_ids[i] for i in rows]
        seqs += [seqs[0]] * (batch_size - len(seqs))
        yield rows, seqs


def decode(cfg: LlamaConfig, params: dict, prompt_ids: Sequence[np.ndarray],
           sampling: SamplingConfig, batch_size: int, rng: jax.Array, desc: str = "decoding"
           ) -> tuple[list[list[int]], list[np.ndarray] | None]:
    """Generated tokens per prompt (stop token removed) and, when sampling watches tokens,
    their logits per step [steps, len(watch)]; results come back in input order."""
    tokens: list[list[int]] = [[] for _ in prompt_ids]
    watched: list[np.ndarray] | None = [None] * len(prompt_ids) if sampling.watch_token_ids else None
    stops = set(sampling.stop_token_ids)
    batches = list(_batches(prompt_ids, batch_size))
    for b, (rows, seqs) in enumerate(tqdm(batches, desc=desc, unit="batch", leave=False)):
        width = -(-max(len(s) for s in seqs) // PROMPT_BUCKET) * PROMPT_BUCKET
        ids, mask = _left_pad_to(seqs, width, sampling.pad_token_id)
        out = jax.device_get(generate(cfg, params, ids, mask, jax.random.fold_in(rng, b), sampling))
        for j, row in enumerate(rows):
            n = int(out.lengths[j])
            seq = out.tokens[j, :n].tolist()
            if seq and seq[-1] in stops:
                seq = seq[:-1]
            tokens[row] = seq
            if watched is not None:
                watched[row] = np.asarray(out.watched_logits[j, :len(seq)])
    return tokens, watched


class _NewlineTokens:
    """Which token ids decode to text holding a newline (decoded once per id)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.cache = tokenizer, {}

    def __contains__(self, token: int) -> bool:
        if token not in self.cache:
            self.cache[token] = "\n" in self.tokenizer.decode([token])
        return self.cache[token]


def score_steps(tokens: Sequence[int], digit_ids: set, newline: Any, num_traits: int
                ) -> list[int]:
    """Indices of the first `num_traits` digit tokens of the answer's first non-empty line."""
    steps, started = [], False
    for i, t in enumerate(tokens):
        if t in newline:
            if started or steps:
                break
            continue
        started = True
        if t in digit_ids:
            steps.append(i)
            if len(steps) == num_traits:
                break
    return steps


def expected_digits(watched: np.ndarray, steps: Sequence[int], digit_values: np.ndarray,
                    num_traits: int) -> np.ndarray:
    """[K] probability-weighted digit at each score step (softmax over digits only); NaN
    for traits the answer never wrote."""
    out = np.full(num_traits, np.nan)
    for k, step in enumerate(steps[:num_traits]):
        logits = watched[step].astype(np.float64)
        p = np.exp(logits - logits.max())
        out[k] = float(p @ digit_values / p.sum())
    return out


def _in_range(digits: Sequence[int | None], codecs) -> list[int | None]:
    """A digit outside its trait's range (e.g. 0 for a 1-9 trait) is an unreadable answer."""
    return [d if d is not None and c.digit_range[0] <= d <= c.digit_range[1] else None
            for d, c in zip(digits, codecs)]


def apply_fallback(digits: np.ndarray, fallback: np.ndarray, lo_hi: Sequence[tuple[int, int]]
                   ) -> np.ndarray:
    """NaN -> the fallback digit; everything clipped into each trait's digit range."""
    out = np.where(np.isnan(digits), fallback[None, :], digits)
    lo = np.array([r[0] for r in lo_hi])
    hi = np.array([r[1] for r in lo_hi])
    return np.clip(out, lo, hi)


def score_inputs(cfg: LlamaConfig, params: dict, tokenizer: Any, fmt: ScoreFormat,
                 inputs: Sequence[ScoringInput], batch_size: int, max_new_tokens: int,
                 score_line_only: bool = True) -> dict[str, Any]:
    """Greedy answers -> parsed digits (+ fallback) and expected-score digits, [N, K] each.
    score_line_only stops each answer at the end of its score line (no feedback text)."""
    tok = tokenizer
    k = len(fmt.traits)
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0,
                              stop_token_ids=fmt.stop_token_ids(score_line_only),
                              pad_token_id=tok.pad_id, watch_token_ids=fmt.digit_ids)
    tokens, watched = decode(cfg, params, [x.prompt_ids for x in inputs], sampling, batch_size,
                             jax.random.key(0), desc="greedy")
    digit_set = set(fmt.digit_ids)
    newline = _NewlineTokens(tok)
    texts, statuses = [], []
    parsed = np.full((len(inputs), k), np.nan)
    expected = np.full((len(inputs), k), np.nan)
    for i, seq in enumerate(tokens):
        text = tok.decode(seq)
        digits, status = parse_scores(text, k)
        parsed[i] = [np.nan if d is None else d for d in _in_range(digits, fmt.codecs)]
        expected[i] = expected_digits(watched[i], score_steps(seq, digit_set, newline, k),
                                      np.asarray(fmt.digit_values, np.float64), k)
        texts.append(text)
        statuses.append(status)
    ranges = fmt.digit_ranges
    fallback = np.asarray(fmt.fallback_digits)
    return {
        "essay_id": [x.essay_id for x in inputs],
        "gold": np.stack([x.gold if x.gold is not None else np.full(k, np.nan) for x in inputs]),
        "greedy": apply_fallback(parsed, fallback, ranges),
        "expected_raw": expected,
        "expected": apply_fallback(np.floor(expected + 0.5), fallback, ranges),
        "status": statuses, "text": texts,
        "parse_failures": int(np.isnan(parsed).sum()),
        "answers_not_ok": int(sum(s != "ok" for s in statuses)),
    }


def sample_bank(cfg: LlamaConfig, params: dict, tokenizer: Any, fmt: ScoreFormat,
                inputs: Sequence[ScoringInput], num_samples: int, sampling: SamplingConfig,
                essays_per_batch: int, seed: int, meta: dict | None = None,
                keep_texts: bool = True) -> dict[str, Any]:
    """m sampled answers per essay, parsed, in the sample-bank format of
    `eval/self_consistency.py` (nulls where a trait was unreadable)."""
    tok = tokenizer
    k = len(fmt.traits)
    repeated = [x.prompt_ids for x in inputs for _ in range(num_samples)]
    tokens, _ = decode(cfg, params, repeated, sampling, essays_per_batch * num_samples,
                       jax.random.key(seed), desc=f"sampling x{num_samples}")
    essays = []
    for i, x in enumerate(inputs):
        rows = tokens[i * num_samples:(i + 1) * num_samples]
        texts = [tok.decode(r) for r in rows]
        samples = [_in_range(parse_scores(t, k)[0], fmt.codecs) for t in texts]
        entry = {"essay_id": x.essay_id,
                 "gold": None if x.gold is None else [int(round(g)) for g in x.gold],
                 "samples": samples}
        if keep_texts:
            entry["texts"] = texts
        essays.append(entry)
    return {"version": "aes_jax.sample_bank/1", "traits": list(fmt.traits),
            "digit_ranges": {t: list(c.digit_range) for t, c in zip(fmt.traits, fmt.codecs)},
            "sampling": {"temperature": sampling.temperature, "top_k": sampling.top_k,
                         "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens,
                         "seed": seed, "num_samples": num_samples, **(meta or {})},
            "essays": essays}


def scoring_report(fmt: ScoreFormat, result: dict[str, Any]) -> dict[str, Any]:
    """QWK per trait (digit scale) and MCRMSE (original scale) for greedy and expected-score
    decoding, over the rows with gold scores; parse failures counted."""
    gold = result["gold"]
    has_gold = ~np.isnan(gold).any(axis=1)
    report: dict[str, Any] = {"num_essays": len(gold), "num_with_gold": int(has_gold.sum()),
                              "parse_failures": result["parse_failures"],
                              "answers_not_ok": result["answers_not_ok"],
                              "fallback_digits": dict(zip(fmt.traits,
                                                          map(int, fmt.fallback_digits)))}
    if not has_gold.any():
        return report
    for method in ("greedy", "expected"):
        report[method] = metrics.trait_report(gold[has_gold], result[method][has_gold],
                                              fmt.traits, fmt.codecs)
    return report


def write_scores_csv(fmt: ScoreFormat, result: dict[str, Any], path: str | Path) -> None:
    """essay_id, status, per trait gold / greedy / expected digit and the expected value,
    then the raw generated text."""
    keys = [metrics.trait_key(t) for t in fmt.traits]
    header = ["essay_id", "status"]
    for key in keys:
        header += [f"gold_{key}", f"greedy_{key}", f"expected_{key}", f"expected_raw_{key}"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header + ["text"])
        for i, essay_id in enumerate(result["essay_id"]):
            row = [essay_id, result["status"][i]]
            for k in range(len(keys)):
                g = result["gold"][i, k]
                raw = result["expected_raw"][i, k]
                row += ["" if np.isnan(g) else int(g), int(result["greedy"][i, k]),
                        int(result["expected"][i, k]), "" if np.isnan(raw) else f"{raw:.4f}"]
            writer.writerow(row + [result["text"][i]])
