"""LLaMA-AES as a `Scorer`: the essays to score (a split of the run's dataset, a JSONL
file in the PyTorch original's format, or a parquet/CSV/JSON file or save_to_disk dir
read through Hugging Face `datasets`), greedy + expected-score decoding through
`eval/llm_scoring.py`, and the scores CSV with its metrics JSON."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from aes_jax.data import mtl_io, read_report
from aes_jax.data.score_format import ScoringInput
from aes_jax.eval import llm_scoring
from aes_jax.tasks.capabilities import EssaysRead


def split_inputs(task: Any, split: str, limit: int = 0) -> list[ScoringInput]:
    """The prompts (and gold digits) of a dataset split, encoded as training data is."""
    examples = task.split_examples(split, limit)
    encoded = task.encode(examples, split)
    return [ScoringInput(ex.essay_id or str(i), np.asarray(enc.prompt_ids, np.int32),
                         np.asarray(enc.digit_value, np.float64))
            for i, (ex, enc) in enumerate(zip(examples, encoded))]


def _file_examples(path: str | Path, encoding: str
                   ) -> tuple[list[mtl_io.MtlExample], int, str, str | None]:
    """(examples, blank lines/rows, format, split read) of an essays file: `.jsonl` by
    our own reader (file:line errors, `encoding`), anything else through Hugging Face
    `datasets` (parquet/CSV/JSON file or save_to_disk dir; its `test` split when it has
    several, else its only one)."""
    if Path(path).suffix.lower() == ".jsonl" and not Path(path).is_dir():
        examples, blank = mtl_io.read_jsonl_counted(path, encoding)
        return examples, blank, "jsonl", None
    from aes_jax.data import hf_inputs  # imports `datasets`: only for these inputs

    splits, blanks, name = hf_inputs.read_hf_examples(path, require_output=False)
    split = next(iter(splits)) if len(splits) == 1 else "test"
    if split not in splits:
        raise ValueError(f"{name}: splits {sorted(splits)}; scoring reads the 'test' split "
                         "or a dataset with one split")
    kind = "save_to_disk" if Path(path).is_dir() else Path(path).suffix.lstrip(".").lower()
    return splits[split], blanks[split], f"hf:{kind}", split


def jsonl_inputs(task: Any, path: str | Path, limit: int = 0, *,
                 encoding: str = "auto") -> EssaysRead:
    """Prompts of an essays file: JSONL in the PyTorch original's format, or what
    `hf_inputs` reads (parquet, CSV, JSON, a save_to_disk dir; columns mapped by its
    table). An example whose output holds a score line is encoded exactly like training
    data (gold known, long essays shortened); one with an empty (or no) output is scored
    without gold, and its prompt must fit seq_len as it is. Such a file has no skipped
    rows: a bad row raises naming file:line or file[split] row N (so `strict` changes
    nothing); blank lines / all-empty rows are counted."""
    seq_len = task.options.data.seq_len
    examples, blank, fmt, split = _file_examples(path, encoding)
    inputs = []
    for i, ex in enumerate(examples[:limit or None]):
        essay_id = ex.essay_id or f"{Path(path).name}:{i + 1}"
        if ex.output.strip():
            enc = task.encode([ex], str(path))[0]
            inputs.append(ScoringInput(essay_id, np.asarray(enc.prompt_ids, np.int32),
                                       np.asarray(enc.digit_value, np.float64)))
            continue
        tok = task.tokenizer
        ids = np.asarray(tok.encode(tok.chat_prompt(ex.instruction)), np.int32)
        if len(ids) > seq_len:
            raise ValueError(f"{ex.name()}: prompt of {len(ids)} tokens exceeds seq_len="
                             f"{seq_len}; shorten the essay")
        inputs.append(ScoringInput(essay_id, ids, None))
    stats = read_report.FileStats(path=str(path), sha256="", format=fmt, rows=len(examples),
                                  essays=len(examples), blank_lines=blank, split=split,
                                  encoding=encoding if fmt == "jsonl" else "")
    report = read_report.summary(read_report.ReadResult(examples, [stats],
                                                        collections.Counter(), []))
    if len(inputs) < len(examples):
        report["not_scored_beyond_limit"] = len(examples) - len(inputs)
    return EssaysRead(inputs, report)


def score(task: Any, trainable: dict, frozen: dict, essays: Sequence[ScoringInput], *,
          batch_size: int, full_answer: bool = False) -> dict[str, Any]:
    cfg, params = task.inference_model(trainable, frozen)
    return llm_scoring.score_inputs(cfg, params, task.tokenizer, task.score_format(), essays,
                                    batch_size, task.options.max_new_tokens,
                                    score_line_only=not full_answer)


def write_scores(task: Any, scored: dict[str, Any], path: Path, meta: Mapping[str, Any]
                 ) -> dict[str, Any]:
    """The CSV, and beside it (when some essays have gold) `<csv stem>.metrics.json`."""
    fmt = task.score_format()
    path.parent.mkdir(parents=True, exist_ok=True)
    llm_scoring.write_scores_csv(fmt, scored, path)
    report = {**meta, **llm_scoring.scoring_report(fmt, scored)}
    if report["num_with_gold"]:
        path.with_suffix(".metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
