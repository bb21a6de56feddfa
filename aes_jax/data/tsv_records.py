"""Tab-separated records of the published ASAP files, read one physical line at a time.

Rows are parsed with the csv module (tab dialect, ``"``-quoting with doubled inner quotes).
The published files also contain essays that merely *begin* with a quote character the
exporter never escaped; a quote-aware parser would swallow the following rows into them,
so when the quote-aware parse gives the wrong number of columns and the plain tab split
gives the right one, the tab split wins. A quoted field left open at the end of a line may
continue on the next lines (multi-paragraph essays), unless the next line is itself a
well-formed row. What counts as the right number of columns is the caller's ``acceptable``.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence

__all__ = ["decode_lines", "is_int", "next_record"]


def decode_lines(data: bytes, encoding: str) -> tuple[list[str], int, int]:
    """Physical lines (``\\n``/``\\r\\n``), lines with replaced bytes, replacement chars."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines, damaged, replaced = [], 0, 0
    # Decode line by line (newline bytes never occur inside a UTF-8 sequence) so a damaged
    # line is counted, and one bad byte can't cost more than its own character.
    for raw in data.split(b"\n"):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            lines.append(raw.decode(encoding))
        except UnicodeDecodeError:
            text = raw.decode(encoding, errors="replace")
            damaged += 1
            replaced += text.count("\ufffd") - raw.decode(encoding, errors="ignore").count(
                "\ufffd")
            lines.append(text)
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline, not a blank line
    return lines, damaged, replaced


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


def next_record(lines: Sequence[str], i: int, acceptable: Callable[[list[str]], bool]
                ) -> tuple[list[str], int, bool]:
    """(fields, physical lines spanned, whether the plain tab split was used) at line ``i``.

    The quote-aware parse is preferred; the module docstring says why the plain tab split
    is the fallback. When neither gives an acceptable column count, the quote-aware
    (or else the tab) fields are returned so the caller reports the count.
    """
    line = lines[i]
    quoted, error = _csv_fields([line])
    if quoted is not None and acceptable(quoted):
        return quoted, 1, False
    tab = line.split("\t")
    if acceptable(tab):
        return tab, 1, True
    if error is not None and "unexpected end of data" in error:
        # A quoted field still open at the end of the line: a multi-line essay, as long as
        # no following line is a complete row of its own (that would be a stray quote).
        for j in range(i + 1, min(len(lines), i + _MAX_CONTINUATION_LINES)):
            nxt = lines[j].split("\t")
            if len(nxt) > 2 and is_int(nxt[0]) and is_int(nxt[1]) and acceptable(nxt):
                break
            fields, err = _csv_fields(lines[i:j + 1])
            if fields is not None:
                if acceptable(fields):
                    return fields, j - i + 1, False
                break
            if "unexpected end of data" not in err:
                break
    return (quoted if quoted is not None else tab), 1, False
