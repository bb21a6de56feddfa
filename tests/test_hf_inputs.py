"""Hugging Face `datasets` as LLaMA-AES inputs (aes_jax/data/hf_inputs.py): the demo mtl
dataset round-trips through every accepted form, the column table maps aliases, missing
columns and hub ids are refused. Offline: nothing may reach the hub."""

import json
import os

os.environ["HF_DATASETS_OFFLINE"] = "1"  # before `datasets` is first imported
os.environ["HF_HUB_OFFLINE"] = "1"

import datasets  # noqa: E402
import pytest  # noqa: E402

from aes_jax.data import hf_inputs, mtl_dataset, mtl_io  # noqa: E402

datasets.disable_progress_bars()


@pytest.fixture(scope="module")
def mtl(tmp_path_factory):
    """(mtl dir, its save_to_disk export, manifest, splits) of a tiny demo dataset."""
    root = tmp_path_factory.mktemp("hf")
    mtl_dir = mtl_dataset.build_demo_dataset(root / "mtl", num_essays=24)
    manifest, splits = mtl_io.load_mtl_dir(mtl_dir)
    exported = hf_inputs.export_mtl_dir(mtl_dir, root / "hf")
    return mtl_dir, exported, manifest, splits


def test_round_trip_through_every_form(mtl, tmp_path):
    _, exported, manifest, splits = mtl
    assert (exported / "dataset_dict.json").is_file()
    dd = datasets.load_from_disk(str(exported))
    assert sorted(dd) == sorted(splits) and all(len(splits[s]) for s in splits)
    cache = str(tmp_path / "cache")
    forms = {"DatasetDict": dd, "save_to_disk": str(exported)}
    train = dd["train"]
    train.to_parquet(str(tmp_path / "train.parquet"))
    train.to_json(str(tmp_path / "train.jsonl"))
    # CSV holds no lists: traits and scores as JSON text, as a user's spreadsheet would.
    train.map(lambda r: {"traits": json.dumps(r["traits"]), "scores": json.dumps(r["scores"])},
              features=datasets.Features({**train.features,
                                          "traits": datasets.Value("string"),
                                          "scores": datasets.Value("string")})
              ).to_csv(str(tmp_path / "train.csv"), index=False)
    for name, source in forms.items():
        got, blanks, _ = hf_inputs.read_hf_examples(source, cache_dir=cache)
        assert got == splits, name
        assert set(blanks.values()) == {0}
    for suffix in ("parquet", "jsonl", "csv"):
        got, _, _ = hf_inputs.read_hf_examples(str(tmp_path / f"train.{suffix}"),
                                               cache_dir=cache)
        assert got == {"train": splits["train"]}, suffix
    got, _, _ = hf_inputs.read_hf_examples(train, cache_dir=cache)
    assert got == {"train": splits["train"]}
    per_split = {"train": str(tmp_path / "train.parquet"), "dev": str(tmp_path / "train.csv")}
    got, _, _ = hf_inputs.read_hf_examples(per_split, cache_dir=cache)
    assert got == {"train": splits["train"], "dev": splits["train"]}

    # The task's loader: traits and codecs from the exported manifest, or inferred.
    loaded_manifest, loaded = hf_inputs.load_hf_mtl(str(exported))
    assert loaded == splits and loaded_manifest["traits"] == manifest["traits"]
    assert loaded_manifest["codecs"] == manifest["codecs"]
    inferred_manifest, _ = hf_inputs.load_hf_mtl(dd)
    assert inferred_manifest["codecs"] == manifest["codecs"]


def test_column_aliases_csv_cells_and_blank_rows(mtl, tmp_path):
    ex = mtl[3]["train"][0]
    path = tmp_path / "aliased.csv"
    datasets.Dataset.from_list([
        {"prompt": ex.instruction, "response": ex.output, "id": "0012",
         "traits": " ".join(ex.traits), "scores": "[" + ", ".join(map(str, ex.scores)) + "]",
         "extra": "ignored"},
        {"prompt": "", "response": "", "id": "", "traits": "", "scores": "", "extra": "x"},
    ]).to_csv(str(path), index=False)
    got, blanks, _ = hf_inputs.read_hf_examples(str(path), cache_dir=str(tmp_path / "c"))
    (row,) = got["train"]
    assert blanks == {"train": 1}
    assert (row.instruction, row.output, row.essay_id) == (ex.instruction, ex.output, "0012")
    assert row.traits == ex.traits and row.scores == ex.scores
    assert row.source == f"{path}[train] row 0"  # no source column: the row names itself
    # Alpaca: input is appended to the instruction, as the JSONL reader does.
    alpaca = datasets.Dataset.from_list([{"instruction": "Score it.", "input": "An essay.",
                                          "answer": "3"}])
    (a,), _ = hf_inputs.examples_from_dataset(alpaca, "alpaca")
    assert a.instruction == "Score it.\n\nAn essay." and a.output == "3"


def test_missing_columns_and_bad_rows_name_the_file(tmp_path):
    path = tmp_path / "bad.parquet"
    datasets.Dataset.from_list([{"text": "an essay", "label": 3}]).to_parquet(str(path))
    with pytest.raises(ValueError, match=r"bad\.parquet\[train\]: has columns \['text', "
                                         r"'label'\]; expected instruction .*and output"):
        hf_inputs.read_hf_examples(str(path), cache_dir=str(tmp_path / "c"))
    # Scoring without gold needs no output column.
    no_gold = datasets.Dataset.from_list([{"instruction": "essay"}])
    (ex,), _ = hf_inputs.examples_from_dataset(no_gold, "x", require_output=False)
    assert ex.output == ""
    bad = datasets.Dataset.from_list([{"instruction": "a", "output": "1", "traits": "",
                                       "scores": ""},
                                      {"instruction": "b", "output": "1", "traits": "x",
                                       "scores": "1 2"}])
    with pytest.raises(ValueError, match="rows row 1: 1 traits but 2 scores"):
        hf_inputs.examples_from_dataset(bad, "rows")


def test_hub_ids_refused_and_split_files_parsed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for hub_id in ("someone/essays", "imdb", "hf://datasets/someone/essays"):
        with pytest.raises(ValueError, match="not a local file or directory; hub"):
            hf_inputs.open_hf(hub_id)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        hf_inputs.open_hf("missing.parquet")
    assert hf_inputs.parse_split_files("train=a.parquet, dev=b.csv") == {
        "train": "a.parquet", "dev": "b.csv"}
    with pytest.raises(ValueError, match="split=FILE"):
        hf_inputs.parse_split_files("train=a.parquet,train=b.csv")
    assert datasets.config.HF_DATASETS_OFFLINE


def _task(tmp_path, **data):
    from aes_jax.tasks.llama_aes import LlamaAesTask
    from configs.llama_aes import get_config

    c = get_config("tiny")
    for key, value in data.items():
        c.data[key] = value
    return LlamaAesTask(c, tmp_path)


def test_task_reads_hf_sources_and_scores_hf_files(mtl, tmp_path):
    import numpy as np

    mtl_dir, exported, manifest, splits = mtl
    from_dir = _task(tmp_path, dir=str(mtl_dir))
    from_hf = _task(tmp_path, hf=str(exported))
    assert from_hf.dataset[1] == splits and from_hf.traits == from_dir.traits
    assert from_hf.codecs == from_dir.codecs
    dd = datasets.load_from_disk(str(exported))
    files = {}
    for split, fmt in (("train", "parquet"), ("dev", "json"), ("test", "parquet")):
        files[split] = str(tmp_path / f"{split}.{fmt}")
        getattr(dd[split], f"to_{fmt}")(files[split])
    spec = ",".join(f"{s}={f}" for s, f in files.items())
    from_files = _task(tmp_path, hf_files=spec)  # no manifest beside: codecs inferred
    assert from_files.dataset[1] == splits and from_files.codecs == from_dir.codecs
    with pytest.raises(ValueError, match="config.data.dir and config.data.hf: give one"):
        _task(tmp_path, dir=str(mtl_dir), hf=str(exported))

    # launch.score's reader: a parquet file and a save_to_disk dir (its test split) give
    # the prompts and gold digits the run's own split gives.
    want = from_dir.split_essays("test")
    for source in (files["test"], str(exported)):
        read = from_dir.read_essays(source)
        assert [e.essay_id for e in read.essays] == [e.essay_id for e in want]
        for got, ref in zip(read.essays, want):
            np.testing.assert_array_equal(got.prompt_ids, ref.prompt_ids)
            np.testing.assert_array_equal(got.gold, ref.gold)
        assert read.report["files"][0]["format"].startswith("hf:")


def test_build_dataset_export_hf_cli(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = [sys.executable, "-m", "launch.build_dataset", "--format=mtl", "--demo",
            f"--output_dir={tmp_path / 'mtl'}", f"--export_hf={tmp_path / 'hf'}"]
    proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "exported (datasets save_to_disk)" in proc.stdout
    _, splits = mtl_io.load_mtl_dir(tmp_path / "mtl")
    assert hf_inputs.load_hf_mtl(str(tmp_path / "hf"))[1] == splits
    # An existing export is refused before anything is built.
    args[5] = f"--output_dir={tmp_path / 'mtl2'}"
    again = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "hf already holds a dataset" in again.stderr
    assert not (tmp_path / "mtl2" / "manifest.json").exists()
