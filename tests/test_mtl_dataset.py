"""LLaMA-AES instruction datasets: examples from ELLIPSE and ASAP++ essays, the synthetic
ELLIPSE-layout demo corpus and the --format=mtl CLI. Fixtures are written here; nothing
reads the shared real data."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aes_jax.data import answer_format, asap, asap_demo, ell, mtl_dataset, mtl_demo, mtl_io
from tests.mtl_utils import ELL_CODECS, ELL_TRAITS, ell_record

REPO = Path(__file__).resolve().parents[1]


def test_examples_from_ell_and_asap():
    (ex,) = mtl_dataset.examples_from_ell([ell_record()], with_feedback=True)
    assert ex.output.startswith("4 6 5 5 2 7\n\nEssay Feedback: ")
    assert ex.essay_id == "E1" and ex.source == "fold_0.csv:2"
    assert ex.traits == ELL_TRAITS and ex.scores == (2.5, 3.5, 3.0, 3.0, 1.5, 4.0)
    assert mtl_io.check_example(ex, ELL_CODECS, ELL_TRAITS) == [4, 6, 5, 5, 2, 7]
    unscored = ell.EllEssay("T1", "text", {}, "test.csv", 3)
    with pytest.raises(ValueError, match="test.csv:3: essay T1 has no"):
        mtl_dataset.examples_from_ell([unscored], with_feedback=False)

    traits = dict(zip(asap.TRAIT_NAMES[3], (2, 1, 3, 0)))
    essay = asap.Essay(essay_id=5, prompt=3, text="The heat.", score=2, traits=traits,
                       source="train.tsv", line=4)
    (ex,) = mtl_dataset.examples_from_asap([essay], with_feedback=False,
                                           prompt_texts={3: "Describe the setting."})
    assert ex.output == "2 1 3 0" and ex.traits == asap.TRAIT_NAMES[3]
    assert "Describe the setting." in ex.instruction and ex.source == "train.tsv:4"
    holistic = asap.Essay(essay_id=6, prompt=3, text="x", score=1, traits={},
                          source="training_set_rel3.tsv", line=9)
    with pytest.raises(ValueError, match="training_set_rel3.tsv:9: essay 6 .* no ASAP\\+\\+"):
        mtl_dataset.examples_from_asap([holistic], with_feedback=False)


def test_demo_ell_corpus_is_kaggle_layout_synthetic_and_learnable(tmp_path):
    path = mtl_demo.write_demo_ell_csv(tmp_path / "train.csv", n=120, seed=0)
    assert path.read_text(encoding="utf-8").splitlines()[0] == \
        "text_id,full_text," + ",".join(ELL_TRAITS)
    result = ell.read_ell(path, strict=True)
    essays = result.essays
    assert len(essays) == 120 and result.files[0].format == "kaggle"
    assert all(e.text.startswith(asap_demo.MARKER) for e in essays)
    values = np.array([[e.scores[t] for t in ELL_TRAITS] for e in essays])
    assert values.min() >= 1.0 and values.max() <= 5.0 and len(np.unique(values)) >= 7
    length = [len(e.text.split()) for e in essays]
    assert np.corrcoef(values.mean(1), length)[0, 1] > 0.5  # scores follow the text
    assert mtl_demo.write_demo_ell_csv(tmp_path / "again.csv", 120, 0).read_bytes() == \
        path.read_bytes()


def run_cli(*args, ok=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "launch.build_dataset", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_cli_builds_the_mtl_demo_end_to_end(tmp_path):
    out = tmp_path / "mtl"
    stdout = run_cli("--format=mtl", "--demo", f"--output_dir={out}", "--feedback=rubric")
    manifest, splits = mtl_io.load_mtl_dir(out)
    assert manifest["dataset"] == "ellipse" and manifest["feedback"]["mode"] == "rubric"
    assert sum(manifest["counts"].values()) == 240 and "synthetic_demo" in manifest
    assert all(len(splits[s]) == manifest["counts"][s] > 0 for s in asap.SPLITS)
    ids = [ex.essay_id for v in splits.values() for ex in v]
    assert len(set(ids)) == 240
    assert answer_format.FEEDBACK_MARKER in splits["train"][0].output
    assert (out / "source" / "train.csv").is_file()
    assert f"train {manifest['counts']['train']}" in stdout and "skipped rows: none" in stdout
    again = run_cli("--format=mtl", "--demo", f"--output_dir={out}", ok=False)
    assert "already holds a dataset" in again
    bad = run_cli("--format=mtl", "--demo", f"--output_dir={tmp_path / 'x'}",
                  "--max_tokens=64", ok=False)
    assert "--max_tokens only applies with --format=trm" in bad


def test_cli_builds_mtl_from_asap_trait_files(tmp_path):
    header = "\t".join(["essay_id", "essay_set", "essay", "score", *asap.TRAIT_NAMES[3]])
    essay_id = 100
    for split in asap.SPLITS:
        rows = []
        for k in range(4):
            text = ("The road\u2019s hot." if (split, k) == ("train", 0)
                    else f"The road was hot {k}.")
            rows.append("\t".join(map(str, [essay_id, 3, text, k % 4, k % 4, 1, 2, 3])))
            essay_id += 1
        path = tmp_path / "in" / "prompt_3" / f"{split}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        # one raw cp1252 apostrophe (0x92) in place of the UTF-8 one, as in the Kaggle file
        path.write_bytes(("\n".join([header, *rows]) + "\n").encode().replace(
            "\u2019".encode(), b"\x92"))
    other = tmp_path / "in" / "prompt_4" / "train.tsv"  # filtered out by --prompt_set=3
    other.parent.mkdir()
    other.write_bytes(header.encode() + b"\n900\t4\tLost \x81 byte.\t1\t1\t1\t1\t1\n")
    out = tmp_path / "mtl"
    stdout = run_cli("--format=mtl", f"--input={tmp_path / 'in'}", f"--output_dir={out}",
                     "--prompt_set=3")
    manifest, splits = mtl_io.load_mtl_dir(out)
    assert splits["train"][0].essay == "The road\u2019s hot."
    # decoding of the essays kept; prompt 4's lost byte stays with its file's entry
    assert manifest["decoding"]["lines"] == {"utf-8": 11, "cp1252": 1}
    assert manifest["decoding"]["replacement_chars"] == 0
    assert sum(s["replacement_chars"] for s in manifest["sources"]) == 1
    assert "lines decoded (essays kept): utf-8 11, cp1252 1" in stdout
    assert manifest["dataset"] == "asap++" and manifest["counts"] == {"train": 4, "dev": 4,
                                                                     "test": 4}
    assert manifest["traits"] == list(asap.TRAIT_NAMES[3])
    assert manifest["codecs"][0] == {"lo": 0.0, "hi": 3.0, "step": 1.0, "digits": [0, 3]}
    assert [ex.output for ex in splits["dev"]] == ["0 1 2 3", "1 1 2 3", "2 1 2 3", "3 1 2 3"]
    assert splits["dev"][0].essay == "The road was hot 0."
    assert "(input files)" in stdout
    bad = run_cli("--format=mtl", f"--input={tmp_path / 'in'}", f"--output_dir={out}2",
                  "--test_fold=1", ok=False)
    assert "--test_fold only applies with ELLIPSE inputs" in bad


def test_build_demo_dataset_builds_once(tmp_path):
    out = mtl_dataset.build_demo_dataset(tmp_path / "mtl_demo", 60)
    manifest, splits = mtl_io.load_mtl_dir(out)
    assert sum(manifest["counts"].values()) == 60 and "synthetic_demo" in manifest
    assert answer_format.FEEDBACK_MARKER in splits["train"][0].output
    written = (out / "manifest.json").stat().st_mtime_ns
    assert mtl_dataset.build_demo_dataset(out, 60) == out
    assert (out / "manifest.json").stat().st_mtime_ns == written  # kept, not rebuilt
