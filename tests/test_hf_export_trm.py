"""``--export_hf`` of a TRM-AES ArrayRecord dataset: the rows of the ``save_to_disk``
export are the stored records (token ids; the records keep no text), split by split."""

import json
import os

import pytest

from aes_jax.data import hf_inputs
from aes_jax.data.asap_records import AsapDataSource, BuildOptions, build_dataset
from tests.test_asap import write_traits_splits
from tests.test_tfds_datasets import write_prompt_1

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def test_trm_export_round_trips_the_records(tmp_path):
    write_traits_splits(tmp_path / "in")
    write_prompt_1(tmp_path / "in")  # prompts 1 and 3: different traits, so gaps
    manifest = build_dataset(BuildOptions(inputs=[str(tmp_path / "in")],
                                          output_dir=tmp_path / "ds", max_tokens=20))
    hf_inputs.export_trm_dir(tmp_path / "ds", tmp_path / "hf")
    import datasets

    loaded = datasets.load_from_disk(str(tmp_path / "hf"))
    assert list(loaded) == ["train", "dev", "test"]
    for split, ds in loaded.items():
        source = AsapDataSource(tmp_path / "ds", split)
        assert len(ds) == len(source) == manifest["splits"][split]
        assert ds.column_names == list(hf_inputs.TRM_COLUMNS)
        assert [hf_inputs.trm_record(row) for row in ds] == [
            source.record(i) for i in range(len(source))]
    row = loaded["train"][0]
    assert row["prompt"] == 1 and row["traits"]["Narrativity"] is None  # prompt 3's trait
    assert sum(r["truncated"] for r in loaded["train"]) > 0
    saved = json.loads((tmp_path / "hf" / "manifest.json").read_text())
    assert saved["splits"] == manifest["splits"] and "not stored" in saved["hf_export"]["text"]
    with pytest.raises(FileExistsError):
        hf_inputs.export_trm_dir(tmp_path / "ds", tmp_path / "hf")
