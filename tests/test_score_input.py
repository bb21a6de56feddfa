"""The essays file launch.score reads for TRM-AES (aes_jax/data/essays_tsv.py): quotes,
tabs, empty essays, bad integers, duplicates, encodings and strict mode, each row read or
counted. Fixtures are written here; launch.score itself is run in tests/test_trm_aes.py
(it needs a trained run)."""

import pytest

from aes_jax.data import essays_tsv, read_report

HEADER = "essay_id\tessay_set\tessay"
# The file: a quote opened and never closed (must not swallow rows 12-13), a quote
# inside an essay, a tab inside an essay, an empty essay.
SIX_ROWS = "\n".join([
    HEADER,
    '11\t1\t"Computers are great, said my teacher. I agree with her.',
    "12\t1\tSecond essay about computers and kids playing outside.",
    '13\t1\tThird essay, which has a "quote" in the middle.',
    "14\t1\tA essay with a tab\tinside it after the tab.",
    "15\t1\t",
    "16\t3\tLast essay.",
]) + "\n"
SIX_TEXTS = {
    11: '"Computers are great, said my teacher. I agree with her.',
    12: "Second essay about computers and kids playing outside.",
    13: 'Third essay, which has a "quote" in the middle.',
    14: "A essay with a tab\tinside it after the tab.",
    16: "Last essay.",
}


def write(tmp_path, text: str | bytes, name="essays.tsv"):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_the_six_row_file_keeps_every_row_as_written_or_counts_it(tmp_path):
    path = write(tmp_path, SIX_ROWS)
    result = essays_tsv.read_essays_file(path)
    assert {e.essay_id: e.text for e in result.essays} == SIX_TEXTS
    assert [e.line for e in result.essays] == [2, 3, 4, 5, 7]
    assert {e.essay_id: e.prompt for e in result.essays}[16] == 3
    assert dict(result.skipped) == {"empty essay": 1}
    assert result.skip_examples == [f"{path}:6: empty essay: essay 15 has no text"]
    assert dict(result.notes) == {"essay opening a quote it never closes: quote kept as text": 1}
    stats = result.files[0]
    assert (stats.rows, stats.essays, stats.format) == (6, 5, essays_tsv.ESSAY_LAST)
    report = read_report.summary(result)
    assert report["rows"] == 6 and report["essays"] == 5
    assert report["files"][0]["decoded_lines"] == {"utf-8": 7, "cp1252": 0}
    # the model's prompts: an essay of another prompt is counted, not scored
    only_1 = essays_tsv.read_essays_file(path, prompts={1, 4})
    assert [e.essay_id for e in only_1.essays] == [11, 12, 13, 14]
    assert dict(only_1.skipped) == {"empty essay": 1, "untrained prompt": 1}
    assert f"{path}:7: untrained prompt: essay 16: prompt 3 is not one of the model's " \
        "prompts [1, 4]" in only_1.skip_examples
    with pytest.raises(essays_tsv.EssaysFormatError,
                       match=f"^{path}:6: empty essay: essay 15 has no text"):
        essays_tsv.read_essays_file(path, strict=True)


def test_quoted_essays_bad_integers_duplicates_bom_and_crlf(tmp_path):
    rows = [
        "essay_id\tEssay_Set\tessay",  # header names are case-insensitive
        '20\t1\t"First paragraph, with a ""quoted"" word.',  # lines 2-4: one quoted essay
        "",
        'Second paragraph."',
        '21\t1\t"He said ""hi"" to me\tand left."',          # whole field quoted, doubled
        '22\t1\t"The article "The Mast" explains it."',     # wrapped, inner not doubled
        "x3\t1\tBad id.",
        "24\tone\tBad essay set.",
        "25\t1\t   \t  ",                                    # whitespace only (two fields)
        "21\t1\tThe same id again.",
        "26",                                                 # too few columns
    ]
    path = write(tmp_path, b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    result = essays_tsv.read_essays_file(path)
    assert {e.essay_id: e.text for e in result.essays} == {
        20: 'First paragraph, with a "quoted" word.\n\nSecond paragraph.',
        21: 'He said "hi" to me\tand left.',
        22: 'The article "The Mast" explains it.',
    }
    assert [e.line for e in result.essays] == [2, 5, 6]
    assert dict(result.skipped) == {"bad essay_id": 1, "bad essay_set": 1, "empty essay": 1,
                                    "duplicate essay_id": 1, "too few columns": 1}
    examples = "\n".join(result.skip_examples)
    assert f"{path}:7: bad essay_id: 'x3' is not an integer" in examples
    assert f"{path}:8: bad essay_set: essay 24: 'one' is not an integer" in examples
    assert f"{path}:9: empty essay: essay 25 has no text" in examples
    assert f"{path}:10: duplicate essay_id: essay 21 was already read at {path}:5" in examples
    assert f"{path}:11: too few columns: 1 tab-separated fields, expected at least 3" in examples
    assert result.files[0].rows == 8 and result.files[0].essays == 3


def test_a_tab_in_an_essay_before_other_columns_is_a_counted_skip(tmp_path):
    # The official ASAP layout: essay is not the last column, so a 4th field is ambiguous.
    path = write(tmp_path, "essay_id\tessay_set\tessay\tdomain1_score\n"
                           "1\t1\tKept essay.\t8\n"
                           "2\t1\tTrimmed trailing column.\n"
                           "3\t1\tA tab\there.\t8\n")
    result = essays_tsv.read_essays_file(path)
    assert [e.text for e in result.essays] == ["Kept essay.", "Trimmed trailing column."]
    assert result.files[0].format == essays_tsv.FIXED_COLUMNS
    assert dict(result.skipped) == {"too many columns": 1}
    assert result.skip_examples[0].startswith(f"{path}:4: too many columns: 5 tab-separated")


def test_encoding_auto_by_default_and_an_explicit_codec(tmp_path):
    path = write(tmp_path, HEADER.encode() + b"\n1\t1\tIt\xe2\x80\x99s UTF-8.\n"
                 b"2\t1\tIt\x92s cp1252.\n")
    auto = essays_tsv.read_essays_file(path)
    assert [e.text for e in auto.essays] == ["It\u2019s UTF-8.", "It\u2019s cp1252."]
    assert auto.files[0].decoded_lines == {"utf-8": 2, "cp1252": 1}
    assert auto.essays[1].decoding.fallback_lines == 1
    utf8 = essays_tsv.read_essays_file(path, encoding="utf-8")
    assert utf8.essays[1].text == "It\ufffds cp1252." and utf8.files[0].replacement_chars == 1


def test_header_and_file_errors_name_the_file(tmp_path):
    missing = write(tmp_path, "essay_id\tessay\n1\ttext\n", "bad.tsv")
    with pytest.raises(essays_tsv.EssaysFormatError,
                       match=r"bad.tsv:1: header lacks column\(s\) \['essay_set'\]"):
        essays_tsv.read_essays_file(missing)
    with pytest.raises(essays_tsv.EssaysFormatError, match="empty.tsv:1: empty file"):
        essays_tsv.read_essays_file(write(tmp_path, "", "empty.tsv"))
    with pytest.raises(FileNotFoundError, match="no such essays file"):
        essays_tsv.read_essays_file(tmp_path / "absent.tsv")
    assert issubclass(essays_tsv.EssaysFormatError, ValueError)
