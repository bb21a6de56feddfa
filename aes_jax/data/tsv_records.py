"""Tab-separated records of the published ASAP files, read one physical line at a time.

Bytes become lines in :func:`decode_lines`. With ``encoding="auto"`` each line is read
as UTF-8, and the bytes of a line that are not valid UTF-8 as Windows-1252 (such a line
counts as a cp1252 line): the Kaggle ASAP file is mostly UTF-8 with a few hundred raw
cp1252 apostrophes (0x92), so neither codec alone reads it (cp1252 turns the UTF-8
characters into mojibake, UTF-8 loses the apostrophes), and a line may hold both. Bytes
no codec can read (explicit encodings; cp1252's five undefined bytes under auto) become
U+FFFD and are counted. :class:`LineDecoding` counts any range of lines, so a reader can
report the decoding of the rows it kept rather than of the whole file.

Rows are parsed with the csv module (tab dialect, ``"``-quoting with doubled inner quotes).
The published files also contain essays that merely *begin* with a quote character the
exporter never escaped; a quote-aware parser would swallow the following rows into them,
so when the quote-aware parse gives the wrong number of columns and the plain tab split
gives the right one, the tab split wins. A quoted field left open at the end of a line may
continue on the next lines (multi-paragraph essays), unless the next line is itself a
well-formed row. What counts as the right number of columns is the caller's ``acceptable``.
An essay field read by the plain tab split has its quotes repaired by
:func:`repair_quotes`.
"""

from __future__ import annotations

import codecs
import collections
import csv
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence

__all__ = ["AUTO", "FALLBACK", "DecodedLines", "LineDecoding", "check_encoding",
           "decode_lines", "is_int", "iter_records", "next_record", "repair_quotes"]

AUTO = "auto"
FALLBACK = "cp1252"  # the second try of AUTO for a line that is not valid UTF-8


def check_encoding(encoding: str) -> str:
    """``"auto"`` or a Python codec name, as given; anything else is a ValueError."""
    if encoding.strip().lower() == AUTO:
        return AUTO
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}: expected 'auto' (UTF-8, cp1252 "
                         "for a line that is not UTF-8) or a Python codec name such as "
                         "utf-8 or cp1252") from None
    return encoding


@dataclasses.dataclass(frozen=True)
class LineDecoding:
    """How some physical lines were decoded (frozen, so records holding one stay hashable)."""

    lines: int = 0
    fallback_lines: int = 0     # read as cp1252 because they were not UTF-8 (auto only)
    replaced_lines: int = 0     # lines where undecodable bytes became U+FFFD
    replacement_chars: int = 0

    def __add__(self, other: "LineDecoding") -> "LineDecoding":
        return LineDecoding(*(a + b for a, b in zip(dataclasses.astuple(self),
                                                    dataclasses.astuple(other))))

    def by_encoding(self, encoding: str) -> dict[str, int]:
        """Lines per codec actually used, e.g. ``{"utf-8": 12, "cp1252": 2}``."""
        if encoding == AUTO:
            return {"utf-8": self.lines - self.fallback_lines, FALLBACK: self.fallback_lines}
        return {encoding: self.lines}


@dataclasses.dataclass(frozen=True)
class DecodedLines:
    """A file's physical lines and, sparsely, which of them needed the fallback or lost
    bytes (indices are 0-based: line ``k`` of the file is ``lines[k - 1]``)."""

    lines: list[str]
    encoding: str
    fallback: frozenset[int] = frozenset()
    replaced: Mapping[int, int] = dataclasses.field(default_factory=dict)  # index -> chars

    def counts(self, start: int = 0, stop: int | None = None) -> LineDecoding:
        stop = len(self.lines) if stop is None else min(stop, len(self.lines))
        span = range(start, stop)
        chars = [self.replaced[k] for k in span if k in self.replaced]
        return LineDecoding(lines=len(span), fallback_lines=sum(k in self.fallback for k in span),
                            replaced_lines=len(chars), replacement_chars=sum(chars))


def _replace(raw: bytes, encoding: str) -> tuple[str, int]:
    text = raw.decode(encoding, errors="replace")
    # U+FFFD already written in the file is text, not a lost byte.
    return text, text.count("\ufffd") - raw.decode(encoding, errors="ignore").count("\ufffd")


def _decode_line(raw: bytes, encoding: str) -> tuple[str, bool, int]:
    """(text, read by the fallback, U+FFFD chars that replaced bytes) of one line."""
    first = "utf-8" if encoding == AUTO else encoding
    try:
        return raw.decode(first), False, 0
    except UnicodeDecodeError:
        pass
    if encoding != AUTO:
        text, replaced = _replace(raw, encoding)
        return text, False, replaced
    return _utf8_else_cp1252(raw)


def _utf8_else_cp1252(raw: bytes) -> tuple[str, bool, int]:
    """A line's valid UTF-8 sequences as UTF-8 and its other bytes as cp1252 (U+FFFD,
    counted, for cp1252's five undefined bytes)."""
    parts, replaced, i = [], 0, 0
    while True:
        try:
            parts.append(raw[i:].decode("utf-8"))
            return "".join(parts), True, replaced
        except UnicodeDecodeError as e:
            parts.append(raw[i:i + e.start].decode("utf-8"))
            text, lost = _replace(raw[i + e.start:i + e.end], FALLBACK)
            parts.append(text)
            replaced += lost
            i += e.end


def decode_lines(data: bytes, encoding: str = AUTO, *, keep_cr: bool = False) -> DecodedLines:
    """Physical lines (split at ``\\n``; a ``\\r`` before it dropped unless ``keep_cr``),
    decoded one at a time (see the module docstring); a leading UTF-8 BOM is dropped."""
    encoding = check_encoding(encoding)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines: list[str] = []
    fallback: set[int] = set()
    replaced: dict[int, int] = {}
    # Line by line (newline bytes never occur inside a UTF-8 sequence), so a damaged line
    # is counted, and one bad byte can't cost more than its own line's decoding.
    for k, raw in enumerate(data.split(b"\n")):
        if raw.endswith(b"\r") and not keep_cr:
            raw = raw[:-1]
        text, used_fallback, chars = _decode_line(raw, encoding)
        lines.append(text)
        if used_fallback:
            fallback.add(k)
        if chars:
            replaced[k] = chars
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline, not a blank line
    return DecodedLines(lines, encoding, frozenset(fallback), replaced)


def repair_quotes(text: str, notes: collections.Counter) -> str:
    """An essay field that the plain tab split read (the quote-aware parse could not).

    In the published ASAP++ files such fields are either wrapped in quotes whose inner
    quotes were never doubled (the wrapping is the exporter's, so it goes), or begin with
    a quote the student opened and never closed (the student's, so it stays).
    """
    if len(text) > 1 and text.startswith('"') and text.endswith('"'):
        notes["quoted essay with undoubled inner quotes: wrapping quotes removed"] += 1
        return text[1:-1]
    if text.startswith('"'):
        notes["essay opening a quote it never closes: quote kept as text"] += 1
    return text


_TSV = {"delimiter": "\t", "quotechar": '"', "doublequote": True, "strict": True}
_MAX_CONTINUATION_LINES = 200


def _csv_fields(lines: Sequence[str]) -> tuple[list[str] | None, str | None]:
    """(fields, None) or (None, error) for one record made of ``lines``."""
    try:
        rows = list(csv.reader([line + "\n" for line in lines], **_TSV))
    except csv.Error as e:
        return None, str(e)
    if len(rows) != 1:
        return None, f"{len(rows)} records"
    return rows[0], None


def is_int(text: str) -> bool:
    """An integer as written, e.g. an essay_id or essay_set; a cheap row-start check."""
    return text.strip().lstrip("-").isdigit()


def _continued(lines: Sequence[str], i: int, acceptable: Callable[[list[str]], bool]
               ) -> tuple[list[str], int] | None:
    """(fields, lines spanned) of a quoted field opened on line ``i`` and closed on a later
    line, or None when a following line is a complete row of its own (a stray quote)."""
    for j in range(i + 1, min(len(lines), i + _MAX_CONTINUATION_LINES)):
        nxt = lines[j].split("\t")
        if len(nxt) > 2 and is_int(nxt[0]) and is_int(nxt[1]) and acceptable(nxt):
            return None
        fields, err = _csv_fields(lines[i:j + 1])
        if fields is not None:
            return (fields, j - i + 1) if acceptable(fields) else None
        if "unexpected end of data" not in err:
            return None
    return None


def next_record(lines: Sequence[str], i: int, acceptable: Callable[[list[str]], bool], *,
                continuation_first: bool = False) -> tuple[list[str], int, bool]:
    """(fields, physical lines spanned, whether the plain tab split was used) at line ``i``.

    The quote-aware parse is preferred; the module docstring says why the plain tab split
    is the fallback. A quote left open at the end of the line is tried as a multi-line
    field after the tab split, or before it with ``continuation_first``: a layout whose
    essay is the last column accepts the first line of a multi-line essay on its own, so
    only trying the continuation first can find the rest. When nothing gives an
    acceptable column count, the quote-aware (or else the tab) fields are returned so the
    caller reports the count.
    """
    line = lines[i]
    quoted, error = _csv_fields([line])
    if quoted is not None and acceptable(quoted):
        return quoted, 1, False
    open_quote = error is not None and "unexpected end of data" in error
    if open_quote and continuation_first and (found := _continued(lines, i, acceptable)):
        return found[0], found[1], False
    tab = line.split("\t")
    if acceptable(tab):
        return tab, 1, True
    if open_quote and not continuation_first and (found := _continued(lines, i, acceptable)):
        return found[0], found[1], False
    return (quoted if quoted is not None else tab), 1, False


def iter_records(lines: Sequence[str], acceptable: Callable[[list[str]], bool], *,
                 continuation_first: bool = False
                 ) -> Iterator[tuple[int, list[str] | None, int, bool]]:
    """(line index, fields, physical lines spanned, tab split used) for every record after
    the header line; fields is None for a blank line (readers count those, not rows)."""
    i = 1
    while i < len(lines):
        if not lines[i].strip():
            yield i, None, 1, False
            i += 1
            continue
        fields, span, tab_split = next_record(lines, i, acceptable,
                                              continuation_first=continuation_first)
        yield i, fields, span, tab_split
        i += span
