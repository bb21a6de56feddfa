"""ELLIPSE readers (Kaggle train.csv/test.csv and the ArTS fold layout), skip counting,
fold assignment and the train/dev/test split. Every fixture is written here (tmp_path);
nothing reads the shared real data."""

import csv

import pytest

from aes_jax.data import ell

TRAITS = list(ell.ELL_TRAITS)
ARTS_HEADER = ["", "index", "text_id", "content_text", *TRAITS, "essay_id", "target"]


def write_csv(path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def kaggle_row(text_id, text, scores):
    return [text_id, text, *scores]


def arts_row(k, text_id, text, values):
    target = ", ".join(f"{t} {v}" for t, v in zip(TRAITS[::-1], values[::-1]))
    return [str(k), str(100 + k), text_id, text, *map(str, values), str(500 + k), target]


def test_kaggle_layout_reads_halves_and_counts_bad_rows(tmp_path):
    path = write_csv(tmp_path / "train.csv", ["text_id", "full_text", *TRAITS], [
        kaggle_row("A1", "First essay.\n\nSecond paragraph.", ["3.5", "3.5", "3.0", "3.0",
                                                                 "4.0", "3.0"]),  # lines 2-4
        kaggle_row("A2", "Off the grid.", ["3.2", "3", "3", "3", "3", "3"]),       # line 5
        kaggle_row("A3", "   ", ["3", "3", "3", "3", "3", "3"]),                   # line 6
        kaggle_row("A4", "Too high.", ["5.5", "3", "3", "3", "3", "3"]),           # line 7
        ["A5", "Short row.", "3"],                                                  # line 8
        kaggle_row("A1", "Duplicate id.", ["1", "1", "1", "1", "1", "5"]),         # line 9
        kaggle_row("A6", "Last, \"quoted\" essay.", ["1.0", "1.5", "2", "2.5", "4.5", "5"]),
    ])
    result = ell.read_ell(path)
    assert [e.text_id for e in result.essays] == ["A1", "A6"]
    a1, a6 = result.essays
    assert a1.text == "First essay.\n\nSecond paragraph." and a1.line == 2
    assert a1.scores == {"cohesion": 3.5, "syntax": 3.5, "vocabulary": 3.0,
                         "phraseology": 3.0, "grammar": 4.0, "conventions": 3.0}
    assert list(a1.scores) == TRAITS and a1.fold is None and a1.source == str(path)
    assert a6.line == 10 and a6.text == 'Last, "quoted" essay.'
    assert a6.scores["conventions"] == 5.0 and a6.scores["syntax"] == 1.5
    assert dict(result.skipped) == {"bad score": 2, "empty essay": 1,
                                    "wrong number of columns": 1, "duplicate text_id": 1}
    text = "\n".join(result.skip_examples)
    assert f"{path}:5: bad score: essay A2: cohesion '3.2' is not a multiple of 0.5" in text
    assert f"{path}:7: bad score: essay A4: cohesion '5.5' is outside 1.0-5.0" in text
    assert f"{path}:8: wrong number of columns: 3 comma-separated fields, expected 8" in text
    assert f"{path}:9: duplicate text_id: essay A1 was already read at {path}:2" in text
    assert result.files[0].format == "kaggle" and result.files[0].rows == 7
    assert result.files[0].essays == 2 and result.layouts == ["kaggle"]
    with pytest.raises(ell.EllFormatError, match=f"{path}:5: bad score: essay A2"):
        ell.read_ell(path, strict=True)


def test_arts_fold_layout_converts_v_over_two(tmp_path):
    path = write_csv(tmp_path / "fold_2.csv", ARTS_HEADER, [
        arts_row(0, "B1", "An essay\nover two lines.", [7, 7, 6, 6, 8, 6]),   # lines 2-3
        arts_row(1, "B2", "Lowest and highest.", [2, 10, 2, 10, 3, 9]),      # line 4
        arts_row(2, "B3", "One is off the 2-10 scale.", [1, 5, 5, 5, 5, 5]),  # line 5
        arts_row(3, "B4", "Not an integer.", [5, 5, 5.5, 5, 5, 5]),          # line 6
        arts_row(4, "B5", "Missing a value.", [5, 5, 5, "", 5, 5]),          # line 7
    ])
    result = ell.read_ell(path, fold=2)
    b1, b2 = result.essays
    assert b1.scores == {"cohesion": 3.5, "syntax": 3.5, "vocabulary": 3.0,
                         "phraseology": 3.0, "grammar": 4.0, "conventions": 3.0}
    assert b1.text == "An essay\nover two lines." and b1.fold == 2 and b2.line == 4
    assert list(b2.scores.values()) == [1.0, 5.0, 1.0, 5.0, 1.5, 4.5]
    assert result.files[0].format == "arts_fold"
    assert dict(result.skipped) == {"bad score": 2, "missing score": 1}
    text = "\n".join(result.skip_examples)
    assert f"{path}:5: bad score: essay B3: cohesion '1' is outside 2-10" in text
    assert f"{path}:6: bad score: essay B4: vocabulary '5.5' is not an integer" in text
    assert f"{path}:7: missing score: essay B5 has no phraseology score" in text
    with pytest.raises(ell.EllFormatError, match=f"{path}:5: bad score"):
        ell.read_ell(path, strict=True)


def test_unscored_test_csv_needs_allow_unscored_and_bad_headers_name_the_file(tmp_path):
    path = write_csv(tmp_path / "test.csv", ["text_id", "full_text"],
                     [["T1", "An unscored essay."], ["T2", "Another."]])
    with pytest.raises(ell.EllFormatError, match=f"{path}:1: .*allow_unscored=True"):
        ell.read_ell(path)
    result = ell.read_ell(path, allow_unscored=True)
    assert [(e.text_id, e.scores) for e in result.essays] == [("T1", {}), ("T2", {})]
    assert result.files[0].format == "kaggle_unscored"
    bad = write_csv(tmp_path / "other.csv", ["id", "essay", "score"], [["1", "x", "3"]])
    with pytest.raises(ell.EllFormatError, match=f"{bad}:1: unrecognised header"):
        ell.read_ell(bad)
    assert not ell.is_ell_input(bad) and ell.is_ell_input(path)
    assert not ell.is_ell_input(tmp_path / "missing.csv")


def write_folds(root, per_fold=20, duplicate=False):
    """fold_0..fold_4.csv with per_fold essays each (text_ids unique unless duplicate)."""
    for k in range(5):
        rows = [arts_row(j, f"F{k}E{j:03d}", f"Essay {j} of fold {k}.",
                         [2 + (j + t) % 9 for t in range(6)]) for j in range(per_fold)]
        if duplicate and k == 3:
            rows.append(arts_row(per_fold, "F0E000", "Repeated from fold 0.", [5] * 6))
        write_csv(root / f"fold_{k}.csv", ARTS_HEADER, rows)
    return root


def test_read_ell_folds_split_invariants(tmp_path):
    root = write_folds(tmp_path / "ell")
    assert ell.is_ell_input(root)
    splits = ell.read_ell_folds(root, test_fold=1, dev_fraction=0.1, seed=0)
    assert {len(v) for v in splits.values()} == {72, 8, 20}
    assert len(splits["train"]) == 72 and len(splits["dev"]) == 8
    assert all(e.fold == 1 for e in splits["test"])
    assert all(e.fold != 1 for e in splits["train"] + splits["dev"])
    ids = [e.text_id for v in splits.values() for e in v]
    assert len(ids) == len(set(ids)) == 100  # every essay exactly once
    again = ell.read_ell_folds(root, test_fold=1, dev_fraction=0.1, seed=0)
    assert [e.text_id for e in again["dev"]] == [e.text_id for e in splits["dev"]]
    other = ell.read_ell_folds(root, test_fold=1, dev_fraction=0.1, seed=1)
    assert [e.text_id for e in other["dev"]] != [e.text_id for e in splits["dev"]]
    with pytest.raises(ValueError, match="test_fold 7 is not among the folds"):
        ell.read_ell_folds(root, test_fold=7)


def test_duplicate_text_id_across_folds_is_counted_once(tmp_path):
    root = write_folds(tmp_path / "ell", per_fold=6, duplicate=True)
    result = ell.read_ell_dir(root)
    assert len(result.essays) == 30 and result.skipped == {"duplicate text_id": 1}
    assert "fold_3.csv:8: duplicate text_id: essay F0E000 was already read at" in \
        result.skip_examples[0]
    with pytest.raises(ell.EllFormatError, match="fold_3.csv:8: duplicate text_id"):
        ell.read_ell_dir(root, strict=True)
    splits = ell.split_ell(result.essays, test_fold=0)
    assert sum(len(v) for v in splits.values()) == 30


def test_assign_folds_is_balanced_and_order_free(tmp_path):
    path = write_csv(tmp_path / "train.csv", ["text_id", "full_text", *TRAITS],
                     [kaggle_row(f"K{j:03d}", f"Essay {j}.", ["3"] * 6) for j in range(23)])
    essays = ell.read_ell(path).essays
    folded = ell.assign_folds(essays, num_folds=5, seed=4)
    reverse = ell.assign_folds(essays[::-1], num_folds=5, seed=4)
    assert {e.text_id: e.fold for e in folded} == {e.text_id: e.fold for e in reverse}
    sizes = [sum(e.fold == k for e in folded) for k in range(5)]
    assert sorted(sizes) == [4, 4, 5, 5, 5]
    with pytest.raises(ValueError, match="call assign_folds first"):
        ell.split_ell(essays)
    splits = ell.split_ell(folded, test_fold=0, dev_fraction=0.0)
    assert splits["dev"] == [] and len(splits["train"]) + len(splits["test"]) == 23


def kaggle_bytes(rows: list[bytes]) -> bytes:
    """A CRLF Kaggle train.csv written as raw bytes (rows given as their CSV text)."""
    header = ",".join(["text_id", "full_text", *TRAITS]).encode()
    return b"\r\n".join([header, *rows]) + b"\r\n"


CP1252_ROWS = [
    b'C1,"First line.\r\nIt\x92s the second.\r\nThird.",3,3,3,3,3,3',  # lines 2-4, 0x92
    b'C2,It\xe2\x80\x99s UTF-8.,3,3,3,3,3,3',                           # line 5
    b'C3,Lost \x81 byte.,3,3,3,3,3,3',                                  # line 6
]


def test_auto_encoding_reads_cp1252_lines_and_counts_them_per_essay(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(kaggle_bytes(CP1252_ROWS))
    result = ell.read_ell(path)  # encoding="auto" by default
    c1, c2, c3 = result.essays
    assert c1.text == "First line.\r\nIt\u2019s the second.\r\nThird." and c1.line == 2
    assert c2.text == "It\u2019s UTF-8." and c2.line == 5 and c3.line == 6
    assert c3.text == "Lost \ufffd byte."  # cp1252 leaves 0x81 undefined: U+FFFD, counted
    assert (c1.decoding.lines, c1.decoding.fallback_lines) == (3, 1)
    assert (c2.decoding.fallback_lines, c3.decoding.replacement_chars) == (0, 1)
    stats = result.files[0]
    assert stats.decoded_lines == {"utf-8": 4, "cp1252": 2} and stats.replacement_chars == 1
    explicit = ell.read_ell(path, encoding="utf-8")  # an explicit codec: U+FFFD, counted
    assert explicit.essays[0].text == "First line.\r\nIt\ufffds the second.\r\nThird."
    assert explicit.files[0].replacement_chars == 2
    assert explicit.files[0].decoded_lines == {"utf-8": 6}
