"""Self-consistency for generated trait scores: vote over m sampled answers per essay.

LLaMA-AES answers with one digit per trait ("4 3 4 3 4 3\\n\\nEssay Feedback: ...").
Self-consistency samples several answers per essay and lets them vote, trading compute
for agreement with the raters; this module measures that trade (QWK against m) from a
*sample bank*, so the expensive sampling runs once and any number of m's and voting rules
are analysed afterwards for free. Parsing text into digits happens elsewhere: the bank
already holds the parsed digits.

Sample bank (JSON), version ``BANK_VERSION`` = "aes_jax.sample_bank/1"::

    {
      "version": "aes_jax.sample_bank/1",
      "traits": ["content", "organization", ...],          # K unique names
      "digit_ranges": {"content": [1, 6], ...},            # valid digits per trait, inclusive
      "fallbacks": {"content": 4, ...},                    # optional: digit per trait for
                                                           # all-failed votes (see below)
      "sampling": {"temperature": 1.0, "top_k": 0, ...},   # free-form provenance, not read
      "essays": [
        {"essay_id": "1234",                               # unique string
         "gold": [4, 3, null, ...] | null,                 # one per trait; null = no rating
         "samples": [[4, 3, 4, 3, 4, 3], [4, null, ...]],  # one list of K per sample;
                                                           # null = the parser found no digit
         "texts": ["4 3 4 3 4 3\\n\\nEssay Feedback: ...", ...]},   # optional, one per sample
        ...
      ]
    }

Rules the loader enforces (``validate_bank``; errors name the file, the essay index and
id, and what was expected): the version string matches exactly; every sample and every
gold list has exactly K entries, each an int inside its trait's range or null; every essay
has at least one sample; ``texts``, when present, has one string per sample;
``fallbacks``, when present, names every trait with an int in its range. Extra keys
(e.g. a prompt id on an essay) are kept and ignored, so producers can add provenance.

Essays may hold different numbers of samples (e.g. a resumed sampling job). ``analyze``
then uses m only up to the smallest count, always the FIRST m samples of every essay, so
the result for m is what sampling m answers would have given, and its note says so.

Scoring choices:

* A sample's null digit is a parse failure. It does not vote; it is counted per m
  (``parse_failures``). When all m samples of an essay fail for a trait, the essay gets
  the trait's *fallback* digit: the bank's ``fallbacks``, which ``launch.self_consistency
  run`` fills with the trait's most frequent training digit, the very fallback
  ``launch.score`` uses for unreadable greedy answers, so the figures of the two compare.
  ``fallbacks={trait: digit}`` overrides it per trait; a bank without ``fallbacks`` (a
  hand-made one) needs the override for every trait. The number of fallbacks used is
  reported per m.
* Majority vote breaks ties towards the LOWER score, so the rule is deterministic and does
  not depend on sample order. Average vote rounds the mean half up (floor(x + 0.5)),
  matching metrics.round_and_clip.
* QWK is per trait on the trait's digit range (metrics.qwk), over the essays with a gold
  rating for that trait; ``overall`` is the plain mean of the per-trait kappas. A bank
  mixing prompts is pooled over them: keep one bank per prompt when comparing with
  per-prompt QWK from the literature (see metrics.py).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aes_jax.eval import metrics, plots
from aes_jax.eval.tables import aligned

BANK_VERSION = "aes_jax.sample_bank/1"
METHODS = ("majority", "average")


# --------------------------------------------------------------------------- bank I/O


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_digits(where: str, what: str, values: Any, traits: Sequence[str],
                  ranges: Mapping[str, tuple[int, int]]) -> None:
    """One list of K digits (int in the trait's range, or null)."""
    if not isinstance(values, list) or len(values) != len(traits):
        got = f"{len(values)} entries" if isinstance(values, list) else type(values).__name__
        raise ValueError(f"{where}: {what} has {got}, expected a list of {len(traits)} "
                         f"(one per trait: {list(traits)})")
    for trait, v in zip(traits, values):
        lo, hi = ranges[trait]
        if v is None:
            continue
        if not _is_int(v) or not lo <= v <= hi:
            raise ValueError(f"{where}: {what}, trait {trait!r} is {v!r}, expected an integer "
                             f"in [{lo}, {hi}] or null")


def validate_bank(bank: Any, source: str = "<bank>") -> dict:
    """Checks a bank against the format in the module docstring; returns it unchanged.
    ``source`` (usually the file) starts every error message."""
    if not isinstance(bank, dict):
        raise ValueError(f"{source}: a sample bank is a JSON object, got {type(bank).__name__}")
    if bank.get("version") != BANK_VERSION:
        raise ValueError(f"{source}: version is {bank.get('version')!r}, expected "
                         f"{BANK_VERSION!r}")
    traits = bank.get("traits")
    if (not isinstance(traits, list) or not traits or len(set(traits)) != len(traits)
            or not all(isinstance(t, str) and t for t in traits)):
        raise ValueError(f"{source}: 'traits' is {traits!r}, expected a non-empty list of "
                         "unique trait names")
    raw_ranges = bank.get("digit_ranges")
    if not isinstance(raw_ranges, dict) or set(raw_ranges) != set(traits):
        got = sorted(raw_ranges) if isinstance(raw_ranges, dict) else raw_ranges
        raise ValueError(f"{source}: 'digit_ranges' names {got!r}, expected exactly the "
                         f"traits {traits}")
    ranges = {}
    for trait in traits:
        r = raw_ranges[trait]
        if not (isinstance(r, list) and len(r) == 2 and all(map(_is_int, r)) and r[0] <= r[1]):
            raise ValueError(f"{source}: digit_ranges[{trait!r}] is {r!r}, expected [lo, hi] "
                             "integers with lo <= hi")
        ranges[trait] = (r[0], r[1])
    if not isinstance(bank.get("sampling"), dict):
        raise ValueError(f"{source}: 'sampling' is {bank.get('sampling')!r}, expected an "
                         "object (temperature, top_k, seed, model, ...)")
    if "fallbacks" in bank:
        _check_fallbacks(source, bank["fallbacks"], traits, ranges, every_trait=True)
    essays = bank.get("essays")
    if not isinstance(essays, list) or not essays:
        raise ValueError(f"{source}: 'essays' must be a non-empty list")
    seen: dict[str, int] = {}
    for i, essay in enumerate(essays):
        if not isinstance(essay, dict):
            raise ValueError(f"{source}: essay {i} is {type(essay).__name__}, expected an object")
        eid = essay.get("essay_id")
        if not isinstance(eid, str):
            raise ValueError(f"{source}: essay {i}: essay_id is {eid!r}, expected a string")
        where = f"{source}: essay {i} (id {eid!r})"
        if eid in seen:
            raise ValueError(f"{where}: duplicate essay_id (also essay {seen[eid]})")
        seen[eid] = i
        if essay.get("gold") is not None:
            _check_digits(where, "gold", essay["gold"], traits, ranges)
        samples = essay.get("samples")
        if not isinstance(samples, list) or not samples:
            raise ValueError(f"{where}: 'samples' must be a non-empty list of samples, each a "
                             f"list of {len(traits)} digits")
        for j, sample in enumerate(samples):
            _check_digits(where, f"sample {j}", sample, traits, ranges)
        if "texts" in essay:
            texts = essay["texts"]
            if (not isinstance(texts, list) or len(texts) != len(samples)
                    or not all(isinstance(t, str) for t in texts)):
                got = f"{len(texts)} entries" if isinstance(texts, list) else repr(texts)[:40]
                raise ValueError(f"{where}: 'texts' has {got}, expected {len(samples)} "
                                 "strings (one per sample)")
    return bank


def save_bank(bank: dict, path: str | Path) -> Path:
    """Validates and writes a bank. The write goes through a temporary file and a rename,
    so an interrupted save never leaves a truncated bank that a later analysis would
    refuse (or, worse, half-read)."""
    path = Path(path)
    validate_bank(bank, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(bank, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_bank(path: str | Path) -> dict:
    """Reads and validates a bank; any problem is a ValueError naming the file."""
    path = Path(path)
    try:
        bank = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    return validate_bank(bank, str(path))


def bank_arrays(bank: dict, max_samples: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(samples [N, M, K], gold [N, K]) as float with nan for null, M = ``max_samples`` or
    the smallest sample count over essays (so every row holds real samples)."""
    essays, k = bank["essays"], len(bank["traits"])
    m = min(len(e["samples"]) for e in essays) if max_samples is None else max_samples
    samples = np.full((len(essays), m, k), np.nan)
    gold = np.full((len(essays), k), np.nan)
    for i, essay in enumerate(essays):
        rows = [[np.nan if v is None else v for v in s] for s in essay["samples"][:m]]
        samples[i, :len(rows)] = rows
        if essay.get("gold") is not None:
            gold[i] = [np.nan if v is None else v for v in essay["gold"]]
    return samples, gold


# --------------------------------------------------------------------------- voting


def _majority(samples: np.ndarray) -> np.ndarray:
    """[N, m, K] -> [N, K] winner, nan where every sample is nan. Counts by pairwise
    equality (nan equals nothing, so failures get no votes), then keeps the smallest value
    among those with the top count: ties go to the lower score."""
    counts = (samples[:, :, None, :] == samples[:, None, :, :]).sum(axis=2)  # [N, m, K]
    valid = ~np.isnan(samples)
    top = np.where(valid, counts, 0).max(axis=1, keepdims=True)
    cand = np.where(valid & (counts == top), samples, np.inf).min(axis=1)
    return np.where(np.isinf(cand), np.nan, cand)


def _average(samples: np.ndarray) -> np.ndarray:
    """[N, m, K] -> [N, K] mean of the non-nan values rounded half up, nan if none."""
    valid = ~np.isnan(samples)
    n = valid.sum(axis=1)
    total = np.where(valid, samples, 0.0).sum(axis=1)
    mean = np.divide(total, n, out=np.full(total.shape, np.nan), where=n > 0)
    # Digits sum exactly in float64 and division is correctly rounded, so a true x.5 mean
    # is exactly x.5 here and rounds up, as round_and_clip does.
    return np.floor(mean + 0.5)


_VOTERS = {"majority": _majority, "average": _average}


def vote(samples: np.ndarray, m: int, method: str, fallbacks: Sequence[int]) -> np.ndarray:
    """Votes over the first ``m`` samples: [N, M, K] float (nan = parse failure) -> [N, K]
    int64. An (essay, trait) whose m samples all failed gets ``fallbacks[trait]``."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3:
        raise ValueError(f"vote needs samples of shape [N, M, K], got {samples.shape}")
    if method not in _VOTERS:
        raise ValueError(f"unknown vote method {method!r}; expected one of {list(_VOTERS)}")
    if not 1 <= m <= samples.shape[1]:
        raise ValueError(f"m = {m} is outside [1, {samples.shape[1]}] (samples available)")
    fallbacks = np.asarray(fallbacks, dtype=np.float64).reshape(-1)
    if fallbacks.shape != (samples.shape[2],):
        raise ValueError(f"{fallbacks.size} fallback(s) for {samples.shape[2]} trait(s)")
    winner = _VOTERS[method](samples[:, :m])
    return np.where(np.isnan(winner), fallbacks[None, :], winner).astype(np.int64)


def _vote_one(samples: Any, fallback: int, method: str) -> int:
    arr = np.asarray(samples, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{method}_vote needs a non-empty 1-d array of samples, got shape "
                         f"{arr.shape}")
    return int(vote(arr[None, :, None], arr.size, method, [fallback])[0, 0])


def majority_vote(samples: np.ndarray, fallback: int) -> int:
    """Most frequent non-nan value of [m] samples; ties go to the lower score; all nan ->
    ``fallback``."""
    return _vote_one(samples, fallback, "majority")


def average_vote(samples: np.ndarray, fallback: int) -> int:
    """Mean of the non-nan values of [m] samples rounded half up (2.5 -> 3); all nan ->
    ``fallback``."""
    return _vote_one(samples, fallback, "average")


# --------------------------------------------------------------------------- analysis


def default_ms(max_samples: int) -> list[int]:
    """1, 2, 4, ... up to ``max_samples``, plus ``max_samples`` itself."""
    ms = [1 << i for i in range(max_samples.bit_length()) if 1 << i <= max_samples]
    return sorted(set(ms) | {max_samples})


def _check_fallbacks(where: str, fallbacks: Any, traits: Sequence[str],
                     ranges: Mapping[str, Sequence[int]], every_trait: bool) -> None:
    if not isinstance(fallbacks, dict):
        raise ValueError(f"{where}: fallbacks is {fallbacks!r}, expected {{trait: digit}}")
    unknown = sorted(set(fallbacks) - set(traits))
    if unknown:
        raise ValueError(f"{where}: fallback for unknown trait {unknown[0]!r}; traits are "
                         f"{list(traits)}")
    missing = [t for t in traits if t not in fallbacks]
    if every_trait and missing:
        raise ValueError(f"{where}: fallbacks name no digit for {missing}")
    for trait, value in fallbacks.items():
        lo, hi = ranges[trait]
        if not _is_int(value) or not lo <= value <= hi:
            raise ValueError(f"{where}: fallback for {trait!r} is {value!r}, expected an "
                             f"integer in [{lo}, {hi}]")


def _fallbacks(bank: dict, overrides: Mapping[str, int] | None) -> dict[str, int]:
    """The bank's fallbacks (the training-mode digits) with ``overrides`` on top."""
    traits, ranges = bank["traits"], bank["digit_ranges"]
    overrides = dict(overrides or {})
    _check_fallbacks("analyze", overrides, traits, ranges, every_trait=False)
    out = {**bank.get("fallbacks", {}), **overrides}
    missing = [t for t in traits if t not in out]
    if missing:
        raise ValueError(
            f"the bank records no fallback digits (no 'fallbacks'; `launch.self_consistency "
            f"run` writes them) and none were given for {missing}: pass fallbacks= (CLI "
            "--fallbacks=trait=digit,...), e.g. the 'fallback_digits' of launch.score's "
            "metrics JSON, so all-failed votes fall back as greedy scoring does")
    return {t: out[t] for t in traits}


def analyze(bank: dict, ms: Sequence[int] | None = None,
            methods: Sequence[str] = METHODS,
            fallbacks: Mapping[str, int] | None = None) -> dict[str, Any]:
    """QWK against m for each voting method, from the FIRST m samples of every essay.

    ``ms`` defaults to ``default_ms(M)`` with M the smallest sample count over essays; an m
    above M is an error. ``fallbacks`` maps trait -> digit used when all m samples of an
    essay failed to parse for that trait, over the bank's own ``fallbacks`` (the
    training-mode digits; a bank without them needs every trait here).

    Returns {"ms", "methods": {method: {"per_trait": {trait: [qwk per m]}, "overall":
    [mean of per-trait qwk per m]}}, "parse_failures": [null digits among the first m
    samples, all essays and traits, per m], "fallbacks_used": [(essay, trait) pairs whose
    first m samples all failed, so scored by fallback under every method, per m],
    "fallbacks": {trait: digit},
    "num_essays", "num_gold": {trait: essays with gold}, "max_samples", "traits",
    "note"}. A trait with no gold rating at all has None kappas and is left out of
    "overall"."""
    validate_bank(bank)
    traits = list(bank["traits"])
    counts = [len(e["samples"]) for e in bank["essays"]]
    max_m = min(counts)
    if ms is None:
        ms = default_ms(max_m)
    ms = sorted({int(m) for m in ms})
    if not ms or ms[0] < 1:
        raise ValueError(f"ms must be positive sample counts, got {ms}")
    if ms[-1] > max_m:
        uneven = f" (essays hold {min(counts)} to {max(counts)})" if len(set(counts)) > 1 else ""
        raise ValueError(f"m = {ms[-1]} exceeds the {max_m} samples every essay has{uneven}")
    methods = list(methods)
    for method in methods:
        if method not in _VOTERS:
            raise ValueError(f"unknown vote method {method!r}; expected one of {list(_VOTERS)}")
    if not methods:
        raise ValueError("analyze needs at least one vote method")
    fb = _fallbacks(bank, fallbacks)
    fb_vec = [fb[t] for t in traits]
    samples, gold = bank_arrays(bank, max_m)
    has_gold = ~np.isnan(gold)
    if not has_gold.any():
        raise ValueError("the bank has no gold ratings; QWK needs at least one")

    result_methods: dict[str, Any] = {}
    for method in methods:
        per_trait: dict[str, list] = {t: [] for t in traits}
        overall = []
        for m in ms:
            voted = vote(samples, m, method, fb_vec)
            kappas = []
            for k, trait in enumerate(traits):
                rows = has_gold[:, k]
                if not rows.any():
                    per_trait[trait].append(None)
                    continue
                lo, hi = bank["digit_ranges"][trait]
                kappa = metrics.qwk(gold[rows, k].astype(np.int64), voted[rows, k], lo, hi)
                per_trait[trait].append(kappa)
                kappas.append(kappa)
            overall.append(float(np.mean(kappas)))
        result_methods[method] = {"per_trait": per_trait, "overall": overall}

    failed = np.isnan(samples)
    parse_failures = [int(failed[:, :m].sum()) for m in ms]
    fallbacks_used = [int(failed[:, :m].all(axis=1).sum()) for m in ms]
    num_gold = {t: int(has_gold[:, k].sum()) for k, t in enumerate(traits)}

    notes = [f"m counts the FIRST m samples of each of {len(counts)} essays."]
    if len(set(counts)) > 1:
        notes.append(f"Essays hold {min(counts)} to {max(counts)} samples; m is limited to "
                     f"the minimum, {max_m}.")
    given = sorted(fallbacks or {})
    notes.append("Parse failures do not vote; all-failed (essay, trait) pairs get the "
                 "fallback " + ", ".join(f"{t}={fb[t]}" for t in traits)
                 + (f" (given for {given}; otherwise the bank's)" if given else
                    " (the bank's: training-mode digits, as in launch.score)") + ".")
    no_gold = [t for t in traits if num_gold[t] == 0]
    if no_gold:
        notes.append(f"No gold for {no_gold}: left out of overall.")
    partial = {t: n for t, n in num_gold.items() if 0 < n < len(counts)}
    if partial:
        notes.append(f"QWK uses only essays with gold: {partial} of {len(counts)}.")
    return {"ms": ms, "methods": result_methods, "parse_failures": parse_failures,
            "fallbacks_used": fallbacks_used, "fallbacks": fb, "num_essays": len(counts),
            "num_gold": num_gold, "max_samples": max_m, "traits": traits,
            "note": " ".join(notes)}


# --------------------------------------------------------------------------- reports


def _fmt(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return aligned([list(header), *rows])


def format_table(result: Mapping[str, Any]) -> str:
    """Fixed-width text: a summary (m, parse failures, overall QWK per method), then one
    per-trait table per method. Rows are m."""
    ms = result["ms"]
    methods = list(result["methods"])
    traits = list(next(iter(result["methods"].values()))["per_trait"])
    header = ["m", "parse_fail", "fallbacks", *(f"{meth}" for meth in methods)]
    rows = [[str(m), str(result["parse_failures"][i]),
             str(result.get("fallbacks_used", ["-"] * len(ms))[i]),
             *(_fmt(result["methods"][meth]["overall"][i]) for meth in methods)]
            for i, m in enumerate(ms)]
    out = [f"Self-consistency: {result['num_essays']} essays, up to "
           f"{result['max_samples']} samples each; overall QWK = mean over traits", "",
           *_table(header, rows)]
    for meth in methods:
        per_trait = result["methods"][meth]["per_trait"]
        rows = [[str(m), _fmt(result["methods"][meth]["overall"][i]),
                 *(_fmt(per_trait[t][i]) for t in traits)] for i, m in enumerate(ms)]
        out += ["", f"{meth} vote, QWK per trait", *_table(["m", "overall", *traits], rows)]
    out += ["", result.get("note", "")]
    return "\n".join(out).rstrip() + "\n"


def write_analysis(result: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """analysis.json (the result), analysis.txt (format_table) and qwk_vs_m.png (overall QWK
    against m, one line per method) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "analysis.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    txt_path = out / "analysis.txt"
    txt_path.write_text(format_table(result))
    png_path = plots.qwk_vs_m_png(
        result["ms"], {meth: r["overall"] for meth, r in result["methods"].items()},
        out / "qwk_vs_m.png")
    return [json_path, txt_path, png_path]
