"""Token-length report of ASAP essays: how long the ``[CLS] prompt [SEP] essay [SEP]``
sequences are per prompt, and how many a ``max_tokens`` limit would cut.

Written as ``token_lengths.json`` + a histogram PNG; no dataset is built. The essays come
from the ASAP TSV inputs (:func:`analyze_lengths`) or from a built ASAP TFDS dataset,
every split (:func:`analyze_tfds_lengths`: ``asap_aes`` / ``asap_traits``, any config);
both give the same report for the same essays.
"""

from __future__ import annotations

import collections
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aes_jax.data.asap_records import BuildOptions, check_options, read_selected
from aes_jax.data.wordpiece import assemble_ids, load_tokenizer, prompt_token_ids
from aes_jax.eval import plots

__all__ = ["length_stats", "analyze_lengths", "tfds_essays", "analyze_tfds_lengths",
           "format_length_report"]


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
    return _report([(e.prompt, e.text) for e in essays], dict(result.skipped),
                   max_tokens=opts.max_tokens, tokenizer_dir=opts.tokenizer_dir,
                   prompt_texts=opts.prompt_texts, output_dir=opts.output_dir,
                   png_name=png_name)


def tfds_essays(name: str, data_dir: str | os.PathLike
                ) -> tuple[list[tuple[int, str]], dict[str, int]]:
    """([(prompt, essay text)] of every split, the reader's skips) of a built ASAP TFDS
    dataset ``name`` (``asap_traits``, ``asap_aes/prompt_3``, ...) in ``data_dir``.

    Read with ``tensorflow_datasets`` from the prepared files (its builder must be
    registered: import ``aes_jax.datasets`` first); a dataset not built there raises."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=os.fspath(data_dir))
    # Not builder.is_prepared(): that logs a warning line of its own for a missing build.
    if not (Path(builder.data_dir) / "dataset_info.json").is_file():
        raise FileNotFoundError(f"{name} is not built in {data_dir}; build it first "
                                "(launch.build_dataset --format=tfds --manual_dir=DIR ..., "
                                "or give --manual_dir with --analyze_lengths)")
    meta = builder.info.metadata or {}
    if "score_ranges" not in meta or "essay" not in builder.info.features:
        raise ValueError(f"{name} in {data_dir}: not an ASAP dataset of aes_jax.datasets "
                         "(the length report reads asap_aes / asap_traits)")
    essays = []
    for split in builder.info.splits:
        source = builder.as_data_source(split=split)
        for ex in source.__getitems__(list(range(len(source)))):
            text = ex["essay"]
            essays.append((int(ex["prompt"]),
                           text.decode("utf-8") if isinstance(text, bytes) else str(text)))
    return essays, dict(meta.get("read", {}).get("skipped", {}))


def analyze_tfds_lengths(name: str, data_dir: str | os.PathLike, output_dir: str | os.PathLike,
                         *, max_tokens: int = 512,
                         tokenizer_dir: str | os.PathLike | None = None,
                         prompt_texts: Mapping[int, str] | None = None,
                         png_name: str = "token_lengths.png") -> dict[str, Any]:
    """:func:`analyze_lengths` of the essays of a built ASAP TFDS dataset (every split)."""
    check_options(BuildOptions(inputs=(), output_dir=output_dir, max_tokens=max_tokens))
    essays, skipped = tfds_essays(name, data_dir)
    return _report(essays, skipped, max_tokens=max_tokens, tokenizer_dir=tokenizer_dir,
                   prompt_texts=prompt_texts, output_dir=output_dir, png_name=png_name)


def _report(essays: Sequence[tuple[int, str]], skipped: Mapping[str, int], *,
            max_tokens: int, tokenizer_dir, prompt_texts, output_dir,
            png_name: str) -> dict[str, Any]:
    """The report of ``(prompt, text)`` essays, written as JSON + PNG into ``output_dir``."""
    if not essays:
        raise ValueError("no essays to report token lengths of")
    tok = load_tokenizer(tokenizer_dir)
    prompt_ids = prompt_token_ids(tok, prompt_texts, {p for p, _ in essays})
    lengths: dict[int, list[int]] = collections.defaultdict(list)
    for (prompt, _), ids in zip(essays, tok.encode_many([t for _, t in essays])):
        _, full = assemble_ids(ids, tok.cls_id, tok.sep_id, prompt_ids.get(prompt))
        lengths[prompt].append(full)
    report = {
        "max_tokens": max_tokens, "tokenizer": tok.model_dir,
        "prompts": {str(p): length_stats(v, max_tokens) for p, v in sorted(lengths.items())},
        "all": length_stats([n for v in lengths.values() for n in v], max_tokens),
        "skipped": dict(skipped),
    }
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plots.length_histogram_png(lengths, max_tokens, output_dir / png_name)
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
