"""StepER's training data: multi-hop questions -> stepwise records (`data.stepwise`), by
an oracle (the demo corpus's known hop chains) or by a teacher (any `answer(questions) ->
traces` object: `eval.stepwise_builder` passes an LLM prompted step by step), keeping a
teacher's trace only when its final answer matches the gold one under the official
HotpotQA normalisation; drops are counted.

The passage store is the given passages file ({"title", "text"} JSONL, the demo corpus's
passages.jsonl) or the union of the input files' contexts (deduplicated by title), saved
with its BM25 index as OUT/bm25/. Every output records its teacher in OUT/manifest.json.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from aes_jax.data import stepwise as sw
from aes_jax.data.multihop import MultihopExample, read_multihop
from aes_jax.data.multihop_demo import LABEL, write_demo_corpus
from aes_jax.data.read_report import DataFormatError
from aes_jax.retrieval.bm25 import BM25

# (options, the BM25 index) -> an object with answer(questions) -> traces (.steps, .answer)
TeacherFactory = Callable[[Any, BM25], Any]
# (teacher's answer, gold answer) -> keep the trace (eval.qa.exact_match: the official
# HotpotQA normalisation; the eval layer supplies it with the teacher)
AnswerMatch = Callable[[str, str], float]


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    teacher: str = "oracle"  # "oracle" or a local LLaMA dir / .gguf
    k: int = 4
    max_steps: int = 5
    max_new_tokens: int = 48
    max_prompt_tokens: int = 768
    batch_size: int = 8
    limit: int = 0  # questions per input file (0 = all)
    strict: bool = False
    # Vanilla KD: one retrieval and the answer (oracle: the gold answer for every question).
    single_step: bool = False


def read_passages(path: str | Path) -> dict[str, str]:
    """title -> text from a {"title", "text"} JSONL file (errors name file:line)."""
    path = Path(path)
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}:{number}: not valid JSON ({e.msg})") from e
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), str)
                                                for k in ("title", "text")):
            raise DataFormatError(f"{path}:{number}: expected {{\"title\": str, \"text\": str}}")
        out.setdefault(obj["title"], obj["text"])
    return out


def passages_from_contexts(examples: Sequence[MultihopExample]) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in examples:
        for p in e.passages:
            out.setdefault(p.title, p.text)
    return out


def build_stepwise(inputs: Sequence[str | Path], out_dir: str | Path, options: BuildOptions,
                   passages_file: str | Path | None = None,
                   teacher: TeacherFactory | None = None,
                   answers_match: AnswerMatch | None = None) -> dict[str, Any]:
    """Writes OUT/<input stem>.jsonl per input file, OUT/bm25/ and OUT/manifest.json
    (returned). No inputs: the demo corpus is written to OUT/corpus/ and used.
    `options.teacher` other than "oracle" needs `teacher`, which builds it, and
    `answers_match`, which decides whose traces are kept."""
    out = Path(out_dir)
    corpus = None
    if not inputs:
        corpus = write_demo_corpus(out / "corpus")
        inputs = [out / "corpus" / f"{s}.json" for s in ("train", "dev", "test")]
        passages_file = out / "corpus" / "passages.jsonl"
    reads = {Path(p).stem: read_multihop(p, strict=options.strict, limit=options.limit)
             for p in inputs}
    store = (read_passages(passages_file) if passages_file else
             passages_from_contexts([e for r in reads.values() for e in r.examples]))
    titles = list(store)
    index = BM25([sw.passage_text(t, x) for t, x in store.items()])
    index.save(out / "bm25")
    answerer = None
    if options.teacher != "oracle":
        if teacher is None or answers_match is None:
            raise ValueError(f"teacher {options.teacher!r}: give a teacher factory and an "
                             "answer match (eval.stepwise_builder.build_stepwise) or use "
                             "the oracle")
        answerer = teacher(options, index)
    splits = {}
    for name, read in reads.items():
        counts = sw.OracleCounts()
        records = []
        if options.single_step:
            if answerer is not None:
                raise ValueError("single_step records come from the oracle (gold answers)")
            records = [sw.single_step_record(e, index, options.k) for e in read.examples]
            dropped = {}
        elif answerer is None:
            for e in tqdm(read.examples, desc=f"oracle traces: {name}", unit="question"):
                record = sw.oracle_record(e, index, titles, options.k, counts)
                if record is not None:
                    records.append(record)
            dropped = {"hop_not_retrieved": counts.hop_not_retrieved, "no_hops": counts.no_hops}
        else:
            wrong = 0
            for start in tqdm(range(0, len(read.examples), options.batch_size),
                              desc=f"teacher traces: {name}", unit="batch"):
                chunk = read.examples[start:start + options.batch_size]
                for e, t in zip(chunk, answerer.answer([e.question for e in chunk])):
                    if answers_match(t.answer, e.answer):
                        records.append(sw.StepwiseRecord(e.id, e.question, e.answer,
                                                         tuple(t.steps), options.teacher))
                    else:
                        wrong += 1
            dropped = {"wrong_answer": wrong}
        sw.write_records(out / f"{name}.jsonl", records)
        splits[name] = {"questions": len(read.examples), "records": len(records),
                        "dropped": dropped, "read": read.line(),
                        "skip_examples": read.skip_examples,
                        "steps": {kind: sum(s.type == kind for r in records for s in r.steps)
                                  for kind in sw.STEP_TYPES}}
    manifest = {"teacher": options.teacher, "options": dataclasses.asdict(options),
                "inputs": [str(p) for p in inputs], "corpus": LABEL if corpus else "",
                "passages": len(store), "passages_file": str(passages_file or ""),
                "splits": splits}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
