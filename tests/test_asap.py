"""ASAP / ASAP++ readers, score normalisation, tokenisation, splits, the dataset builder,
its CLI and the synthetic demo corpus. Every fixture is written here (tmp_path), in both
real layouts, with the real files' quirks; nothing reads the shared real data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aes_jax.data import asap, asap_demo, splits, wordpiece
from aes_jax.data.asap_records import (AsapDataSource, BuildOptions, build_dataset,
                                       build_demo_dataset, load_manifest)

REPO = Path(__file__).resolve().parents[1]
FIVE = ["Content", "Organization", "Word Choice", "Sentence Fluency", "Conventions"]
FOUR = ["Content", "Prompt Adherence", "Language", "Narrativity"]


def official_line(essay_id, prompt, essay, score, n_cols=28):
    """One row of training_set_rel3.tsv: raters 1-2 filled, the rest empty."""
    fields = [str(essay_id), str(prompt), essay, str(score), str(score), "", str(score)]
    return "\t".join((fields + [""] * 28)[:n_cols])


def official_file(path, lines, extra: bytes = b""):
    header = "\t".join(asap.OFFICIAL_COLUMNS)
    path.write_bytes(("\n".join([header, *lines]) + "\n").encode("utf-8") + extra)
    return path


# The published ASAP++ header for a prompt-3 file: earlier prompts' trait names first.
TRAITS_HEADER_P3 = "\t".join(["essay_id", "essay_set", "essay", "score"] + FIVE + FIVE + FOUR)


def traits_line(essay_id, prompt, essay, score, traits):
    return "\t".join([str(essay_id), str(prompt), essay, str(score), *map(str, traits)])


# ----------------------------------------------------------------------------- score tables


def test_score_tables_match_the_asap_descriptions():
    assert asap.SCORE_RANGES == {1: (2, 12), 2: (1, 6), 3: (0, 3), 4: (0, 3), 5: (0, 4),
                                 6: (0, 4), 7: (0, 30), 8: (0, 60)}
    assert asap.score_range(2) == (1, 6)  # domain1 of prompt 2, not domain2's 1-4
    for p, rng in {1: (1, 6), 2: (1, 6), 3: (0, 3), 4: (0, 3), 5: (0, 4), 6: (0, 4)}.items():
        assert list(asap.TRAIT_NAMES[p]) == (FIVE if p <= 2 else FOUR)
        assert all(asap.score_range(p, t) == rng for t in asap.TRAIT_NAMES[p])
    assert asap.score_range(3, "prompt adherence") == (0, 3)  # names are case-insensitive
    with pytest.raises(ValueError, match="prompt 9 is not an ASAP prompt"):
        asap.score_range(9)
    with pytest.raises(ValueError, match="prompt 7 has no ASAP\\+\\+ trait"):
        asap.score_range(7, "Content")
    with pytest.raises(ValueError, match="no trait 'Narrativity'"):
        asap.score_range(1, "Narrativity")


def test_normalize_round_trip_is_exact_on_every_integer_score():
    for p, (lo, hi) in asap.SCORE_RANGES.items():
        scores = np.arange(lo, hi + 1)
        x = asap.normalize(scores, p)
        assert x.min() == 0.0 and x.max() == 1.0 and np.all(np.diff(x) > 0)
        assert asap.denormalize(x, p).tolist() == scores.tolist()
        assert asap.denormalize(x.astype(np.float32), p).tolist() == scores.tolist()
        assert all(asap.denormalize(asap.normalize(int(s), p), p) == s for s in scores)
    for p, names in asap.TRAIT_NAMES.items():
        for t in names:
            lo, hi = asap.score_range(p, t)
            assert [asap.denormalize(asap.normalize(s, p, t), p, t) for s in range(lo, hi + 1)] \
                == list(range(lo, hi + 1))


def test_denormalize_clips_rounds_and_takes_a_prompt_per_row():
    assert asap.denormalize(1.7, 1) == 12 and asap.denormalize(-0.3, 1) == 2
    assert isinstance(asap.denormalize(0.5, 3), int)
    assert asap.denormalize(0.5, 3) == 2  # 1.5 rounds half up, not to even
    assert asap.denormalize(0.45, 1, round_=False) == pytest.approx(6.5)
    assert asap.normalize(7, 1) == pytest.approx(0.5)
    prompts = np.array([1, 3, 8, 2])
    scores = np.array([12, 0, 30, 1])
    x = asap.normalize(scores, prompts)
    np.testing.assert_allclose(x, [1.0, 0.0, 0.5, 0.0])
    assert asap.denormalize(x, prompts).tolist() == scores.tolist()


# ----------------------------------------------------------------------------- reading


def test_official_format_with_bad_rows_is_read_and_every_skip_counted(tmp_path):
    quoted = '"He said ""hi"" to me\tand left."'  # quoted field: doubled quotes, inner tab
    path = official_file(tmp_path / "training_set_rel3.tsv", [
        official_line(1, 1, "Dear editor, computers help.", 8),
        official_line(2, 1, quoted, 10),
        official_line(3, 1, "No score here.", ""),                  # missing score
        "4\t1\tToo short a row\t3\t3",                              # too few columns
        official_line(5, 3, "Setting matters.", 7),                 # outside 0-3
        official_line(6, 3, "Trimmed trailing columns.", 2, n_cols=7),
        official_line(7, 8, "A long story.", 45),
    ], extra=official_line(8, 3, "It\x92s hot.", 1).encode().replace(b"\xc2\x92", b"\x92")
       + b"\n")
    result = asap.read_tsv(path)
    by_id = {e.essay_id: e for e in result.essays}
    assert sorted(by_id) == [1, 2, 6, 7, 8]
    assert by_id[2].text == 'He said "hi" to me\tand left.'
    assert by_id[2].score == 10 and by_id[2].traits == {} and by_id[2].split is None
    assert by_id[8].text == "It\u2019s hot."  # auto: the line is not UTF-8, so cp1252
    assert result.files[0].decoded_lines == {"utf-8": 8, "cp1252": 1}
    assert by_id[8].decoding.fallback_lines == 1 and result.replacement_chars == 0
    explicit = asap.read_tsv(path, encoding="utf-8")  # today's behaviour: U+FFFD, counted
    assert [e.text for e in explicit.essays if e.essay_id == 8] == ["It\ufffds hot."]
    assert explicit.files[0].lines_with_replacement == 1 and explicit.replacement_chars == 1
    assert result.files[0].format == "official"
    assert dict(result.skipped) == {"missing score": 1, "too few columns": 1,
                                    "score out of range": 1}
    text = "\n".join(result.skip_examples)
    assert f"{path}:4: missing score" in text
    assert f"{path}:5: too few columns: 5 tab-separated fields, expected at least 7" in text
    assert f"{path}:6: score out of range: essay 5: score 7 outside prompt 3's range 0-3" in text
    with pytest.raises(asap.AsapFormatError, match=f"{path}:4: missing score"):
        asap.read_tsv(path, strict=True)


def test_traits_layout_with_the_defective_header(tmp_path):
    lines = [
        traits_line(10, 3, "The heat affected him.", 2, [2, 1, 3, 2]),
        # wrapped in quotes with doubled inner quotes, as many published essays are
        traits_line(11, 3, '"He said ""water"" twice."', 3, [3, 3, 2, 3]),
        # opens a quote it never closes (published unescaped): must not swallow row 13
        traits_line(12, 3, '"When they come back, she vowed.', 1, [1, 1, 1, 1]),
        traits_line(13, 3, "I believe the author chose it.", 2, [2, 2, 3, 2]),
        # wrapped by the exporter but inner quotes not doubled
        traits_line(14, 3, '"The article "The Mast" explains it."', 2, [2, 2, 2, 2]),
        traits_line(15, 3, "Missing score.", "", [1, 1, 1, 1]),
        "16\t3\tToo few trait values.\t2\t1\t1",
        traits_line(17, 3, "Trait out of range.", 2, [2, 9, 2, 2]),
    ]
    path = tmp_path / "prompt_3" / "train.tsv"
    path.parent.mkdir()
    path.write_bytes(("\n".join([TRAITS_HEADER_P3, *lines]) + "\n").encode()
                     + b"18\t3\tCaf\xe9 bytes.\t1\t1\t0\t1\t1\n")
    result = asap.read_tsv(path)
    by_id = {e.essay_id: e for e in result.essays}
    assert sorted(by_id) == [10, 11, 12, 13, 14, 18]
    # four true trait columns, named from the header's tail, not its first names
    assert by_id[10].traits == {"Content": 2, "Prompt Adherence": 1, "Language": 3,
                                "Narrativity": 2}
    assert by_id[11].text == 'He said "water" twice.'
    assert by_id[12].text == '"When they come back, she vowed.' and by_id[12].score == 1
    assert by_id[13].text == "I believe the author chose it." and by_id[13].score == 2
    assert by_id[14].text == 'The article "The Mast" explains it.'
    assert by_id[18].text == "Caf\u00e9 bytes." and result.replacement_chars == 0  # cp1252
    assert all(e.split == "train" for e in result.essays)  # from the file name
    assert dict(result.skipped) == {"missing score": 1, "too few columns": 1,
                                    "score out of range": 1}
    assert f"{path}:8: too few columns: 6 tab-separated fields, expected 8" in \
        "\n".join(result.skip_examples)
    assert sum(result.notes.values()) == 2  # both quote repairs are reported
    with pytest.raises(asap.AsapFormatError, match=f"{path}:7: missing score"):
        asap.read_tsv(path, strict=True)


def test_traits_layout_prompts_1_and_2_map_five_traits_by_name(tmp_path):
    header = "\t".join(["essay_id", "essay_set", "essay", "score"] + FIVE[::-1])
    path = tmp_path / "p1.tsv"
    path.write_text(header + "\n" + traits_line(1, 1, "Essay.", 9, [1, 2, 3, 4, 5]) + "\n")
    (essay,) = asap.read_tsv(path).essays
    assert list(essay.traits) == FIVE and essay.traits["Conventions"] == 1
    assert essay.split is None  # not named train/dev/test
    holistic = tmp_path / "dev.tsv"  # the layout without trait columns
    holistic.write_text("essay_id\tessay_set\tessay\tscore\n7\t2\tEssay.\t4\n")
    (essay,) = asap.read_tsv(holistic).essays
    assert (essay.score, essay.traits, essay.split) == (4, {}, "dev")


@pytest.mark.parametrize("layout", ["official", "traits"])
def test_essay_set_outside_the_table_is_an_error_naming_file_and_line(tmp_path, layout):
    path = tmp_path / "bad.tsv"
    if layout == "official":
        official_file(path, [official_line(1, 1, "fine", 8), official_line(2, 9, "x", 1)])
    else:
        path.write_text(TRAITS_HEADER_P3 + "\n" + traits_line(1, 12, "x", 1, [1, 1, 1, 1]))
    line = 3 if layout == "official" else 2
    with pytest.raises(asap.AsapFormatError, match=f"{path}:{line}: essay_set '(9|12)' is not"):
        asap.read_tsv(path)


def test_unknown_header_and_duplicate_ids(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("id\ttext\tlabel\n1\thello\t3\n")
    with pytest.raises(asap.AsapFormatError, match=f"{bad}:1: unrecognised header"):
        asap.read_tsv(bad)
    a = official_file(tmp_path / "a.tsv", [official_line(1, 3, "one", 1)])
    b = official_file(tmp_path / "b.tsv", [official_line(1, 3, "one", 1),
                                            official_line(2, 3, "two", 2)])
    result = asap.read_asap([a, b])
    assert [e.essay_id for e in result.essays] == [1, 2]
    assert result.skipped == {"duplicate essay_id": 1}
    assert f"{b}:2: duplicate essay_id: essay 1 was already read at {a}:2" in \
        result.skip_examples[0]


def test_a_quoted_essay_may_span_lines(tmp_path):
    path = official_file(tmp_path / "t.tsv", [
        '1\t3\t"First paragraph.',
        "",
        'Second ""quoted"" paragraph."\t2\t2\t\t2' + "\t" * 21,
        official_line(2, 3, "Next row.", 1),
    ])
    result = asap.read_tsv(path)
    assert [e.essay_id for e in result.essays] == [1, 2] and not result.skipped
    assert result.essays[0].text == 'First paragraph.\n\nSecond "quoted" paragraph.'
    assert result.essays[1].line == 5


# ----------------------------------------------------------------------------- tokenising


def test_assemble_ids_layout_and_truncation():
    cls, sep = 101, 102
    assert wordpiece.assemble_ids([5, 6, 7], cls, sep) == ([101, 5, 6, 7, 102], 5)
    assert (wordpiece.assemble_ids([5, 6], cls, sep, prompt_ids=[9])
            == ([101, 9, 102, 5, 6, 102], 6))
    ids, full = wordpiece.assemble_ids(list(range(20)), cls, sep, prompt_ids=[9, 9],
                                       max_tokens=8)
    assert ids == [101, 9, 9, 102, 0, 1, 2, 102] and full == 25
    with pytest.raises(ValueError, match="no room for the essay"):
        wordpiece.assemble_ids([5], cls, sep, prompt_ids=[9] * 6, max_tokens=8)


@pytest.fixture(scope="module")
def tokenizer():
    return wordpiece.load_tokenizer()


def test_wordpiece_tokenizer_is_uncased_bert_without_padding_or_truncation(tokenizer):
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id) == (101, 102, 0)
    assert tokenizer.vocab_size == 30522
    (short, long_) = tokenizer.encode_many(["Dear Editor", "word " * 300])
    assert short == tokenizer.encode_many(["dear editor"])[0] and len(short) == 2
    assert len(long_) == 300  # the packaged tokenizer.json would cut this at 128
    ids, _ = wordpiece.assemble_ids(short, tokenizer.cls_id, tokenizer.sep_id,
                                    prompt_ids=tokenizer.encode_many(["the prompt"])[0])
    tokens = [tokenizer.tokenizer.id_to_token(i) for i in ids]
    assert tokens == ["[CLS]", "the", "prompt", "[SEP]", "dear", "editor", "[SEP]"]


# ----------------------------------------------------------------------------- splits


def synthetic_essays(seed=0):
    rng = np.random.default_rng(seed)
    essays = []
    for prompt, n in ((1, 400), (3, 250)):
        lo, hi = asap.SCORE_RANGES[prompt]
        for k in range(n):
            essays.append(asap.Essay(essay_id=prompt * 10_000 + k, prompt=prompt, text="x",
                                     score=int(rng.integers(lo, hi + 1)), traits={},
                                     source="mem", line=k + 2))
    return essays


def test_stratified_split_is_deterministic_balanced_and_order_free():
    essays = synthetic_essays()
    fractions = (0.6, 0.2, 0.2)
    split = splits.stratified_split(essays, fractions, seed=3)
    assert split == splits.stratified_split(essays[::-1], fractions, seed=3)
    assert split != splits.stratified_split(essays, fractions, seed=4)
    for prompt in (1, 3):
        group = [e for e in essays if e.prompt == prompt]
        for s, f in zip(asap.SPLITS, fractions):
            n = sum(split[e.essay_id] == s for e in group)
            assert abs(n - f * len(group)) <= 1, (prompt, s, n)
        for score in {e.score for e in group}:  # each stratum split proportionally
            stratum = [e for e in group if e.score == score]
            for s, f in zip(asap.SPLITS, fractions):
                n = sum(split[e.essay_id] == s for e in stratum)
                assert abs(n - f * len(stratum)) <= 2, (prompt, score, s, n, len(stratum))


def test_split_options_are_checked(tmp_path):
    assert splits.parse_split_fractions("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.5,0.5", "0.6,0.3,0.3", "a,b,c", "0,0.5,0.5"):
        with pytest.raises(ValueError, match="split"):
            splits.parse_split_fractions(bad)
    assert asap.parse_prompt_set("all") is None
    assert asap.parse_prompt_set("7, 1,2") == (1, 2, 7)
    with pytest.raises(ValueError, match="'9' is not an ASAP prompt"):
        asap.parse_prompt_set("1,9")
    split_file = tmp_path / "split.csv"
    split_file.write_text("essay_id,split\n1,train\n2,dev\n3,holdout\n")
    with pytest.raises(asap.AsapFormatError, match=f"{split_file}:4: expected 'essay_id,split'"):
        splits.read_split_file(split_file)
    split_file.write_text("1,train\n2,dev\n1,test\n")
    with pytest.raises(asap.AsapFormatError, match=f"{split_file}:3: essay 1 .* on line 1"):
        splits.read_split_file(split_file)


# ----------------------------------------------------------------------------- building


def write_traits_splits(root: Path) -> list[Path]:
    """prompt_3/{train,dev,test}.tsv with the defective header, scores cycling 0-3."""
    paths = []
    essay_id = 100
    for split, n in (("train", 12), ("dev", 4), ("test", 4)):
        rows = []
        for k in range(n):
            s = k % 4
            rows.append(traits_line(essay_id, 3, f"The road was hot {'and long ' * (5 * s)}.",
                                    s, [s, s, min(3, s + 1), s]))
            essay_id += 1
        path = root / "prompt_3" / f"{split}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([TRAITS_HEADER_P3, *rows]) + "\n")
        paths.append(path)
    return paths


def test_build_keeps_file_splits_and_the_source_reads_them_back(tmp_path):
    paths = write_traits_splits(tmp_path / "in")
    out = tmp_path / "ds"
    manifest = build_dataset(BuildOptions(inputs=[str(tmp_path / "in")],
                                          output_dir=out, max_tokens=20))
    assert manifest["splits"] == {"train": 12, "dev": 4, "test": 4}
    assert manifest["split"]["rule"] == "input files"
    assert manifest["counts"] == {"train": {"3": 12}, "dev": {"3": 4}, "test": {"3": 4}}
    assert {s["path"] for s in manifest["sources"]} == {str(p) for p in paths}
    assert all(len(s["sha256"]) == 64 for s in manifest["sources"])
    assert manifest["trait_names"] == FOUR and manifest["score_ranges"] == {"3": [0, 3]}
    assert manifest["tokenizer"]["vocab_size"] == 30522
    # scores 2 and 3 run past 20 tokens: truncated, and counted per split and prompt
    assert manifest["overlength"]["over_limit"] == {"train": {"3": 6}, "dev": {"3": 2},
                                                    "test": {"3": 2}}
    assert load_manifest(out) == manifest

    train = AsapDataSource(out, "train")
    assert len(train) == 12
    rec = train[3]
    assert rec["essay_id"] == 103 and rec["prompt"] == 3 and rec["score"] == 3
    assert rec["target"] == np.float32(1.0)
    assert rec["input_ids"].dtype == np.int32 and len(rec["input_ids"]) == 20
    assert rec["input_ids"][0] == 101 and rec["input_ids"][-1] == 102
    assert rec["trait_scores"].tolist() == [3, 3, 3, 3] and rec["trait_mask"].all()
    np.testing.assert_allclose(rec["trait_targets"], [1, 1, 1, 1])
    raw = train.record(1)
    assert raw["traits"] == {"Content": 1, "Prompt Adherence": 1, "Language": 2,
                             "Narrativity": 1}
    assert raw["trait_targets"]["Language"] == pytest.approx(2 / 3)
    assert [r["essay_id"] for r in train.__getitems__([0, 11])] == [100, 111]

    import grain  # the source is what grain's MapDataset reads
    batch = next(iter(grain.MapDataset.source(AsapDataSource(out, "dev"))
                      .map(lambda r: r["score"]).batch(4)))
    assert batch.tolist() == [0, 1, 2, 3]
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        build_dataset(BuildOptions(inputs=[str(tmp_path / "in")], output_dir=out))


def test_build_with_drop_limit_and_split_file(tmp_path):
    write_traits_splits(tmp_path / "in")
    split_file = tmp_path / "split.csv"
    split_file.write_text("essay_id,split\n" + "".join(
        f"{i},{'train' if i < 112 else 'test'}\n" for i in range(100, 118)))  # 118, 119 absent
    manifest = build_dataset(BuildOptions(
        inputs=[str(tmp_path / "in")], output_dir=tmp_path / "ds", max_tokens=20,
        overlength="drop", split_file=split_file, limit_train_essays=4))
    assert manifest["split"]["rule"] == "split_file"
    assert manifest["skipped"] == {"not in split file": 2}
    # of 12 listed train essays 6 are too long (dropped), then 2 more go to the limit
    assert manifest["overlength"]["dropped"] == {"train": {"3": 6}, "test": {"3": 2}}
    assert manifest["split"]["train_essays_removed_by_limit"] == 2
    assert manifest["splits"] == {"train": 4, "dev": 0, "test": 4}
    assert len(AsapDataSource(tmp_path / "ds", "dev")) == 0


def test_stratified_split_of_an_official_file(tmp_path):
    lines = [official_line(i, 4, "word " * (i % 4 + 1), i % 4) for i in range(1, 41)]
    path = official_file(tmp_path / "training_set_rel3.tsv", lines)
    kwargs = dict(inputs=[path], split=(0.5, 0.25, 0.25), seed=1)
    m1 = build_dataset(BuildOptions(output_dir=tmp_path / "a", **kwargs))
    m2 = build_dataset(BuildOptions(output_dir=tmp_path / "b", **kwargs))
    assert m1["splits"] == {"train": 20, "dev": 10, "test": 10}
    assert m1["split"] == {**m2["split"], "seed": 1} and m1["split"]["rule"] == "stratified"
    assert m1["trait_names"] == []

    def essay_ids(directory):
        return {s: [r["essay_id"] for r in AsapDataSource(directory, s).__getitems__(
            range(m1["splits"][s]))] for s in asap.SPLITS}

    assert essay_ids(tmp_path / "a") == essay_ids(tmp_path / "b")  # same seed, same split
    src = AsapDataSource(tmp_path / "a", "train")
    per_score = np.bincount([int(src[i]["score"]) for i in range(len(src))], minlength=4)
    assert np.all(np.abs(per_score - 5) <= 1)  # 10 essays per score, half of each in train


# ----------------------------------------------------------------------------- demo corpus


def spearman(a, b):
    def ranks(x):
        x = np.asarray(x, dtype=float)
        r = np.empty(len(x))
        r[np.argsort(x, kind="stable")] = np.arange(len(x))
        for v in np.unique(x):  # ties share their mean rank
            r[x == v] = r[x == v].mean()
        return r
    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def test_demo_corpus_is_official_format_labelled_and_learnable(tmp_path):
    path = asap_demo.write_demo_tsv(tmp_path / "training_set_rel3.tsv", seed=0)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0] == list(asap.OFFICIAL_COLUMNS)
    assert all(len(r) == 28 for r in rows)
    assert 200 <= len(rows) - 1 <= 500
    assert all(r[2].startswith(asap_demo.MARKER) for r in rows[1:])
    essays = asap.read_tsv(path).essays
    assert len(essays) == len(rows) - 1
    assert {e.prompt for e in essays} == set(asap_demo.ESSAYS_PER_PROMPT)
    for prompt in asap_demo.ESSAYS_PER_PROMPT:
        group = [e for e in essays if e.prompt == prompt]
        lo, hi = asap.SCORE_RANGES[prompt]
        assert {e.score for e in group} == set(range(lo, hi + 1))
        rho = spearman([e.score for e in group], [len(e.text.split()) for e in group])
        assert rho > 0.5, (prompt, rho)
    again = asap_demo.write_demo_tsv(tmp_path / "again.tsv", seed=0)
    assert again.read_bytes() == path.read_bytes()
    assert asap_demo.write_demo_tsv(tmp_path / "other.tsv", seed=1).read_bytes() != \
        path.read_bytes()


def test_build_demo_dataset_builds_once(tmp_path):
    out = build_demo_dataset(tmp_path / "data", max_tokens=64)
    manifest = load_manifest(out)
    assert manifest["max_tokens"] == 64 and manifest["prompts"] == [1, 3, 4]
    assert (tmp_path / "demo_training_set.tsv").is_file()
    written = (out / "manifest.json").stat().st_mtime_ns
    assert build_demo_dataset(out, max_tokens=64) == out
    assert (out / "manifest.json").stat().st_mtime_ns == written  # kept, not rebuilt


# ----------------------------------------------------------------------------- CLI


def run_cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "launch.build_dataset", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_cli_builds_the_demo_corpus_end_to_end(tmp_path, tokenizer):
    demo = asap_demo.write_demo_tsv(tmp_path / "training_set_rel3.tsv")
    out = tmp_path / "ds"
    stdout = run_cli(f"--input={demo}", f"--output_dir={out}", "--prompt_set=1,3",
                     "--max_tokens=64", "--overlength=drop", "--seed=2")
    manifest = load_manifest(out)
    assert manifest["prompts"] == [1, 3]
    assert manifest["prompts_filtered_out"] == {"4": asap_demo.ESSAYS_PER_PROMPT[4]}
    dropped = sum(n for d in manifest["overlength"]["dropped"].values() for n in d.values())
    assert dropped > 0 and f"over max_tokens=64: {dropped} (dropped)" in stdout
    total = asap_demo.ESSAYS_PER_PROMPT[1] + asap_demo.ESSAYS_PER_PROMPT[3]
    assert sum(manifest["splits"].values()) == total - dropped
    assert manifest["split"]["rule"] == "stratified" and manifest["split"]["seed"] == 2
    for split in asap.SPLITS:
        src = AsapDataSource(out, split)
        assert len(src) == manifest["splits"][split] > 0
        rec = src[0]
        assert rec["input_ids"][0] == 101 and len(rec["input_ids"]) <= 64
        lo, hi = asap.SCORE_RANGES[int(rec["prompt"])]
        assert rec["target"] == pytest.approx((rec["score"] - lo) / (hi - lo))

    split_file = tmp_path / "split.csv"
    with open(split_file, "w") as f:
        f.write("essay_id,split\n")
        for k, row in enumerate(asap_demo.demo_rows()):
            f.write(f"{row[0]},{asap.SPLITS[k % 3]}\n")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"3": "Describe the setting."}))
    out2 = tmp_path / "ds2"
    run_cli(f"--input={demo}", f"--output_dir={out2}", "--prompt_set=3",
            f"--split_file={split_file}", f"--prompt_texts={prompts}")
    manifest = load_manifest(out2)
    assert manifest["split"]["rule"] == "split_file"
    assert manifest["tokenizer"]["layout"] == "[CLS] prompt [SEP] essay [SEP]"
    rec = AsapDataSource(out2, "dev")[0]
    head = [101, *tokenizer.encode_many(["Describe the setting."])[0], 102]
    assert rec["input_ids"][:len(head)].tolist() == head and len(head) == 6


def test_cli_analyze_lengths_writes_a_png_and_no_dataset(tmp_path):
    demo = asap_demo.write_demo_tsv(tmp_path / "training_set_rel3.tsv")
    out = tmp_path / "report"
    stdout = run_cli(f"--input={demo}", f"--output_dir={out}", "--analyze_lengths",
                     "--max_tokens=100")
    png = out / "token_lengths.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.array_record")) and not (out / "manifest.json").exists()
    report = json.loads((out / "token_lengths.json").read_text())
    assert set(report["prompts"]) == {"1", "3", "4"}
    stats = report["prompts"]["1"]
    assert stats["count"] == asap_demo.ESSAYS_PER_PROMPT[1]
    assert stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"]
    assert 0 < stats["share_over_limit"] < 1
    for column in ("count", "mean", "p50", "p90", "p99", "max", "over"):
        assert column in stdout
