"""RLearner's evaluation of generated explanations, per model, against the questions:

* `bleu`: sentence BLEU (sacrebleu, 0-100) against the human explanation;
* `bertscore_human` / `bertscore_answer`: BERTScore F1 against the human explanation and
  against the correct option's text (computed for real, on a local encoder);
* `answer_coverage`: share of the correct option's words of 4+ letters found in the
  explanation (options without such a word are left out and counted);
* `verifier`: the verifier's rating (0-5);
* `nli_entailment`: P(entailment) of the correct option given the explanation, when an
  NLI model is given;
* `seconds_per_question`: mean generation latency.

Outputs: a JSON of every figure, a Markdown table and a PNG bar chart.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from aes_jax.data.mcq import Mcq
from aes_jax.data.read_report import DataFormatError, jsonl_objects
from aes_jax.eval.tables import aligned

_WORD = re.compile(r"[A-Za-z]{4,}")
METRICS = ("bleu", "bertscore_human", "bertscore_answer", "answer_coverage", "verifier",
           "nli_entailment", "seconds_per_question")


def sentence_bleu(hypothesis: str, reference: str) -> float:
    import sacrebleu

    return float(sacrebleu.sentence_bleu(hypothesis, [reference]).score)


def answer_coverage(explanation: str, answer_text: str) -> float | None:
    """Share of the answer's distinct 4+-letter words (case-folded) in the explanation;
    None when the answer has no such word (e.g. "7", "pH")."""
    wanted = {w.lower() for w in _WORD.findall(answer_text)}
    if not wanted:
        return None
    have = {w.lower() for w in _WORD.findall(explanation)}
    return len(wanted & have) / len(wanted)


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """`launch.explain`'s JSONL: {"id", "explanation", "seconds", ...} per line."""
    path = Path(path)
    rows = []
    for where, row in jsonl_objects(path.read_text(encoding="utf-8").splitlines(), str(path)):
        if not isinstance(row.get("id"), str) or not isinstance(row.get("explanation"), str):
            raise DataFormatError(f"{where}: expected string 'id' and 'explanation'")
        rows.append(row)
    return rows


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def evaluate_model(questions: Sequence[Mcq], explanations: Sequence[str],
                   seconds: Sequence[float] | None = None, *,
                   verifier: Callable[[Sequence[Mcq], Sequence[str]], np.ndarray] | None = None,
                   bertscore: Any = None,
                   nli: Callable[[Sequence[str], Sequence[str]], np.ndarray] | None = None,
                   keep_rows: bool = False) -> dict[str, Any]:
    """Every metric above for one model's explanations (aligned with `questions`); with
    `keep_rows`, also `rows`: the per-question values (for paired intervals)."""
    if len(questions) != len(explanations):
        raise ValueError(f"{len(questions)} questions but {len(explanations)} explanations")
    human = [q.explanation for q in questions]
    answers = [q.answer_text for q in questions]
    coverage = [answer_coverage(e, a) for e, a in zip(explanations, answers)]
    rows: dict[str, list[float]] = {
        "bleu": [sentence_bleu(e, h) for e, h in zip(explanations, human) if h]}
    out: dict[str, Any] = {
        "questions": len(questions),
        "bleu": _mean(rows["bleu"]),
        "answer_coverage": _mean([c for c in coverage if c is not None]),
        "coverage_skipped": sum(c is None for c in coverage),
        "empty_explanations": sum(not e.strip() for e in explanations),
        "mean_words": _mean([len(e.split()) for e in explanations]),
    }
    if bertscore is not None:
        rows["bertscore_human"] = bertscore.f1(explanations, human).tolist()
        rows["bertscore_answer"] = bertscore.f1(explanations, answers).tolist()
    if verifier is not None:
        rows["verifier"] = np.asarray(verifier(questions, explanations), float).tolist()
    if nli is not None:
        rows["nli_entailment"] = np.asarray(nli(explanations, answers), float).tolist()
    if seconds is not None:
        rows["seconds_per_question"] = [float(x) for x in seconds]
    for key in ("bertscore_human", "bertscore_answer", "verifier", "nli_entailment",
                "seconds_per_question"):
        if key in rows:
            out[key] = _mean(rows[key])
    if keep_rows:
        out["rows"] = rows
    return out


def write_report(results: Mapping[str, Mapping[str, Any]], out_prefix: str | Path,
                 notes: Sequence[str] = ()) -> list[Path]:
    """results: model name -> `evaluate_model` dict. Writes PREFIX.json, .md and .png."""
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    shown = [m for m in METRICS if any(m in r for r in results.values())]
    json_path = prefix.with_suffix(".json")
    json_path.write_text(json.dumps({"models": results, "notes": list(notes)}, indent=1) + "\n")
    rows = [["model", *shown]] + [[name, *(_fmt(r.get(m)) for m in shown)]
                                  for name, r in results.items()]
    md = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    md_path = prefix.with_suffix(".md")
    md_path.write_text("\n".join(md + [""] + [f"- {n}" for n in notes]) + "\n")
    png_path = prefix.with_suffix(".png")
    _bar_chart(results, [m for m in shown if m != "seconds_per_question"], png_path)
    print("\n".join(aligned(rows)))
    return [json_path, md_path, png_path]


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _bar_chart(results: Mapping[str, Mapping[str, Any]], metrics: Sequence[str], path: Path
               ) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.2), squeeze=False)
    names = list(results)
    for ax, metric in zip(axes[0], metrics):
        values = [results[n].get(metric, float("nan")) for n in names]
        ax.bar(range(len(names)), values, color="tab:blue")
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
