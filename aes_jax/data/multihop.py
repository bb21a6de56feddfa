"""Multi-hop QA corpora as published, read into one shape (StepER's input).

* HotpotQA: one JSON list of {"_id", "question", "answer", "context": [[title,
  [sentences]]], "supporting_facts": [[title, sentence_index]]} (train / dev distractor);
* 2WikiMultiHopQA: the same shape plus "evidences" ([subject, relation, object] triples)
  and "type";
* MuSiQue: JSONL of {"id", "question", "answer", "paragraphs": [{"idx", "title",
  "paragraph_text", "is_supporting"}]} (+ "answerable" in the full version).

Every record either becomes a `MultihopExample` or is skipped and counted with its
`file:line` (`strict=True` raises instead). Lines of a JSON list are found while
decoding it record by record, so errors point into the file as the editor shows it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

from aes_jax.data.read_report import DataFormatError, FileStats, SkipCounter, jsonl_objects

FORMATS = ("hotpotqa", "2wiki", "musique")


@dataclasses.dataclass(frozen=True)
class Passage:
    title: str
    text: str
    supporting: bool = False  # a gold supporting passage (HotpotQA: named in supporting_facts)


@dataclasses.dataclass(frozen=True)
class MultihopExample:
    id: str
    question: str
    answer: str
    passages: tuple[Passage, ...]
    source: str  # "FILE:LINE"
    extra: dict = dataclasses.field(default_factory=dict, compare=False)  # type, evidences


@dataclasses.dataclass
class MultihopRead:
    examples: list[MultihopExample]
    stats: FileStats
    skip_examples: list[str]

    def line(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.stats.skipped.items()))
        return (f"{self.stats.path} ({self.stats.format}): {self.stats.rows} records, "
                f"{len(self.examples)} read" + (f", skipped: {skipped}" if skipped else ""))


def json_list_records(text: str, name: str) -> Iterator[tuple[str, Any]]:
    """("NAME:LINE", item) for every item of a top-level JSON list, LINE where it starts."""
    decoder = json.JSONDecoder()
    i = _skip_space(text, 0)
    if i >= len(text) or text[i] != "[":
        raise DataFormatError(f"{name}:1: expected a JSON list of records")
    i = _skip_space(text, i + 1)
    if i < len(text) and text[i] == "]":
        return
    while True:
        where = f"{name}:{text.count(chr(10), 0, i) + 1}"
        try:
            item, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{name}:{e.lineno}: not valid JSON ({e.msg} at column "
                                  f"{e.colno})") from e
        yield where, item
        i = _skip_space(text, i)
        if i < len(text) and text[i] == ",":
            i = _skip_space(text, i + 1)
            continue
        if i < len(text) and text[i] == "]":
            return
        raise DataFormatError(f"{name}:{text.count(chr(10), 0, i) + 1}: expected ',' or ']' "
                              "between records")


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _text(record: dict, key: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _Bad("missing field", f"{key!r} must be a non-empty string")
    return value


class _Bad(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _hotpot_like(record: dict, where: str) -> MultihopExample:
    qid = record.get("_id", record.get("id"))
    if not isinstance(qid, str) or not qid:
        raise _Bad("missing field", "'_id' must be a non-empty string")
    context = record.get("context")
    if not isinstance(context, list) or not context:
        raise _Bad("bad context", "'context' must be a non-empty list of [title, [sentences]]")
    facts = record.get("supporting_facts", [])
    if not isinstance(facts, list):
        raise _Bad("bad supporting_facts", "'supporting_facts' must be a list of [title, i]")
    gold_titles = {f[0] for f in facts if isinstance(f, list) and f}
    passages = []
    for j, item in enumerate(context):
        if (not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str)
                or not isinstance(item[1], list)
                or not all(isinstance(s, str) for s in item[1])):
            raise _Bad("bad context", f"context[{j}] must be [title, [sentences]]")
        passages.append(Passage(item[0], "".join(item[1]).strip(), item[0] in gold_titles))
    # "hops": the demo corpus's hop chain (what its oracle teacher writes).
    extra = {k: record[k] for k in ("type", "level", "evidences", "hops") if k in record}
    return MultihopExample(qid, _text(record, "question"), _text(record, "answer"),
                           tuple(passages), where, extra)


def _musique(record: dict, where: str) -> MultihopExample:
    qid = record.get("id")
    if not isinstance(qid, str) or not qid:
        raise _Bad("missing field", "'id' must be a non-empty string")
    if record.get("answerable") is False:
        raise _Bad("unanswerable", "'answerable' is false")
    paragraphs = record.get("paragraphs")
    if not isinstance(paragraphs, list) or not paragraphs:
        raise _Bad("bad paragraphs", "'paragraphs' must be a non-empty list")
    passages = []
    for j, p in enumerate(paragraphs):
        if not isinstance(p, dict) or not isinstance(p.get("paragraph_text"), str):
            raise _Bad("bad paragraphs", f"paragraphs[{j}] needs a 'paragraph_text' string")
        passages.append(Passage(str(p.get("title", "")), p["paragraph_text"].strip(),
                                bool(p.get("is_supporting", False))))
    return MultihopExample(qid, _text(record, "question"), _text(record, "answer"),
                           tuple(passages), where, {})


def detect_format(text: str) -> str:
    """musique for JSONL (one object per line), else hotpotqa / 2wiki (a JSON list; 2Wiki
    records carry "evidences")."""
    if not text.lstrip().startswith("["):
        return "musique"
    return "2wiki" if '"evidences"' in text[:200000] else "hotpotqa"


def read_multihop(path: str | Path, fmt: str = "auto", strict: bool = False,
                  limit: int = 0) -> MultihopRead:
    """Reads a HotpotQA / 2WikiMultiHopQA JSON or a MuSiQue JSONL file (`fmt` = auto
    detects it). Bad records are skipped and counted per reason with `file:line`
    examples, or raise `DataFormatError` under `strict`. `limit` > 0 stops after that
    many examples."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 (byte {e.start}); the corpora are "
                              "published as UTF-8 JSON") from None
    fmt = detect_format(text) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected auto or one of {', '.join(FORMATS)}")
    stats = FileStats(path=str(path), sha256=hashlib.sha256(raw).hexdigest(), format=fmt)
    skips = SkipCounter(strict)
    records = (jsonl_objects(text.splitlines(), str(path)) if fmt == "musique"
               else json_list_records(text, str(path)))
    examples: list[MultihopExample] = []
    seen: set[str] = set()
    for where, record in records:
        stats.rows += 1
        try:
            if not isinstance(record, dict):
                raise _Bad("not an object", f"expected a JSON object, got {type(record).__name__}")
            example = (_musique(record, where) if fmt == "musique"
                       else _hotpot_like(record, where))
            if example.id in seen:
                raise _Bad("repeated id", f"id {example.id!r} appeared before")
        except _Bad as bad:
            skips.skip(where, bad.reason, bad.detail, stats)
            continue
        seen.add(example.id)
        examples.append(example)
        stats.essays += 1  # FileStats' count of rows kept
        if limit and len(examples) >= limit:
            break
    return MultihopRead(examples, stats, skips.examples)


def write_hotpotqa(path: str | Path, examples: list[MultihopExample]) -> Path:
    """Examples as a HotpotQA JSON list (supporting facts: every sentence of a supporting
    passage, as sentence 0 since passages are written as one sentence)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"_id": e.id, "question": e.question, "answer": e.answer,
                "context": [[p.title, [p.text]] for p in e.passages],
                "supporting_facts": [[p.title, 0] for p in e.passages if p.supporting],
                **e.extra} for e in examples]
    path.write_text(json.dumps(records, indent=1) + "\n")
    return path
