"""The TFDS builders of aes_jax.datasets on the fixture files test_asap / test_ell write:
counts, features, splits and skip counts equal the readers'; the TRM-AES batches from a
TFDS build equal those of the ArrayRecord dataset built from the same files."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from aes_jax import datasets
from aes_jax.data import asap, ell, splits
from aes_jax.data.asap_records import BuildOptions, build_dataset
from aes_jax.datasets.common import ASAP_TRAITS
from tests.test_asap import (FIVE, FOUR, official_file, official_line, traits_line,
                             write_traits_splits)
from tests.test_ell import TRAITS, kaggle_row, write_csv, write_folds


def records(name, data_dir, split):
    source = tfds.data_source(name, data_dir=data_dir, split=split)
    return [source[i] for i in range(len(source))]


def test_asap_aes_holds_every_read_essay_in_the_readers_split(tmp_path):
    rows = [official_line(i, 1 + i % 2, f"Essay {i} on the topic.", 2 + i % 5)
            for i in range(1, 41)]
    rows += [official_line(90, 1, "No score.", ""), "91\t1\tshort row\t3\t3",
             official_line(92, 2, "Out of range.", 9)]
    (tmp_path / "in").mkdir()
    path = official_file(tmp_path / "in" / "training_set_rel3.tsv", rows)
    builder = datasets.build("asap_aes", tmp_path / "in", tmp_path / "out")
    read = asap.read_asap([path])
    info = builder.info
    assert info.full_name == "asap_aes/all/1.0.0" and info.disable_shuffling
    assert info.metadata["read"]["skipped"] == dict(read.skipped) == {
        "missing score": 1, "too few columns": 1, "score out of range": 1}
    assert sum(s.num_examples for s in info.splits.values()) == len(read.essays) == 40
    split_of, rule = splits.assign_splits(read.essays, fractions=splits.DEFAULT_SPLIT, seed=0)
    assert info.metadata["split"] == rule
    by_id = {e.essay_id: e for e in read.essays}
    for split in ("train", "dev", "test"):
        got = records("asap_aes", tmp_path / "out", split)
        assert {int(r["essay_id"]) for r in got} == {i for i, s in split_of.items() if s == split}
        keys = [(int(r["prompt"]), int(r["essay_id"])) for r in got]
        assert keys == sorted(keys)  # the fixed order the TRM comparison relies on
        for r in got:
            e = by_id[int(r["essay_id"])]
            assert (r["essay"].decode(), int(r["score"]), int(r["prompt"])) == (
                e.text, e.score, e.prompt)
            assert not r["trait_mask"].any() and (r["trait_scores"] == -1).all()
    one = datasets.build("asap_aes", tmp_path / "in", tmp_path / "out", "prompt_2")
    assert one.info.metadata["prompts"] == [2]
    assert sum(s.num_examples for s in one.info.splits.values()) == 20


def test_asap_traits_keeps_file_splits_and_puts_traits_on_the_fixed_axis(tmp_path):
    write_traits_splits(tmp_path / "in")
    builder = datasets.build("asap_traits", tmp_path / "in", tmp_path / "out")
    assert {s: v.num_examples for s, v in builder.info.splits.items()} == {
        "train": 12, "dev": 4, "test": 4}
    assert builder.info.metadata["trait_names"] == FOUR
    assert builder.info.metadata["split"]["rule"] == "input files"
    read = asap.read_asap(asap.expand_inputs(str(tmp_path / "in")))
    essays = {e.essay_id: e for e in read.essays if e.split == "dev"}
    got = records("asap_traits", tmp_path / "out", "dev")
    assert sorted(int(r["essay_id"]) for r in got) == sorted(essays)
    for r in got:
        traits = essays[int(r["essay_id"])].traits
        for k, name in enumerate(ASAP_TRAITS):
            assert r["trait_mask"][k] == (name in traits)
            assert r["trait_scores"][k] == traits.get(name, -1)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("no tsv here")
    with pytest.raises(FileNotFoundError, match="no \\*.tsv.*cross-prompt-trait-scoring"):
        datasets.build("asap_traits", tmp_path / "other", tmp_path / "out2")


def test_ellipse_fold_files_and_kaggle_csv(tmp_path):
    write_folds(tmp_path / "folds")
    builder = datasets.build("ellipse", tmp_path / "folds", tmp_path / "out", "test_fold_2")
    want = ell.split_ell(ell.read_ell_dir(tmp_path / "folds").essays, test_fold=2)
    for split, group in want.items():
        got = records("ellipse/test_fold_2", tmp_path / "out", split)
        assert [r["text_id"].decode() for r in got] == [e.text_id for e in group]
        for r, e in zip(got, group):
            np.testing.assert_array_equal(r["scores"], [e.scores[t] for t in TRAITS])
            assert r["fold"] == e.fold and r["essay"].decode() == e.text
    assert builder.info.metadata["layout"] == "arts_fold"

    rows = [kaggle_row(f"K{i:02d}", f"Essay {i}.", ["3.5"] * 6) for i in range(12)]
    rows.append(kaggle_row("BAD", "Off grid.", ["3.3"] * 6))
    path = write_csv(tmp_path / "kaggle" / "train.csv", ["text_id", "full_text", *TRAITS], rows)
    kag = datasets.build("ellipse", tmp_path / "kaggle", tmp_path / "out")
    assert kag.info.metadata["read"]["skipped"] == dict(ell.read_ell(path).skipped) == {
        "bad score": 1}
    assert sum(s.num_examples for s in kag.info.splits.values()) == 12


def write_prompt_1(root):
    """prompt_1/{train,dev,test}.tsv: holistic 2-12 and traits 1-6 differ in range, so a
    trait normalised on the wrong scale shows."""
    header = "\t".join(["essay_id", "essay_set", "essay", "score", *FIVE])
    for k, split in enumerate(("train", "dev", "test")):
        rows = [traits_line(10 * k + j + 1, 1, f"Dear editor {'computers ' * j}help.",
                            2 + j, [1 + (j + t) % 6 for t in range(5)]) for j in range(4)]
        path = root / "prompt_1" / f"{split}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([header, *rows]) + "\n")


def _trm_task(tmp_path, **data):
    from configs import trm_aes as trm_config
    from aes_jax.tasks.trm_aes import TRMAesTask

    config = trm_config.get_config("demo")
    config.data.max_tokens = 20
    config.data.update(data)
    return TRMAesTask(config, tmp_path / "run")


def test_trm_batches_from_tfds_equal_the_array_record_batches(tmp_path):
    write_traits_splits(tmp_path / "in")
    write_prompt_1(tmp_path / "in")
    build_dataset(BuildOptions(inputs=[str(tmp_path / "in")], output_dir=tmp_path / "ar",
                               max_tokens=20))
    datasets.build("asap_traits", tmp_path / "in", tmp_path / "tfds")
    ar = _trm_task(tmp_path, dataset_dir=str(tmp_path / "ar"))
    tf = _trm_task(tmp_path, tfds_name="asap_traits", tfds_dir=str(tmp_path / "tfds"))
    assert (tf.ranges, tf.traits, tf.seq_len, tf.pad_id) == (ar.ranges, ar.traits, ar.seq_len,
                                                            ar.pad_id)
    a_it, t_it = (t.train_iterator(4, seed=3, process_index=0, process_count=1)
                  for t in (ar, tf))
    assert tf.traits == list(ASAP_TRAITS)  # prompts 1 and 3: all eight
    for _ in range(6):  # past one epoch of 16 essays: the reshuffle is the same too
        a, t = next(a_it), next(t_it)
        assert a.keys() == t.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], t[k], err_msg=k)
    a_ev = list(ar.eval_batches(8, 0, 1))
    t_ev = list(tf.eval_batches(8, 0, 1))
    assert len(a_ev) == len(t_ev)
    for a, t in zip(a_ev, t_ev):
        for k in a:
            np.testing.assert_array_equal(a[k], t[k], err_msg=k)


def test_trm_with_prompt_texts_from_tfds_equals_the_array_record_records(tmp_path):
    import json

    write_traits_splits(tmp_path / "in")
    texts = {3: "Describe the setting of the story."}
    (tmp_path / "prompts.json").write_text(json.dumps(texts))
    build_dataset(BuildOptions(inputs=[str(tmp_path / "in")], output_dir=tmp_path / "ar",
                               max_tokens=20, prompt_texts=texts))
    datasets.build("asap_traits", tmp_path / "in", tmp_path / "tfds")
    ar = _trm_task(tmp_path, dataset_dir=str(tmp_path / "ar"))
    tf = _trm_task(tmp_path, tfds_name="asap_traits", tfds_dir=str(tmp_path / "tfds"),
                   tfds_prompt_texts=str(tmp_path / "prompts.json"))
    a, t = ar.source("train"), tf.source("train")
    assert len(a) == len(t) > 0
    for i in range(len(a)):
        np.testing.assert_array_equal(a[i]["input_ids"], t[i]["input_ids"])
