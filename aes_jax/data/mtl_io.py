"""LLaMA-AES instruction datasets on disk: examples, JSONL files and dataset directories.

A dataset is a directory of ``{train,dev,test}.jsonl`` in the PyTorch original's layout
(one ``{"instruction", "output"}`` object per line, plus ``essay_id``/``traits``/
``scores``/``source``) and ``manifest.json`` (format :data:`MTL_VERSION`) naming the
traits and their codecs. Every example read is checked against those codecs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aes_jax.data.answer_format import (FEEDBACK_MARKER, answer_line, essay_from_instruction,
                                        parse_scores)
from aes_jax.data.asap import SPLITS
from aes_jax.data.read_report import refuse_existing
from aes_jax.data.score_codec import ScoreCodec
from aes_jax.data.tsv_records import AUTO, check_encoding, decode_lines

__all__ = [
    "MTL_VERSION",
    "MTL_FILES",
    "MtlExample",
    "read_jsonl",
    "read_jsonl_counted",
    "write_jsonl",
    "check_example",
    "example_from_dict",
    "mtl_manifest",
    "read_manifest",
    "write_mtl_dir",
    "load_mtl_dir",
]

log = logging.getLogger(__name__)

MTL_VERSION = "aes_jax.mtl/1"
# Any of these in a directory means a dataset is there (a complete one, or one being written).
MTL_FILES = ("manifest.json", *(f"{s}.jsonl" for s in SPLITS))


@dataclasses.dataclass
class MtlExample:
    instruction: str
    output: str
    essay_id: str = ""
    traits: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()   # original scale, in ``traits`` order
    source: str = ""                 # file:line the essay (or the JSONL row) came from

    @property
    def essay(self) -> str | None:
        """The essay inside the instruction (see :func:`essay_from_instruction`), for
        ``encode_example(..., essay=example.essay)``; None if it was not built here."""
        return essay_from_instruction(self.instruction)

    def name(self) -> str:
        """How error messages refer to this example."""
        parts = [f"essay {self.essay_id}" if self.essay_id else "",
                 f"({self.source})" if self.source else ""]
        named = " ".join(p for p in parts if p)
        return named or f"example {self.instruction[:40]!r}..."


def _example_from_json(obj: Any, where: str) -> MtlExample:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object with \"instruction\" and \"output\", "
                         f"got {type(obj).__name__}")
    for key in ("instruction", "output"):
        if not isinstance(obj.get(key), str):
            raise ValueError(f"{where}: expected a string \"{key}\" field, got "
                             f"{obj.get(key)!r:.60}")
    instruction = obj["instruction"]
    extra = obj.get("input")
    if isinstance(extra, str) and extra.strip():
        # Alpaca-style rows put the essay in "input"; it belongs after the instruction.
        instruction = f"{instruction}\n\n{extra}"
    traits = obj.get("traits", [])
    scores = obj.get("scores", [])
    if not isinstance(traits, list) or not all(isinstance(t, str) for t in traits):
        raise ValueError(f"{where}: \"traits\" must be a list of strings, got {traits!r:.80}")
    if not isinstance(scores, list) or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
        raise ValueError(f"{where}: \"scores\" must be a list of numbers, got {scores!r:.80}")
    if traits and scores and len(traits) != len(scores):
        raise ValueError(f"{where}: {len(traits)} traits but {len(scores)} scores")
    essay_id = obj.get("essay_id", "")
    if not isinstance(essay_id, (str, int)) or isinstance(essay_id, bool):
        raise ValueError(f"{where}: \"essay_id\" must be a string or an integer")
    source = obj.get("source", "")
    return MtlExample(instruction=instruction, output=obj["output"], essay_id=str(essay_id),
                      traits=tuple(traits), scores=tuple(float(s) for s in scores),
                      source=str(source) if source else where)


def example_from_dict(obj: Any, where: str) -> MtlExample:
    """One example from a JSON-like row (the JSONL fields); errors name ``where``. Other
    readers (``hf_inputs``) map their columns onto these fields and call this."""
    return _example_from_json(obj, where)


def _text_lines(path: Path, encoding: str) -> Iterator[str]:
    if check_encoding(encoding) == AUTO:
        # JSON text is UTF-8, but hand-made files may hold cp1252 lines (tsv_records).
        yield from decode_lines(path.read_bytes(), AUTO).lines
        return
    with open(path, encoding=encoding) as f:
        yield from f


def read_jsonl_counted(path: str | os.PathLike, encoding: str = "utf-8"
                       ) -> tuple[list[MtlExample], int]:
    """(examples, blank lines skipped) of a JSONL file; a bad line raises naming file:line.

    An example without a ``source`` key gets the JSONL ``file:line`` as its source, so
    later errors can point back at the row. ``encoding="auto"`` reads each line as
    UTF-8, and its bytes that are not UTF-8 as cp1252 (``tsv_records.decode_lines``).
    """
    path = Path(path)
    examples: list[MtlExample] = []
    blank = 0
    for line_no, line in enumerate(_text_lines(path, encoding), start=1):
        if not line.strip():
            blank += 1
            continue
        where = f"{path}:{line_no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); "
                             "expected one object with \"instruction\" and \"output\" "
                             "per line") from None
        examples.append(_example_from_json(obj, where))
    return examples, blank


def read_jsonl(path: str | os.PathLike, encoding: str = "utf-8") -> list[MtlExample]:
    """Examples of a JSONL file (see :func:`read_jsonl_counted`); blank lines are logged."""
    examples, blank = read_jsonl_counted(path, encoding)
    if blank:
        log.info("%s: skipped %d blank line(s)", path, blank)
    return examples


def _example_to_json(example: MtlExample) -> dict[str, Any]:
    obj: dict[str, Any] = {"instruction": example.instruction, "output": example.output}
    if example.essay_id:
        obj["essay_id"] = example.essay_id
    if example.traits:
        obj["traits"] = list(example.traits)
    if example.scores:
        obj["scores"] = [float(s) for s in example.scores]
    if example.source:
        obj["source"] = example.source
    return obj


def write_jsonl(path: str | os.PathLike, examples: Sequence[MtlExample]) -> int:
    """Write one JSON object per line (written to a temporary name, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for example in examples:
            f.write(json.dumps(_example_to_json(example), ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return len(examples)


def check_example(example: MtlExample, codecs: Sequence[ScoreCodec],
                  traits: Sequence[str] | None = None) -> list[int]:
    """The example's digits after checking them against ``codecs`` (and ``traits``).

    The first line must hold exactly one digit per codec, each in its codec's range; when
    the example carries traits/scores they must agree. Errors name the example.
    """
    k = len(codecs)
    line = answer_line(example.output)
    tokens = line.split()
    digits, status = parse_scores(line, k)
    if status != "ok" or len(tokens) != k or line != " ".join(tokens):
        raise ValueError(f"{example.name()}: the output's first line {line!r:.80} is not "
                         f"{k} single digits separated by single spaces")
    for trait_k, (codec, d) in enumerate(zip(codecs, digits)):
        lo_d, hi_d = codec.digit_range
        if not lo_d <= d <= hi_d:  # type: ignore[operator]
            raise ValueError(f"{example.name()}: digit {d} of trait {trait_k} is outside its "
                             f"codec's digits {lo_d}-{hi_d}")
    if traits is not None and example.traits and tuple(example.traits) != tuple(traits):
        raise ValueError(f"{example.name()}: traits {list(example.traits)} differ from the "
                         f"dataset's {list(traits)}")
    if example.scores:
        if len(example.scores) != k:
            raise ValueError(f"{example.name()}: {len(example.scores)} scores for {k} traits")
        for codec, d, s in zip(codecs, digits, example.scores):
            try:
                expected = codec.encode(s)
            except ValueError as e:
                raise ValueError(f"{example.name()}: {e}") from None
            if expected != d:
                raise ValueError(f"{example.name()}: score {s:g} encodes to digit "
                                 f"{expected} but the output says {d}")
    return digits  # type: ignore[return-value]


def mtl_manifest(traits: Sequence[str], codecs: Sequence[ScoreCodec],
                 counts: Mapping[str, int], source_info: Mapping[str, Any]) -> dict[str, Any]:
    """The ``manifest.json`` of a dataset directory.

    ``source_info`` adds what the builder knows (``sources``, ``skipped``,
    ``skip_examples``, ``split``, ``feedback``, ...); ``sources`` and ``skipped`` default
    to empty.
    """
    if len(traits) != len(codecs):
        raise ValueError(f"mtl_manifest: {len(traits)} traits but {len(codecs)} codecs")
    manifest: dict[str, Any] = {
        "format": MTL_VERSION,
        "traits": list(traits),
        "codecs": [c.to_dict() for c in codecs],  # aligned with "traits"
        "counts": {s: int(n) for s, n in counts.items()},
        "sources": [],
        "skipped": {},
        "answer_format": "first line: one digit per trait, space-separated, in trait order"
                         f"; optional blank line + '{FEEDBACK_MARKER} ...'",
    }
    manifest.update(source_info)
    return manifest


def write_mtl_dir(output_dir: str | os.PathLike, splits: Mapping[str, Sequence[MtlExample]],
                  manifest: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Write ``{split}.jsonl`` per split and ``manifest.json`` last (its presence = done)."""
    output_dir = Path(output_dir)
    refuse_existing(output_dir, overwrite, names=MTL_FILES)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "manifest.json").unlink(missing_ok=True)
    for split, examples in splits.items():
        write_jsonl(output_dir / f"{split}.jsonl", examples)
    tmp = output_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, output_dir / "manifest.json")
    return output_dir


def read_manifest(manifest_path: str | os.PathLike, traits: Sequence[str] | None = None,
                  codecs: Sequence[ScoreCodec] | None = None
                  ) -> tuple[dict[str, Any], list[str], list[ScoreCodec]]:
    """(manifest, traits, codecs) of a ``manifest.json``, checked (format, one codec per
    trait, agreement with any ``traits``/``codecs`` given); errors name the file."""
    manifest_path = Path(manifest_path)
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != MTL_VERSION:
        raise ValueError(f"{manifest_path}: format {manifest.get('format')!r}, expected "
                         f"{MTL_VERSION!r}; rebuild with launch.build_dataset --format=mtl")
    m_traits = list(manifest["traits"])
    m_codecs = [ScoreCodec.from_dict(c) for c in manifest["codecs"]]
    if len(m_codecs) != len(m_traits):
        raise ValueError(f"{manifest_path}: {len(m_traits)} traits but {len(m_codecs)} "
                         "codecs")
    if traits is not None and list(traits) != m_traits:
        raise ValueError(f"{manifest_path}: traits {m_traits}, but {list(traits)} given")
    if codecs is not None and list(codecs) != m_codecs:
        raise ValueError(f"{manifest_path}: codecs {m_codecs}, but {list(codecs)} given")
    return manifest, m_traits, m_codecs


def load_mtl_dir(path: str | os.PathLike, traits: Sequence[str] | None = None,
                 codecs: Sequence[ScoreCodec] | None = None
                 ) -> tuple[dict[str, Any], dict[str, list[MtlExample]]]:
    """(manifest, split -> examples) of a dataset directory, every example checked.

    With ``manifest.json`` the traits and codecs come from it (and must match any given);
    a plain directory of JSONL files is accepted only when ``traits`` and ``codecs`` are
    passed, and gets a manifest made up from them.
    """
    path = Path(path)
    manifest_path = path / "manifest.json"
    if manifest_path.is_file():
        manifest, traits, codecs = read_manifest(manifest_path, traits, codecs)
        names = list(manifest.get("counts", {})) or list(SPLITS)
    else:
        if traits is None or codecs is None:
            raise FileNotFoundError(f"{path}: no manifest.json; pass traits and codecs to read "
                                    "a plain directory of JSONL files")
        if len(traits) != len(codecs):
            raise ValueError(f"{len(traits)} traits but {len(codecs)} codecs")
        names = [s for s in SPLITS if (path / f"{s}.jsonl").is_file()]
        if not names:
            raise FileNotFoundError(f"{path}: none of {[f'{s}.jsonl' for s in SPLITS]}")
        manifest = mtl_manifest(traits, codecs, {}, {"note": "no manifest.json; traits and "
                                                     "codecs given by the caller"})
    splits: dict[str, list[MtlExample]] = {}
    blanks: dict[str, int] = {}
    for split in names:
        file = path / f"{split}.jsonl"
        if not file.is_file():
            raise FileNotFoundError(f"{file} is missing (the manifest lists split {split!r})")
        examples, blanks[split] = read_jsonl_counted(file)
        for example in examples:
            check_example(example, codecs, traits)
        expected = manifest.get("counts", {}).get(split)
        if manifest_path.is_file() and expected is not None and expected != len(examples):
            raise ValueError(f"{file}: {len(examples)} examples but the manifest says "
                             f"{expected}; the dataset is damaged, rebuild it")
        splits[split] = examples
    if not manifest_path.is_file():
        manifest["counts"] = {s: len(v) for s, v in splits.items()}
    manifest["blank_lines"] = blanks
    return manifest, splits
