"""A trained StepER run answering multi-hop questions: stepwise (the student's own loop),
single-step retrieval (vanilla KD) and no retrieval, on one base with the run's weights
merged; EM / F1 / Acc, mean steps and latency per question per mode; answers JSONL,
metrics JSON, a table and a PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from aes_jax import runs
from aes_jax.data.multihop import MultihopExample, read_multihop
from aes_jax.eval import qa
from aes_jax.eval.stepwise_inference import MODES, StepwiseAnswerer, Trace
from aes_jax.eval.tables import aligned
from aes_jax.retrieval.bm25 import BM25
from aes_jax.retrieval.dense import DenseRetriever


def questions_for(run_dir: str | Path, split: str, questions_file: str = "",
                  limit: int = 0) -> list[MultihopExample]:
    """--questions=FILE, else the run's records dir: the input file of that split (the demo
    corpus's corpus/<split>.json)."""
    if questions_file:
        return read_multihop(questions_file, limit=limit).examples
    config = runs.load_config(run_dir)
    records = Path(config.data.records_dir or Path(run_dir) / "data")
    manifest = json.loads((records / "manifest.json").read_text())
    for path in manifest["inputs"]:
        if Path(path).stem == split:
            return read_multihop(path, limit=limit).examples
    raise FileNotFoundError(f"{records}/manifest.json: no input file for split {split!r} "
                            f"(have {[Path(p).stem for p in manifest['inputs']]}); give "
                            "--questions=FILE")


RETRIEVERS = ("bm25", "dense")


def answerer_for(run_dir: str | Path, step: Any = None, *, k: int | None = None,
                 max_steps: int = 5, batch_size: int = 8, max_new_tokens: int = 48,
                 retriever: str = "bm25") -> StepwiseAnswerer:
    """The run's merged weights over its records' passage store: BM25 (the index the
    records were built with) or dense (MiniLM over the same passages)."""
    if retriever not in RETRIEVERS:
        raise ValueError(f"retriever={retriever!r}: expected bm25 or dense")
    config, task = runs.load_run(run_dir)
    _, trainable, frozen = runs.restore_params(run_dir, config, task, step)
    cfg, params = task.lm.inference_params(task.model_part(trainable), frozen)
    records = task.records_dir
    index = BM25.load(records / "bm25")
    if retriever == "dense":
        index = DenseRetriever.minilm(index.passages)
    return StepwiseAnswerer(cfg, params, task.lm.tokenizer, index,
                            k=k or int(config.data.k), max_steps=max_steps,
                            max_new_tokens=max_new_tokens,
                            max_prompt_tokens=int(config.data.max_prompt_tokens),
                            batch_size=batch_size,
                            chat_template=bool(config.data.chat_template))


def evaluate(answerer: StepwiseAnswerer, examples: Sequence[MultihopExample],
             modes: Sequence[str] = MODES) -> tuple[dict[str, dict], dict[str, list[Trace]]]:
    """({mode: {em, f1, acc, n, steps, seconds_per_question}}, {mode: traces})."""
    metrics, traces = {}, {}
    golds = [e.answer for e in examples]
    for mode in modes:
        # One untimed question first: the compile is not charged to the first batch.
        answerer.answer([examples[0].question], mode)
        got = answerer.answer([e.question for e in examples], mode)
        report = qa.qa_report([t.answer for t in got], golds)
        report["steps"] = float(np.mean([len(t.steps) for t in got]))
        report["seconds_per_question"] = float(np.mean([t.seconds for t in got]))
        metrics[mode], traces[mode] = report, got
    return metrics, traces


def write_answers(path: str | Path, examples: Sequence[MultihopExample],
                  traces: dict[str, list[Trace]], metrics: dict[str, dict]) -> list[Path]:
    """ANSWERS.jsonl (one line per question and mode, every step), ANSWERS.metrics.json,
    ANSWERS.png (EM / F1 / Acc per mode)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for mode, got in traces.items():
            for e, t in zip(examples, got):
                f.write(json.dumps({"id": e.id, "mode": mode, "question": e.question,
                                    "gold": e.answer, "answer": t.answer,
                                    "em": qa.exact_match(t.answer, e.answer),
                                    "f1": qa.f1(t.answer, e.answer), "seconds": t.seconds,
                                    "steps": [s.to_json() for s in t.steps]}) + "\n")
    metrics_path = path.with_suffix(".metrics.json")
    metrics_path.write_text(json.dumps(metrics, indent=1) + "\n")
    fig = Figure(figsize=(7, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(metrics))
    for i, key in enumerate(("em", "f1", "acc")):
        ax.bar(x + (i - 1) * 0.25, [100 * m[key] for m in metrics.values()], 0.25,
               label=key.upper())
    ax.set_xticks(x, list(metrics))
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend()
    ax.set_title(f"{path.stem}: {next(iter(metrics.values()))['n']} questions")
    png = path.with_suffix(".png")
    fig.savefig(png)
    return [path, metrics_path, png]


def table_lines(metrics: dict[str, dict]) -> list[str]:
    rows = [("mode", "EM", "F1", "Acc", "steps", "s / question")]
    rows += [(mode, f"{100 * m['em']:.1f}", f"{100 * m['f1']:.1f}", f"{100 * m['acc']:.1f}",
              f"{m['steps']:.2f}", f"{m['seconds_per_question']:.3f}")
             for mode, m in metrics.items()]
    return aligned(rows)
