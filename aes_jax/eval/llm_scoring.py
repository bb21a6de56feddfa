"""Free-generation scoring for LLaMA-AES: greedy answers, expected-score decoding and
sampled answers for self-consistency, all through the jitted sampler in `eval/generate.py`.

Expected-score decoding costs nothing extra: the sampler records the digit tokens' logits
at every step, and at the step that wrote trait k's score the probability-weighted mean
over the digits (softmax restricted to the digit tokens) is that trait's expected score.
Which step wrote trait k's score comes from the greedy parser itself (`read_answer`): the
character where it read trait k's digit, mapped to the generated token holding it, so
both decodings read the same traits from the same tokens.

Parse failures (a trait with no readable digit) are counted and replaced by the trait's
most frequent training digit (`ScoreFormat.fallback_digits`): a constant prediction, the
least informative guess, so failures cost QWK instead of silently vanishing. The same
digits go into every sample bank (`"fallbacks"`), so self-consistency votes fall back
alike and its figures compare with these.

Everything here takes the model to run (a LlamaConfig and params, LoRA merged), the
tokenizer and a `ScoreFormat`; nothing reaches into a task.
"""

from __future__ import annotations

import bisect
import csv
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import jax
import numpy as np
from tqdm import tqdm

from aes_jax.data.answer_format import answer_status, parse_scores, score_fields
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
           sampling: SamplingConfig, batch_size: int, rng: jax.Array, desc: str = "decoding",
           num_samples: int = 1) -> tuple[list[list[int]], list[np.ndarray] | None]:
    """Generated tokens per prompt and sample (stop token removed) and, when sampling
    watches tokens, their logits per step [steps, len(watch)]; results come back in input
    order, prompt i's samples at i * num_samples + s. `batch_size` counts prompts; each
    prompt is prefilled once for its num_samples continuations."""
    m = num_samples
    tokens: list[list[int]] = [[] for _ in range(len(prompt_ids) * m)]
    watched: list[np.ndarray] | None = [None] * len(tokens) if sampling.watch_token_ids else None
    stops = set(sampling.stop_token_ids)
    batches = list(_batches(prompt_ids, batch_size))
    for b, (rows, seqs) in enumerate(tqdm(batches, desc=desc, unit="batch", leave=False)):
        width = -(-max(len(s) for s in seqs) // PROMPT_BUCKET) * PROMPT_BUCKET
        ids, mask = _left_pad_to(seqs, width, sampling.pad_token_id)
        out = jax.device_get(generate(cfg, params, ids, mask, jax.random.fold_in(rng, b),
                                      sampling, num_samples=m))
        for j, row in enumerate(rows):
            for s in range(m):
                n = int(out.lengths[j * m + s])
                seq = out.tokens[j * m + s, :n].tolist()
                if seq and seq[-1] in stops:
                    seq = seq[:-1]
                tokens[row * m + s] = seq
                if watched is not None:
                    watched[row * m + s] = np.asarray(out.watched_logits[j * m + s, :len(seq)])
    return tokens, watched


def token_spans(decode: Callable[[list[int]], str], tokens: Sequence[int], text: str,
                upto: int) -> list[int]:
    """End character (in ``text`` = decode(tokens)) of each generated token's span: token i
    covers ``[ends[i-1], ends[i])``. Computed until the span reaching past ``upto``.

    A token's span is how far the decoded prefix through it agrees with ``text``, never
    shrinking: a byte-level token ending inside a multi-byte character (decoded as U+FFFD)
    gets an empty span and the one completing the character gets it, and decoders that
    tidy spaces only shift spans, never leave a character without a token.
    """
    ends, end = [], 0
    for i in range(len(tokens)):
        piece = decode(list(tokens[:i + 1]))
        end = max(end, len(os.path.commonprefix([piece, text])))
        ends.append(end)
        if end > upto:
            break
    return ends


def score_steps(decode: Callable[[list[int]], str], tokens: Sequence[int], text: str,
                chars: Sequence[int | None]) -> list[int | None]:
    """For each trait's digit character in ``text`` (None: the parser read none), the index
    of the generated token that holds it: the step whose watched logits score that trait."""
    wanted = [c for c in chars if c is not None]
    if not wanted:
        return [None] * len(chars)
    ends = token_spans(decode, tokens, text, max(wanted))
    steps: list[int | None] = []
    for c in chars:
        i = bisect.bisect_right(ends, c) if c is not None else len(ends)
        steps.append(i if i < len(ends) else None)
    return steps


def expected_digits(watched: np.ndarray, steps: Sequence[int | None],
                    digit_values: np.ndarray) -> np.ndarray:
    """[K] probability-weighted digit at each trait's step (softmax over digits only); NaN
    for traits with no step (the parser read no digit there)."""
    out = np.full(len(steps), np.nan)
    for k, step in enumerate(steps):
        if step is None:
            continue
        logits = watched[step].astype(np.float64)
        p = np.exp(logits - logits.max())
        out[k] = float(p @ digit_values / p.sum())
    return out


def read_answer(tokens: Sequence[int], watched: np.ndarray, tokenizer: Any, fmt: ScoreFormat
                ) -> tuple[str, str, np.ndarray, np.ndarray]:
    """One greedy answer -> (text, status, parsed digits [K], expected digits [K]).

    One alignment serves both decodings: the parser's field positions (`score_fields`)
    name the character of each trait's digit, and the token holding that character is
    the step whose watched logits give the expected digit. A trait the parser rejects, or
    whose digit is outside its range, is NaN in both; an accepted one is read from the
    same token in both.
    """
    k = len(fmt.traits)
    text = tokenizer.decode(list(tokens))
    fields = score_fields(text, k)
    read = [None if f is None else f[0] for f in fields]
    digits = _in_range(read, fmt.codecs)
    chars = [None if d is None else f[1] for d, f in zip(digits, fields)]
    steps = score_steps(tokenizer.decode, tokens, text, chars)
    parsed = np.array([np.nan if s is None else d for d, s in zip(digits, steps)], np.float64)
    expected = expected_digits(watched, steps, np.asarray(fmt.digit_values, np.float64))
    return text, answer_status(read), parsed, expected


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


def continuous_expected(fmt: ScoreFormat, expected_raw: np.ndarray) -> np.ndarray:
    """[N, K] expected digits left unrounded: NaN -> the fallback digit, clipped into each
    trait's range (as the rounded ones are), for an MCRMSE of the expectation itself."""
    return apply_fallback(np.asarray(expected_raw, np.float64),
                          np.asarray(fmt.fallback_digits), fmt.digit_ranges)


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
    texts, statuses = [], []
    parsed = np.full((len(inputs), k), np.nan)
    expected = np.full((len(inputs), k), np.nan)
    for i, seq in enumerate(tokens):
        text, status, parsed[i], expected[i] = read_answer(seq, watched[i], tok, fmt)
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
        # Both decodings fail on the same traits (one alignment), so one count serves.
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
    tokens, _ = decode(cfg, params, [x.prompt_ids for x in inputs], sampling,
                       essays_per_batch, jax.random.key(seed), desc=f"sampling x{num_samples}",
                       num_samples=num_samples)
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
            "fallbacks": fmt.fallback_by_trait(),
            "sampling": {"temperature": sampling.temperature, "top_k": sampling.top_k,
                         "top_p": sampling.top_p, "max_new_tokens": sampling.max_new_tokens,
                         "seed": seed, "num_samples": num_samples, **(meta or {})},
            "essays": essays}


def scoring_report(fmt: ScoreFormat, result: dict[str, Any]) -> dict[str, Any]:
    """QWK per trait (digit scale) and MCRMSE (original scale) for greedy and expected-score
    decoding, over the rows with gold scores; parse failures counted.

    ``expected.mcrmse`` is on the rounded expected digits (the ratings); next to it,
    ``expected.mcrmse_continuous`` is on the unrounded expected values
    (`continuous_expected`), the number to compare with regression models."""
    gold = result["gold"]
    has_gold = ~np.isnan(gold).any(axis=1)
    report: dict[str, Any] = {"num_essays": len(gold), "num_with_gold": int(has_gold.sum()),
                              "parse_failures": result["parse_failures"],
                              "answers_not_ok": result["answers_not_ok"],
                              "fallback_digits": fmt.fallback_by_trait()}
    if not has_gold.any():
        return report
    for method in ("greedy", "expected"):
        report[method] = metrics.trait_report(gold[has_gold], result[method][has_gold],
                                              fmt.traits, fmt.codecs)
    continuous = continuous_expected(fmt, result["expected_raw"])[has_gold]
    report["expected"]["mcrmse_continuous"] = metrics.trait_mcrmse(gold[has_gold], continuous,
                                                                   fmt.codecs)
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
