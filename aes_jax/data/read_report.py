"""What a corpus reader reports besides its essays, shared by the ASAP and ELLIPSE readers.

A read never drops a row silently: :class:`SkipCounter` counts each bad row under a reason
and keeps a few ``file:line: detail`` examples (or raises the reader's
:class:`DataFormatError` subclass when ``strict``); :class:`FileStats` describes each file
read (including how its lines were decoded), and :class:`ReadResult` carries the essays
together with all of that; :func:`summary` is its JSON-able account (what
``launch.score`` prints). :func:`refuse_existing` is the guard every dataset builder runs
before writing.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aes_jax.data.tsv_records import LineDecoding

__all__ = ["DataFormatError", "FileStats", "ReadResult", "SkipCounter", "decoding_lines",
           "decoding_report", "jsonl_objects", "refuse_existing", "skip_lines", "summary"]

EXAMPLES_PER_REASON = 5


class DataFormatError(ValueError):
    """A file that cannot be read as corpus data; the message names file and line."""


def jsonl_objects(lines: Sequence[str], name: str) -> Iterator[tuple[str, dict]]:
    """(where, object) for every non-blank JSONL line; `where` = "NAME:LINE" starts the
    callers' errors. A line that is not JSON, or not an object, raises naming it."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from e
        if not isinstance(obj, dict):
            raise DataFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        yield where, obj


@dataclasses.dataclass
class FileStats:
    path: str
    sha256: str
    format: str                  # the layout detected from the header
    rows: int = 0                # data rows seen (after the header, blank lines excluded)
    essays: int = 0              # rows read into essays
    blank_lines: int = 0
    # The whole file's decoding (header and blank lines included); readers that keep
    # only some rows report those rows' own counts beside it.
    lines_with_replacement: int = 0  # lines whose undecodable bytes became U+FFFD
    replacement_chars: int = 0
    split: str | None = None
    skipped: dict[str, int] = dataclasses.field(default_factory=dict)
    encoding: str = ""           # as asked: "auto" or a codec name
    decoded_lines: dict[str, int] = dataclasses.field(default_factory=dict)  # codec -> lines

    def set_decoding(self, encoding: str, counts: LineDecoding) -> None:
        self.encoding = encoding
        self.decoded_lines = counts.by_encoding(encoding)
        self.lines_with_replacement = counts.replaced_lines
        self.replacement_chars = counts.replacement_chars


@dataclasses.dataclass
class ReadResult:
    essays: list[Any]              # asap.Essay, ell.EllEssay or essays_tsv.NewEssay, in file order
    files: list[FileStats]
    skipped: collections.Counter   # reason -> rows skipped
    skip_examples: list[str]       # "file:line: detail", the first few of each reason
    # Things kept but worth reporting (e.g. ignored values, repaired quotes).
    notes: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def replacement_chars(self) -> int:
        return sum(f.replacement_chars for f in self.files)

    @property
    def layouts(self) -> list[str]:
        return sorted({f.format for f in self.files})


class SkipCounter:
    """Skip bookkeeping for one read: counts per reason, examples, or raise when strict.

    ``error`` is the reader's own format error, so a strict read fails with the class its
    callers catch.
    """

    def __init__(self, strict: bool, error: type[ValueError] = DataFormatError):
        self.strict = strict
        self.error = error
        self.counts: collections.Counter = collections.Counter()
        self.examples: list[str] = []

    def skip(self, where: str, reason: str, detail: str, stats: FileStats) -> None:
        message = f"{where}: {reason}: {detail}"
        if self.strict:
            raise self.error(message + " (strict=True; without it the row is skipped "
                             "and counted)")
        self.counts[reason] += 1
        stats.skipped[reason] = stats.skipped.get(reason, 0) + 1
        if self.counts[reason] <= EXAMPLES_PER_REASON:
            self.examples.append(message)


def decoding_report(counts: LineDecoding, encoding: str) -> dict[str, Any]:
    """JSON-able decoding of some lines: ``{"encoding", "lines": {codec: n},
    "lines_with_replacement", "replacement_chars"}``."""
    return {"encoding": encoding, "lines": counts.by_encoding(encoding),
            "lines_with_replacement": counts.replaced_lines,
            "replacement_chars": counts.replacement_chars}


def summary(result: ReadResult) -> dict[str, Any]:
    """What a read saw, JSON-able: per file its rows, essays, blank lines and decoding;
    rows skipped per reason with ``file:line: detail`` examples; notes. Every data row of
    the files is either one of ``essays`` or counted in ``skipped``."""
    files = [{"path": f.path, "format": f.format, "rows": f.rows, "essays": f.essays,
              "blank_lines": f.blank_lines, "skipped": dict(sorted(f.skipped.items())),
              "encoding": f.encoding, "decoded_lines": dict(f.decoded_lines),
              "replacement_chars": f.replacement_chars} for f in result.files]
    return {"files": files, "rows": sum(f.rows for f in result.files),
            "essays": len(result.essays), "skipped": dict(sorted(result.skipped.items())),
            "skip_examples": list(result.skip_examples), "notes": dict(result.notes)}


def skip_lines(report: Mapping[str, Any], examples: int = 10) -> list[str]:
    """Summary lines of a read report or dataset manifest: rows skipped per reason, the
    first `examples` file:line examples, the notes."""
    skipped = report.get("skipped", {})
    lines = ["  skipped rows: " + (", ".join(f"{r} {n}" for r, n in skipped.items())
                                   if skipped else "none")]
    lines += [f"    {example}" for example in report.get("skip_examples", [])[:examples]]
    lines += [f"  note: {note}: {n}" for note, n in report.get("notes", {}).items()]
    return lines


def decoding_lines(manifest: dict[str, Any]) -> list[str]:
    """A dataset manifest's summary lines: how the kept essays' lines were decoded,
    and the bytes lost (kept vs whole files)."""
    decoding = manifest.get("decoding")
    if not decoding:
        return []
    out = ["  lines decoded (essays kept): " + ", ".join(
        f"{codec} {n}" for codec, n in decoding["lines"].items())]
    whole = sum(s.get("replacement_chars", 0) for s in manifest.get("sources", []))
    if decoding["replacement_chars"] or whole:
        out.append(f"  undecodable bytes replaced by U+FFFD: {decoding['replacement_chars']} "
                   f"in {decoding['lines_with_replacement']} lines of the essays kept "
                   f"({whole} in the whole input files)")
    return out


def refuse_existing(output_dir: str | os.PathLike, overwrite: bool,
                    names: Sequence[str] = ("manifest.json",)) -> None:
    """FileExistsError when ``output_dir`` holds any of a dataset's files ``names`` and not
    ``overwrite``. Builders call it before the slow part, so a refusal costs nothing."""
    output_dir = Path(output_dir)
    existing = [n for n in names if (output_dir / n).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds a dataset ({existing[0]}); pass "
                              "overwrite=True (--overwrite) to replace it")
