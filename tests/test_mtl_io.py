"""LLaMA-AES datasets on disk: JSONL round trips with errors naming file and line, and
dataset directories with or without a manifest."""

import json
import re

import pytest

from aes_jax.data import asap, mtl_dataset, mtl_io
from aes_jax.data.mtl_io import MtlExample
from aes_jax.data.score_codec import ScoreCodec
from tests.mtl_utils import ELL_CODECS, ELL_TRAITS, ell_record


def test_jsonl_round_trip_and_errors_naming_file_and_line(tmp_path):
    examples = [MtlExample("Score this: é", "4 3", essay_id="7", traits=("a", "b"),
                           scores=(4.0, 3.0), source="x.tsv:2"),
                MtlExample("Plain", "1 2")]
    path = tmp_path / "train.jsonl"
    assert mtl_io.write_jsonl(path, examples) == 2
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["instruction", "output", "essay_id", "traits", "scores", "source"]
    assert list(json.loads(path.read_text().splitlines()[1])) == ["instruction", "output"]
    back = mtl_io.read_jsonl(path)
    assert back[0] == examples[0]
    assert back[1].instruction == "Plain" and back[1].source == f"{path}:2"

    path.write_text(path.read_text() + "\n\n" + '{"instruction": "x", "output": "1"}\n')
    got, blank = mtl_io.read_jsonl_counted(path)
    assert len(got) == 3 and blank == 2 and got[2].source == f"{path}:5"
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text('{"instruction": "Score it.", "input": "The essay.", "output": "3"}\n')
    assert mtl_io.read_jsonl(alpaca)[0].instruction == "Score it.\n\nThe essay."

    bad = tmp_path / "bad.jsonl"
    for line, message in [('{"instruction": "x", "output": ', "not valid JSON"),
                          ('["x", "1"]', "expected a JSON object"),
                          ('{"instruction": "x"}', 'expected a string "output"'),
                          ('{"instruction": "x", "output": "1", "scores": ["a"]}',
                           '"scores" must be a list of numbers')]:
        bad.write_text('{"instruction": "ok", "output": "1"}\n\n' + line + "\n")
        with pytest.raises(ValueError, match=re.escape(f"{bad}:3: ") + ".*" + message):
            mtl_io.read_jsonl(bad)


def test_mtl_dir_round_trip_and_plain_jsonl_dirs(tmp_path):
    splits = {s: mtl_dataset.examples_from_ell([ell_record()], with_feedback=False)
              for s in asap.SPLITS}
    manifest = mtl_io.mtl_manifest(ELL_TRAITS, ELL_CODECS, {s: 1 for s in splits},
                                   {"skipped": {"bad score": 2}, "sources": ["x.csv"]})
    out = mtl_io.write_mtl_dir(tmp_path / "ds", splits, manifest)
    loaded, back = mtl_io.load_mtl_dir(out)
    assert loaded["format"] == "aes_jax.mtl/1" and loaded["traits"] == list(ELL_TRAITS)
    assert loaded["skipped"] == {"bad score": 2} and loaded["counts"]["dev"] == 1
    assert back["test"][0].output == splits["test"][0].output
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        mtl_io.write_mtl_dir(out, splits, manifest)
    with pytest.raises(ValueError, match="traits .* but .* given"):
        mtl_io.load_mtl_dir(out, traits=["cohesion"])

    plain = tmp_path / "plain"
    mtl_io.write_jsonl(plain / "train.jsonl", [MtlExample("x", "2 3", source="s")])
    with pytest.raises(FileNotFoundError, match="no manifest.json; pass traits and codecs"):
        mtl_io.load_mtl_dir(plain)
    manifest, back = mtl_io.load_mtl_dir(plain, traits=["a", "b"],
                                         codecs=[ScoreCodec(1, 6)] * 2)
    assert list(back) == ["train"] and manifest["counts"] == {"train": 1}
    mtl_io.write_jsonl(plain / "train.jsonl", [MtlExample("x", "2 0")])
    with pytest.raises(ValueError, match="digit 0 of trait 1 is outside"):
        mtl_io.load_mtl_dir(plain, traits=["a", "b"], codecs=[ScoreCodec(1, 6)] * 2)
