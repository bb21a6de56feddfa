"""Token-length report of ASAP essays: how long the ``[CLS] prompt [SEP] essay [SEP]``
sequences are per prompt, and how many a ``max_tokens`` limit would cut.

Written as ``token_lengths.json`` + a histogram PNG; no dataset is built.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aes_jax.data.asap_records import BuildOptions, check_options, read_selected
from aes_jax.data.wordpiece import assemble_ids, load_tokenizer, prompt_token_ids
from aes_jax.eval import plots

__all__ = ["length_stats", "analyze_lengths", "format_length_report"]


def length_stats(lengths: Sequence[int], max_tokens: int) -> dict[str, float]:
    """Count, mean, percentiles, max and how many (and what share) exceed ``max_tokens``."""
    arr = np.asarray(lengths, dtype=np.float64)
    over = int((arr > max_tokens).sum())
    return {"count": int(arr.size), "mean": round(float(arr.mean()), 1),
            "p50": round(float(np.percentile(arr, 50)), 1),
            "p90": round(float(np.percentile(arr, 90)), 1),
            "p99": round(float(np.percentile(arr, 99)), 1), "max": int(arr.max()),
            "over_limit": over, "share_over_limit": round(over / arr.size, 4)}


def analyze_lengths(opts: BuildOptions, png_name: str = "token_lengths.png"
                    ) -> dict[str, Any]:
    """Per-prompt token-length report (full sequence with special/prompt tokens) + PNG.

    Writes ``token_lengths.png`` and ``token_lengths.json`` into ``output_dir`` and no
    dataset; splits are not needed, so no split option is consulted.
    """
    check_options(opts)
    result, essays, _ = read_selected(opts)
    tok = load_tokenizer(opts.tokenizer_dir)
    prompt_ids = prompt_token_ids(tok, opts.prompt_texts, {e.prompt for e in essays})
    lengths: dict[int, list[int]] = collections.defaultdict(list)
    for essay, ids in zip(essays, tok.encode_many([e.text for e in essays])):
        _, full = assemble_ids(ids, tok.cls_id, tok.sep_id, prompt_ids.get(essay.prompt))
        lengths[essay.prompt].append(full)
    report = {
        "max_tokens": opts.max_tokens, "tokenizer": tok.model_dir,
        "prompts": {str(p): length_stats(v, opts.max_tokens) for p, v in sorted(lengths.items())},
        "all": length_stats([n for v in lengths.values() for n in v], opts.max_tokens),
        "skipped": dict(result.skipped),
    }
    output_dir = Path(opts.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plots.length_histogram_png(lengths, opts.max_tokens, output_dir / png_name)
    (output_dir / "token_lengths.json").write_text(json.dumps(report, indent=2) + "\n")
    report["png"] = str(output_dir / png_name)
    return report


def format_length_report(report: Mapping[str, Any]) -> str:
    """The report of :func:`analyze_lengths` as a fixed-width table, one row per prompt."""
    lines = [f"token lengths ([CLS] ... [SEP], tokenizer {report['tokenizer']}), "
             f"max_tokens={report['max_tokens']}",
             f"{'prompt':>6} {'count':>6} {'mean':>7} {'p50':>7} {'p90':>7} {'p99':>7} "
             f"{'max':>6} {'over':>7}"]
    rows = list(report["prompts"].items()) + [("all", report["all"])]
    for name, s in rows:
        lines.append(f"{name:>6} {s['count']:>6} {s['mean']:>7} {s['p50']:>7} {s['p90']:>7} "
                     f"{s['p99']:>7} {s['max']:>6} {100 * s['share_over_limit']:>6.1f}%")
    return "\n".join(lines)
