"""LLaMA-AES from a TFDS build (config.data.tfds_name) equals LLaMA-AES from the mtl dir
`build_mtl` writes from the same files: the same examples per split (all but `source`,
which names the TFDS record instead of the file line) and the same first batches."""

import dataclasses
import json

import numpy as np
import pytest

from aes_jax import datasets
from aes_jax.data.mtl_dataset import build_mtl
from aes_jax.data.mtl_io import load_mtl_dir
from aes_jax.datasets.mtl_source import load_tfds_mtl
from aes_jax.tasks.llama_aes import LlamaAesTask
from configs.llama_aes import get_config
from tests.test_asap import official_file, official_line, write_traits_splits
from tests.test_ell import write_folds
from tests.test_tfds_datasets import write_prompt_1


def _task(tmp_path, **data):
    c = get_config("tiny")
    c.data.update(data)
    return LlamaAesTask(c, tmp_path / "run")


def _without_source(splits):
    return {s: [dataclasses.replace(e, source="") for e in v] for s, v in splits.items()}


def _same_batches(a, b):
    for x, y in ((next(a.train_iterator(4, 7, 0, 1)), next(b.train_iterator(4, 7, 0, 1))),
                 (next(iter(a.eval_batches(4, 0, 1))), next(iter(b.eval_batches(4, 0, 1))))):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("feedback", ["none", "rubric"])
def test_ellipse_tfds_gives_the_mtl_dir_examples_and_batches(tmp_path, feedback):
    folds = write_folds(tmp_path / "folds", per_fold=4)
    build_mtl(str(folds), tmp_path / "mtl", feedback=feedback, test_fold=1)
    datasets.build("ellipse", folds, tmp_path / "tfds", "test_fold_1")
    manifest, want = load_mtl_dir(tmp_path / "mtl")
    got_manifest, got = load_tfds_mtl("ellipse/test_fold_1", tmp_path / "tfds",
                                      feedback=feedback)
    assert {s: len(v) for s, v in got.items()} == manifest["counts"] == {
        "train": 14, "dev": 2, "test": 4}
    assert _without_source(got) == _without_source(want)
    assert got["train"][0].source == "tfds:ellipse/test_fold_1/1.0.0/train:0"
    for key in ("format", "traits", "codecs", "counts", "feedback", "answer_format"):
        assert got_manifest[key] == manifest[key], key

    mtl = _task(tmp_path, dir=str(tmp_path / "mtl"))
    tf = _task(tmp_path, tfds_name="ellipse/test_fold_1", tfds_dir=str(tmp_path / "tfds"),
               tfds_feedback=feedback)
    assert (tf.traits, tf.codecs) == (mtl.traits, mtl.codecs)
    _same_batches(mtl, tf)


def test_asap_traits_prompt_tfds_gives_the_mtl_dir_examples_and_batches(tmp_path):
    write_traits_splits(tmp_path / "in")
    texts = tmp_path / "prompts.json"
    texts.write_text(json.dumps({"3": "Write about the road."}))
    build_mtl(str(tmp_path / "in"), tmp_path / "mtl", prompt_set="3",
              prompt_texts={3: "Write about the road."})
    datasets.build("asap_traits", tmp_path / "in", tmp_path / "tfds", "prompt_3")
    _, want = load_mtl_dir(tmp_path / "mtl")
    _, got = load_tfds_mtl("asap_traits/prompt_3", tmp_path / "tfds",
                           prompt_texts={3: "Write about the road."})
    assert {s: len(v) for s, v in got.items()} == {"train": 12, "dev": 4, "test": 4}
    assert _without_source(got) == _without_source(want)
    assert "Write about the road." in got["train"][0].instruction

    mtl = _task(tmp_path, dir=str(tmp_path / "mtl"))
    tf = _task(tmp_path, tfds_name="asap_traits/prompt_3", tfds_dir=str(tmp_path / "tfds"),
               tfds_prompt_texts=str(texts))
    _same_batches(mtl, tf)


def test_tfds_source_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="config.data.dir and config.data.tfds_name: give one"):
        _task(tmp_path, dir="x", tfds_name="ellipse")
    with pytest.raises(ValueError, match="tfds_dir without config.data.tfds_name"):
        _task(tmp_path, tfds_dir="x")
    with pytest.raises(ValueError, match="tfds_feedback='fancy'"):
        _task(tmp_path, tfds_name="ellipse", tfds_feedback="fancy")


def test_asap_traits_prompts_with_other_traits_are_refused(tmp_path):
    write_traits_splits(tmp_path / "in")
    write_prompt_1(tmp_path / "in")  # five traits, prompt 3 has four
    datasets.build("asap_traits", tmp_path / "in", tmp_path / "tfds")
    with pytest.raises(ValueError, match="differ in ASAP.. traits.*asap_traits/prompt_k"):
        load_tfds_mtl("asap_traits", tmp_path / "tfds")
    (tmp_path / "kaggle").mkdir()
    official_file(tmp_path / "kaggle" / "training_set_rel3.tsv",
                  [official_line(i, 1, f"Essay {i}.", 2 + i % 5) for i in range(1, 11)])
    datasets.build("asap_aes", tmp_path / "kaggle", tmp_path / "tfds")
    with pytest.raises(ValueError, match="reads the TFDS datasets ellipse and asap_traits.*"
                                         "not asap_aes"):
        load_tfds_mtl("asap_aes", tmp_path / "tfds")
