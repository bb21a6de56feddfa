"""Hugging Face ``datasets`` as LLaMA-AES (mtl) inputs, and our mtl datasets exported to it.

Accepted, all local and offline (``HF_DATASETS_OFFLINE=1`` is set before ``datasets`` is
first imported; a hub id is refused, never fetched):

* a ``datasets.Dataset`` or ``DatasetDict`` object;
* a ``save_to_disk`` directory (``dataset_dict.json``, or one split's ``state.json``);
* a ``.parquet`` / ``.csv`` / ``.json`` / ``.jsonl`` file, opened with
  ``datasets.load_dataset(<format>, data_files=...)``; one file per split with
  :func:`parse_split_files` (``train=a.parquet,dev=b.csv``).

Columns are mapped onto :class:`~aes_jax.data.mtl_io.MtlExample` fields through
:data:`COLUMNS` (the first alias a dataset has wins; other columns are ignored):

=============  ==========================================  =====================
field          column names accepted, in order             required
=============  ==========================================  =====================
instruction    instruction, prompt                          yes (or ``input``)
input          input (Alpaca: appended to the instruction)  no
output         output, response, answer, completion         yes (scoring: no)
essay_id       essay_id, id, text_id                        no
traits         traits                                       no
scores         scores                                       no
source         source                                       no (default: the row)
=============  ==========================================  =====================

``traits`` / ``scores`` are list columns; in CSV (no lists) a cell may hold a JSON list
or names/numbers separated by commas or spaces, brackets optional. CSV cells are read
as text (``essay_id`` "0012" stays "0012"), empty cells as "". A row is checked as a
JSONL line is (``mtl_io.example_from_dict``): a bad row raises naming ``FILE[split]
row N`` (N counts from 0, as ``ds[N]``); an all-empty row is skipped and counted, as the
JSONL reader counts blank lines. ``datasets`` is imported only when one of these is read.

:func:`export_trm_dir` writes a TRM-AES ArrayRecord dataset (``--format=trm``) the same
way: one row per stored record, its fields as columns (:data:`TRM_COLUMNS`). Those records
hold token ids, not the essay text: ``input_ids`` is ``[CLS] prompt [SEP] essay [SEP]``
as tokenised (and truncated) by the build, under the manifest's ``tokenizer``. ``traits``
/ ``trait_targets`` are structs over the manifest's ``trait_names``, None where the
essay's prompt lacks the trait (:func:`trm_record` drops those, giving the stored record).
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aes_jax.data import asap
from aes_jax.data.mtl_io import (MtlExample, check_example, example_from_dict, load_mtl_dir,
                                 mtl_manifest, read_manifest)
from aes_jax.data.read_report import refuse_existing
from aes_jax.data.score_codec import ScoreCodec, asap_traits_and_codecs, ell_traits_and_codecs

__all__ = ["COLUMNS", "EXPORT_FILES", "FILE_FORMATS", "is_hf_input", "parse_split_files", "open_hf",
           "column_map", "examples_from_dataset", "read_hf_examples", "load_hf_mtl",
           "to_dataset_dict", "export_mtl_dir", "TRM_COLUMNS", "trm_record",
           "export_trm_dir"]

COLUMNS: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt"),
    "input": ("input",),
    "output": ("output", "response", "answer", "completion"),
    "essay_id": ("essay_id", "id", "text_id"),
    "traits": ("traits",),
    "scores": ("scores",),
    "source": ("source",),
}
# What an export dir holds; either there means one was written.
EXPORT_FILES = ("dataset_dict.json", "manifest.json")
FILE_FORMATS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}
_LIST_FIELDS = ("traits", "scores")
# "owner/name" or "name" with no file suffix: what a hub id looks like.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _datasets():
    """``datasets``, imported on first use (importing aes_jax stays fast) and offline."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets
    return datasets


def _is_saved_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_dict.json").is_file()
                              or (path / "state.json").is_file())


def is_hf_input(path: str | os.PathLike) -> bool:
    """A ``save_to_disk`` directory or a file with a suffix of :data:`FILE_FORMATS`."""
    path = Path(path)
    return _is_saved_dir(path) or (path.is_file() and path.suffix.lower() in FILE_FORMATS)


def parse_split_files(spec: str) -> dict[str, str]:
    """``"train=a.parquet,dev=b.csv"`` -> ``{"train": "a.parquet", "dev": "b.csv"}``."""
    out: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        split, sep, file = item.partition("=")
        if not sep or not split.strip() or not file.strip() or split.strip() in out:
            raise ValueError(f"data files {spec!r}: expected split=FILE,split=FILE,... with "
                             f"each split once, got {item!r}")
        out[split.strip()] = file.strip()
    if not out:
        raise ValueError(f"data files {spec!r}: no split=FILE given")
    return out


def _local_path(source: str | os.PathLike) -> Path:
    path = Path(source)
    if path.exists():
        return path
    text = str(source)
    if "://" in text or (_HUB_ID.match(text) and not Path(text).suffix):
        raise ValueError(f"{text}: not a local file or directory; hub dataset ids and URLs "
                         "are not read (aes_jax reads local files only, offline)")
    raise FileNotFoundError(f"{text}: no such file or directory")


def _load_file(path: Path, split: str, cache_dir: str | None):
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: expected a save_to_disk directory or a "
                         f"{'/'.join(FILE_FORMATS)} file")
    datasets = _datasets()
    kwargs: dict[str, Any] = {}
    if fmt == "csv":
        # Every cell as text, empty ones as "": ids keep leading zeros, and an empty
        # output (no gold) is not turned into NaN.
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        kwargs = {"features": datasets.Features({c: datasets.Value("string") for c in header}),
                  "keep_default_na": False}
    return datasets.load_dataset(fmt, data_files={split: str(path)}, split=split,
                                 cache_dir=cache_dir, **kwargs)


def open_hf(source: Any, *, cache_dir: str | None = None) -> tuple[dict[str, Any], str]:
    """({split: Dataset}, a name for messages) of any accepted input (module docstring).

    ``source``: a Dataset, a DatasetDict, a path, or a ``{split: file}`` mapping. A single
    Dataset or file is one split, named by the Dataset's ``split`` or ``"train"``."""
    datasets = _datasets()
    if isinstance(source, datasets.DatasetDict):
        return dict(source), "DatasetDict"
    if isinstance(source, datasets.Dataset):
        return {str(source.split or "train"): source}, "Dataset"
    if isinstance(source, Mapping):
        files = {s: _local_path(f) for s, f in source.items()}
        return ({s: _load_file(p, s, cache_dir) for s, p in files.items()},
                ",".join(f"{s}={p}" for s, p in files.items()))
    path = _local_path(source)
    if _is_saved_dir(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.Dataset):
            return {str(loaded.split or "train"): loaded}, str(path)
        return dict(loaded), str(path)
    if path.is_dir():
        raise ValueError(f"{path}: a directory without dataset_dict.json or state.json is "
                         "not a save_to_disk dataset")
    return {"train": _load_file(path, "train", cache_dir)}, str(path)


def column_map(columns: Sequence[str], name: str, *, require_output: bool = True
               ) -> dict[str, str]:
    """{field: column} through :data:`COLUMNS`; a ValueError names ``name``, the columns it
    has and the ones expected when a required field has none."""
    have = list(columns)
    mapping = {field: next(c for c in aliases if c in have)
               for field, aliases in COLUMNS.items() if any(c in have for c in aliases)}
    missing = []
    if "instruction" not in mapping and "input" not in mapping:
        missing.append("instruction (one of " + ", ".join(COLUMNS["instruction"] + ("input",))
                       + ")")
    if require_output and "output" not in mapping:
        missing.append("output (one of " + ", ".join(COLUMNS["output"]) + ")")
    if missing:
        raise ValueError(f"{name}: has columns {have}; expected {' and '.join(missing)}")
    return mapping


def _list_cell(value: Any) -> Any:
    """A traits/scores cell as a list; CSV text is a JSON list or separated items."""
    if value is None:
        return []
    if not isinstance(value, str):
        return list(value) if isinstance(value, (list, tuple)) else value
    text = value.strip()
    if not text:
        return []
    try:
        parsed = json.loads(text)
        if isinstance(parsed, list):
            return parsed
    except json.JSONDecodeError:
        pass
    items = [x.strip().strip("'\"") for x in re.split(r"[,\s]+", text.strip("[]")) if x.strip()]
    numbers = []
    for item in items:
        try:
            numbers.append(ast.literal_eval(item) if item[0] in "+-.0123456789" else item)
        except (ValueError, SyntaxError):
            numbers.append(item)
    return numbers


def _row_dict(row: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any] | None:
    """The row as a JSONL object (None when every mapped cell is empty: a blank row)."""
    values = {field: row[column] for field, column in mapping.items()}
    if all(v is None or v == "" or v == [] for v in values.values()):
        return None
    obj: dict[str, Any] = {}
    for field, value in values.items():
        if field in _LIST_FIELDS:
            obj[field] = _list_cell(value)
        elif value is not None and value != "":
            obj[field] = value
    if "instruction" not in obj and isinstance(obj.get("input"), str):
        obj["instruction"] = obj.pop("input")  # an input column alone is the instruction
    obj.setdefault("output", "")
    return obj


def examples_from_dataset(ds: Any, name: str, *, require_output: bool = True
                          ) -> tuple[list[MtlExample], int]:
    """(examples, blank rows skipped) of one Dataset; a bad row raises naming ``name row N``."""
    mapping = column_map(ds.column_names, name, require_output=require_output)
    examples, blank = [], 0
    for i, row in enumerate(ds):
        obj = _row_dict(row, mapping)
        if obj is None:
            blank += 1
            continue
        examples.append(example_from_dict(obj, f"{name} row {i}"))
    return examples, blank


def read_hf_examples(source: Any, *, require_output: bool = True, cache_dir: str | None = None
                     ) -> tuple[dict[str, list[MtlExample]], dict[str, int], str]:
    """({split: examples}, {split: blank rows}, name) of any accepted input, unchecked."""
    splits, name = open_hf(source, cache_dir=cache_dir)
    examples, blanks = {}, {}
    for split, ds in splits.items():
        examples[split], blanks[split] = examples_from_dataset(
            ds, f"{name}[{split}]", require_output=require_output)
    return examples, blanks, name


def _known_codecs(traits: Sequence[str], name: str) -> list[ScoreCodec]:
    """The codecs of a known trait set (ELLIPSE, or ASAP++ prompts sharing one range)."""
    tables = {ell_traits_and_codecs()} | {asap_traits_and_codecs(p) for p in asap.TRAIT_NAMES}
    found = [codecs for t, codecs in tables if list(t) == list(traits)]
    if len(found) != 1:
        why = "no known trait set" if not found else "more than one score range"
        raise ValueError(f"{name}: traits {list(traits)} match {why} (ELLIPSE, ASAP++); put "
                         "the manifest.json of launch.build_dataset --format=mtl beside it")
    return list(found[0])


def _manifest_beside(source: Any) -> Path | None:
    if isinstance(source, Mapping):
        source = next(iter(source.values()))
    if not isinstance(source, (str, os.PathLike)):
        return None
    path = Path(source)
    candidate = (path if path.is_dir() else path.parent) / "manifest.json"
    return candidate if candidate.is_file() else None


def load_hf_mtl(source: Any, *, cache_dir: str | None = None
                ) -> tuple[dict[str, Any], dict[str, list[MtlExample]]]:
    """(manifest, {split: examples}) like ``mtl_io.load_mtl_dir``, every example checked.

    Traits and codecs: from a ``manifest.json`` in the ``save_to_disk`` directory (or beside
    the first data file) when there is one; else inferred from the examples' ``traits``
    column, which must name a known trait set (ELLIPSE, or ASAP++ prompts of one range)."""
    splits, blanks, name = read_hf_examples(source, cache_dir=cache_dir)
    manifest_path = _manifest_beside(source)
    if manifest_path is not None:
        manifest, traits, codecs = read_manifest(manifest_path)
        manifest = dict(manifest)
    else:
        named = {ex.traits for v in splits.values() for ex in v if ex.traits}
        if len(named) != 1:
            raise ValueError(f"{name}: no manifest.json beside it and {len(named)} different "
                             "trait lists in its traits column; expected one")
        traits = list(named.pop())
        codecs = _known_codecs(traits, name)
        manifest = mtl_manifest(traits, codecs, {}, {
            "note": "no manifest.json; codecs inferred from the traits column"})
    for examples in splits.values():
        for example in examples:
            check_example(example, codecs, traits)
    manifest.update(counts={s: len(v) for s, v in splits.items()}, blank_lines=blanks,
                    hf_source=name)
    return manifest, splits


def _features():
    d = _datasets()
    return d.Features({"instruction": d.Value("string"), "output": d.Value("string"),
                       "essay_id": d.Value("string"),
                       "traits": d.Sequence(d.Value("string")),
                       "scores": d.Sequence(d.Value("float64")),
                       "source": d.Value("string")})


def to_dataset_dict(splits: Mapping[str, Sequence[MtlExample]]) -> Any:
    """{split: examples} -> a ``DatasetDict`` with the columns of :data:`COLUMNS`' names."""
    d = _datasets()
    return d.DatasetDict({
        split: d.Dataset.from_list(
            [{"instruction": ex.instruction, "output": ex.output, "essay_id": ex.essay_id,
              "traits": list(ex.traits), "scores": [float(s) for s in ex.scores],
              "source": ex.source} for ex in examples], features=_features())
        for split, examples in splits.items()})


def export_mtl_dir(mtl_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                   overwrite: bool = False) -> Path:
    """An mtl dataset dir -> ``DatasetDict.save_to_disk(out_dir)`` + its ``manifest.json``
    (so ``load_hf_mtl(out_dir)`` gets the same traits and codecs)."""
    out_dir = Path(out_dir)
    refuse_existing(out_dir, overwrite, names=EXPORT_FILES)
    manifest, splits = load_mtl_dir(mtl_dir)
    manifest.pop("blank_lines", None)
    to_dataset_dict(splits).save_to_disk(str(out_dir))
    manifest["hf_export"] = {"from": str(mtl_dir), "by": "DatasetDict.save_to_disk"}
    (out_dir / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out_dir


# The columns of a TRM export, in order: the stored record's fields (asap_records).
TRM_COLUMNS = ("essay_id", "prompt", "input_ids", "num_tokens", "truncated", "score",
               "target", "traits", "trait_targets")


def _trm_features(trait_names: Sequence[str]):
    d = _datasets()
    return d.Features({
        "essay_id": d.Value("int64"), "prompt": d.Value("int32"),
        "input_ids": d.Sequence(d.Value("int32")), "num_tokens": d.Value("int32"),
        "truncated": d.Value("bool"), "score": d.Value("int32"),
        "target": d.Value("float64"),
        "traits": {t: d.Value("int32") for t in trait_names},
        "trait_targets": {t: d.Value("float64") for t in trait_names}})


def trm_record(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row of a TRM export -> the stored record (``AsapDataSource.record``): the traits
    the prompt lacks (None in the struct columns) left out."""
    rec = {k: row[k] for k in TRM_COLUMNS}
    for k in ("traits", "trait_targets"):
        rec[k] = {t: v for t, v in (row[k] or {}).items() if v is not None}
    return rec


def export_trm_dir(dataset_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                   overwrite: bool = False) -> Path:
    """A TRM-AES dataset dir (``{split}.array_record`` + manifest) ->
    ``DatasetDict.save_to_disk(out_dir)`` (one split per manifest split, one row per record,
    :data:`TRM_COLUMNS`) + its ``manifest.json``. Token ids only: the records keep no text."""
    from aes_jax.data.asap_records import AsapDataSource, load_manifest

    out_dir = Path(out_dir)
    refuse_existing(out_dir, overwrite, names=EXPORT_FILES)
    manifest = load_manifest(dataset_dir)
    d = _datasets()
    features = _trm_features(manifest["trait_names"])
    splits = {}
    for split in manifest["splits"]:
        source = AsapDataSource(dataset_dir, split)
        rows = [source.record(i) for i in range(len(source))]
        splits[split] = d.Dataset.from_dict(
            {c: [r[c] for r in rows] for c in TRM_COLUMNS}, features=features)
    d.DatasetDict(splits).save_to_disk(str(out_dir))
    manifest["hf_export"] = {"from": str(dataset_dir), "by": "DatasetDict.save_to_disk",
                             "columns": list(TRM_COLUMNS),
                             "text": "not stored: input_ids are [CLS] prompt [SEP] essay "
                                     "[SEP] under the manifest's tokenizer",
                             "missing_traits": "None in the traits / trait_targets structs"}
    (out_dir / "manifest.json").write_text(
        json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out_dir
