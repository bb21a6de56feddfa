"""--encoding=auto (UTF-8, and cp1252 for the bytes of a line that are not UTF-8) and the decoding
counts of the dataset builders: of the essays kept, not of whole files. Tiny fixtures
written here; no training."""

import pytest

from aes_jax.data import asap, tsv_records
from aes_jax.data.asap_records import BuildOptions, build_dataset

# UTF-8 apostrophe (e2 80 99) on one line, a raw cp1252 apostrophe (0x92) on another, as
# in the Kaggle ASAP file; 0x81 is one of cp1252's five undefined bytes.
MIXED = (b"\xef\xbb\xbfheader\r\n"
         b"It\xe2\x80\x99s UTF-8.\r\n"
         b"It\x92s cp1252.\n"
         b"Caf\xc3\xa9 \xe2\x80\x9cquoted\xe2\x80\x9d\n"
         b"Undefined \x81 byte, then \x93quoted\x94\n")


def test_auto_decodes_each_line_as_utf8_or_else_cp1252_and_counts_both():
    decoded = tsv_records.decode_lines(MIXED, "auto")
    assert decoded.lines == ["header", "It\u2019s UTF-8.", "It\u2019s cp1252.",
                             "Caf\u00e9 \u201cquoted\u201d",
                             "Undefined \ufffd byte, then \u201cquoted\u201d"]
    whole = decoded.counts()
    assert whole.by_encoding("auto") == {"utf-8": 3, "cp1252": 2}
    assert (whole.replaced_lines, whole.replacement_chars) == (1, 1)  # only the 0x81
    assert decoded.counts(1, 3).by_encoding("auto") == {"utf-8": 1, "cp1252": 1}
    assert decoded.counts(1, 3).replacement_chars == 0


def test_a_line_mixing_utf8_and_a_raw_cp1252_byte_keeps_both():
    line = "Caf\u00e9 \u201cgood\u201d, ".encode() + b"isn\x92t it"
    decoded = tsv_records.decode_lines(line + b"\n", "auto")
    assert decoded.lines == ["Caf\u00e9 \u201cgood\u201d, isn\u2019t it"]  # no mojibake
    assert decoded.counts().by_encoding("auto") == {"utf-8": 0, "cp1252": 1}


def test_an_explicit_encoding_keeps_todays_behaviour():
    utf8 = tsv_records.decode_lines(MIXED, "utf-8")
    assert utf8.lines[2] == "It\ufffds cp1252." and utf8.lines[1] == "It\u2019s UTF-8."
    assert utf8.counts().by_encoding("utf-8") == {"utf-8": 5}
    assert (utf8.counts().replaced_lines, utf8.counts().replacement_chars) == (2, 4)
    cp1252 = tsv_records.decode_lines(MIXED, "cp1252")
    assert cp1252.lines[1] == "It\u00e2\u20ac\u2122s UTF-8."  # the mojibake auto avoids
    # a U+FFFD already in the file is text, not a lost byte
    written = tsv_records.decode_lines("a \ufffd b\n".encode(), "utf-8")
    assert written.counts().replacement_chars == 0
    with pytest.raises(ValueError, match="unknown encoding 'latin-9000'"):
        tsv_records.decode_lines(b"x", "latin-9000")


def _official(path, rows):
    header = "\t".join(asap.OFFICIAL_COLUMNS)
    body = [b"\t".join([str(i).encode(), str(p).encode(), text, b"2", b"2", b"", b"2"]
                       + [b""] * 21) for i, p, text in rows]
    path.write_bytes(b"\n".join([header.encode(), *body]) + b"\n")
    return path


def test_manifest_counts_the_decoding_of_the_prompts_kept(tmp_path):
    rows = [(i, 3, b"Plain essay number %d." % i) for i in range(1, 11)]
    rows += [(i, 4, b"Another plain essay %d." % i) for i in range(11, 21)]
    rows[0] = (1, 3, b"It\x92s a cp1252 apostrophe.")           # prompt 3: decoded as cp1252
    rows[10] = (11, 4, b"Lost \x81 and \x8d bytes, \x92 too.")    # prompt 4: 2 bytes lost
    path = _official(tmp_path / "training_set_rel3.tsv", rows)
    kept3 = build_dataset(BuildOptions(inputs=[path], output_dir=tmp_path / "p3",
                                       prompts=(3,), max_tokens=32))
    assert kept3["replacement_chars"] == 0  # prompt 4's lost bytes are not this dataset's
    assert kept3["decoding"] == {"encoding": "auto", "lines": {"utf-8": 9, "cp1252": 1},
                                 "lines_with_replacement": 0, "replacement_chars": 0}
    (source,) = kept3["sources"]  # the whole file's counts stay with the file
    assert source["replacement_chars"] == 2 and source["lines_with_replacement"] == 1
    assert source["decoded_lines"] == {"utf-8": 19, "cp1252": 2}
    kept4 = build_dataset(BuildOptions(inputs=[path], output_dir=tmp_path / "p4",
                                       prompts=(4,), max_tokens=32))
    assert kept4["replacement_chars"] == 2 and kept4["decoding"]["lines"] == {
        "utf-8": 9, "cp1252": 1}

    from aes_jax.data.read_report import decoding_lines
    assert decoding_lines(kept3) == ["  lines decoded (essays kept): utf-8 9, cp1252 1",
                                      "  undecodable bytes replaced by U+FFFD: 0 in 0 lines "
                                      "of the essays kept (2 in the whole input files)"]
