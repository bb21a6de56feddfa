"""The TRM-AES dataset: ASAP essays read, split, tokenised and written as ArrayRecord.

:func:`build_dataset` writes one ``{split}.array_record`` per split (one JSON record per
essay, see :func:`make_record`) plus ``manifest.json`` (sources, counts, skips, score
ranges, tokenizer, split rule), written last so its presence marks a complete directory.
Its ``replacement_chars`` and ``decoding`` (lines per codec) count the lines of the essays
written; each ``sources`` entry holds its whole file's counts.
:class:`AsapDataSource` reads a split back with random access for grain.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aes_jax.data import asap_demo
from aes_jax.data.asap import (SCORE_RANGES, SPLITS, TRAIT_NAMES, TRAIT_RANGES, Essay,
                               expand_inputs, normalize, read_asap)
from aes_jax.data.read_report import ReadResult, decoding_report, refuse_existing
from aes_jax.data.splits import assign_splits
from aes_jax.data.tsv_records import AUTO, LineDecoding, check_encoding
from aes_jax.data.wordpiece import assemble_ids, load_tokenizer, prompt_token_ids

__all__ = [
    "MANIFEST_VERSION",
    "BuildOptions",
    "check_options",
    "read_selected",
    "make_record",
    "build_dataset",
    "build_demo_dataset",
    "load_manifest",
    "AsapDataSource",
]

MANIFEST_VERSION = "aes_jax.asap/1"


@dataclasses.dataclass
class BuildOptions:
    """What :func:`build_dataset` (and the length report) reads, and how it splits,
    tokenises and writes."""

    inputs: Sequence[str | os.PathLike]
    output_dir: str | os.PathLike
    prompts: tuple[int, ...] | None = None      # None: every prompt in the inputs
    max_tokens: int = 512
    overlength: str = "truncate"                # or "drop"
    limit_train_essays: int | None = None
    split: tuple[float, float, float] | None = None  # None: file splits, else 0.6/0.2/0.2
    split_file: str | os.PathLike | None = None
    seed: int = 0
    tokenizer_dir: str | os.PathLike | None = None
    prompt_texts: Mapping[int, str] | None = None
    strict: bool = False
    encoding: str = AUTO                        # or a codec name (see tsv_records)
    overwrite: bool = False


def check_options(opts: BuildOptions) -> None:
    """ValueError naming the first option out of range (before anything is read)."""
    if opts.max_tokens < 4:
        raise ValueError(f"max_tokens must be at least 4, got {opts.max_tokens}")
    if opts.overlength not in ("truncate", "drop"):
        raise ValueError(f"overlength must be 'truncate' or 'drop', got {opts.overlength!r}")
    if opts.limit_train_essays is not None and opts.limit_train_essays < 1:
        raise ValueError(f"limit_train_essays must be >= 1, got {opts.limit_train_essays}")
    if opts.split is not None and opts.split_file is not None:
        raise ValueError("give either split fractions or a split file, not both")
    check_encoding(opts.encoding)


def read_selected(opts: BuildOptions) -> tuple[ReadResult, list[Essay], dict[int, int]]:
    """Read the inputs and keep the selected prompts (others counted per prompt)."""
    result = read_asap(expand_inputs(opts.inputs), strict=opts.strict, encoding=opts.encoding)
    keep = set(opts.prompts) if opts.prompts else None
    essays = [e for e in result.essays if keep is None or e.prompt in keep]
    filtered = collections.Counter(e.prompt for e in result.essays
                                   if keep is not None and e.prompt not in keep)
    if not essays:
        wanted = "any prompt" if keep is None else f"prompts {sorted(keep)}"
        raise ValueError(f"no essays of {wanted} in {[f.path for f in result.files]} "
                         f"(skipped: {dict(result.skipped)})")
    return result, essays, dict(sorted(filtered.items()))


def _limit_train(split_of: dict[int, str], limit: int | None, seed: int) -> int:
    """Keep a seeded random ``limit`` of the train essays (in place); returns how many left."""
    train = sorted(i for i, s in split_of.items() if s == "train")
    if limit is None or len(train) <= limit:
        return 0
    rng = np.random.default_rng([int(seed), 0x11A1])
    dropped = [train[k] for k in rng.permutation(len(train))[limit:]]
    for essay_id in dropped:
        del split_of[essay_id]
    return len(dropped)


def _nested_counts(rows: Iterable[tuple[str, int]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for split, prompt in rows:
        inner = out.setdefault(split, {})
        inner[str(prompt)] = inner.get(str(prompt), 0) + 1
    order = {s: k for k, s in enumerate(SPLITS)}
    return {s: dict(sorted(v.items(), key=lambda kv: int(kv[0])))
            for s, v in sorted(out.items(), key=lambda kv: order.get(kv[0], len(order)))}


def make_record(essay: Essay, input_ids: Sequence[int], num_tokens: int) -> dict[str, Any]:
    """The serialised example: raw and normalised scores, both holistic and per trait."""
    return {
        "essay_id": essay.essay_id,
        "prompt": essay.prompt,
        "input_ids": [int(i) for i in input_ids],
        "num_tokens": int(num_tokens),  # before truncation
        "truncated": len(input_ids) < num_tokens,
        "score": essay.score,
        "target": normalize(essay.score, essay.prompt),
        "traits": dict(essay.traits),
        "trait_targets": {t: normalize(v, essay.prompt, t) for t, v in essay.traits.items()},
    }


def _serialize(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode("utf-8")


def _write_array_record(path: Path, payloads: Iterable[bytes]) -> int:
    from array_record.python.array_record_module import ArrayRecordWriter

    tmp = path.with_name(path.name + ".tmp")
    # group_size:1 makes every record its own chunk: random access then decodes one
    # record, not a group of them, which is the access pattern of a shuffled grain source.
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    n = 0
    try:
        for payload in payloads:
            writer.write(payload)
            n += 1
    finally:
        writer.close()
    os.replace(tmp, path)
    return n


def _file_entries(result: ReadResult) -> list[dict[str, Any]]:
    return [dataclasses.asdict(f) for f in result.files]


def build_dataset(opts: BuildOptions) -> dict[str, Any]:
    """Read, split, tokenise and write the dataset; returns the manifest it wrote.

    ``manifest.json`` is written last, so a directory holding one is complete.
    """
    check_options(opts)
    output_dir = Path(opts.output_dir)
    refuse_existing(output_dir, opts.overwrite)  # before the slow part, not after it
    result, essays, filtered = read_selected(opts)
    split_of, split_rule = assign_splits(essays, fractions=opts.split, seed=opts.seed,
                                         split_file=opts.split_file)
    skipped = collections.Counter(result.skipped)
    unlisted = [e for e in essays if e.essay_id not in split_of]
    if unlisted:
        skipped["not in split file"] += len(unlisted)
    essays = [e for e in essays if e.essay_id in split_of]
    if not essays:
        raise ValueError(f"no essay of the selected prompts is listed in {opts.split_file}")

    tok = load_tokenizer(opts.tokenizer_dir)
    prompts = sorted({e.prompt for e in essays})
    prompt_ids = prompt_token_ids(tok, opts.prompt_texts, prompts)
    encoded = tok.encode_many([e.text for e in essays])
    over_rows, records = [], []
    dropped_overlength = []
    for essay, ids in zip(essays, encoded):
        split = split_of[essay.essay_id]
        seq, full = assemble_ids(ids, tok.cls_id, tok.sep_id, prompt_ids.get(essay.prompt),
                                 opts.max_tokens)
        if full > opts.max_tokens:
            over_rows.append((split, essay.prompt))
            if opts.overlength == "drop":
                dropped_overlength.append((split, essay.prompt))
                del split_of[essay.essay_id]
                continue
        records.append((essay, seq, full))
    limited = _limit_train(split_of, opts.limit_train_essays, opts.seed)
    records = [r for r in records if r[0].essay_id in split_of]
    records.sort(key=lambda r: (r[0].prompt, r[0].essay_id))

    # From here on the directory is being rewritten: drop the old completeness marker first.
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "manifest.json").unlink(missing_ok=True)
    counts = {}
    for split in SPLITS:
        rows = [r for r in records if split_of[r[0].essay_id] == split]
        counts[split] = _write_array_record(
            output_dir / f"{split}.array_record",
            (_serialize(make_record(e, seq, full)) for e, seq, full in rows))

    # Decoding of the essays written, not of whole files: --prompt_set, a split file or
    # --overlength=drop leave rows out, and their lost bytes are not this dataset's.
    kept = sum((e.decoding for e, _, _ in records), LineDecoding())
    trait_names = _union_traits(e.traits for e, _, _ in records)
    with_traits = sorted({e.prompt for e, _, _ in records if e.traits})
    manifest = {
        "format": MANIFEST_VERSION,
        "sources": _file_entries(result),
        "prompts": prompts,
        "prompts_filtered_out": {str(p): n for p, n in filtered.items()},
        "prompts_requested_but_absent": sorted(set(opts.prompts or ()) - set(prompts)),
        "splits": {s: counts[s] for s in SPLITS},
        "counts": _nested_counts((split_of[e.essay_id], e.prompt) for e, _, _ in records),
        "skipped": dict(sorted(skipped.items())),
        "skip_examples": result.skip_examples,
        "notes": dict(result.notes),
        "replacement_chars": kept.replacement_chars,
        "decoding": decoding_report(kept, result.files[0].encoding),
        "score_ranges": {str(p): list(SCORE_RANGES[p]) for p in prompts},
        "trait_ranges": {str(p): {t: list(r) for t, r in TRAIT_RANGES[p].items()}
                         for p in with_traits},
        "trait_names": trait_names,
        "tokenizer": {"dir": tok.model_dir, "vocab_size": tok.vocab_size, "cls_id": tok.cls_id,
                      "sep_id": tok.sep_id, "pad_id": tok.pad_id,
                      "layout": "[CLS] prompt [SEP] essay [SEP]" if prompt_ids
                      else "[CLS] essay [SEP]"},
        "prompt_texts": {str(p): opts.prompt_texts[p] for p in prompt_ids} if prompt_ids else {},
        "max_tokens": opts.max_tokens,
        "overlength": {"policy": opts.overlength,
                       "over_limit": _nested_counts(over_rows),
                       "dropped": _nested_counts(dropped_overlength),
                       "truncated": (_nested_counts(over_rows)
                                     if opts.overlength == "truncate" else {})},
        "split": {**split_rule, "limit_train_essays": opts.limit_train_essays,
                  "train_essays_removed_by_limit": limited},
        "record": {"serialization": "json utf-8, one example per ArrayRecord record",
                   "fields": ["essay_id", "prompt", "input_ids", "num_tokens", "truncated",
                              "score", "target", "traits", "trait_targets"]},
    }
    tmp = output_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, output_dir / "manifest.json")
    return manifest


def _union_traits(trait_dicts: Iterable[Mapping[str, int]]) -> list[str]:
    """Every trait name present, once, in the order of the score tables (prompt 1 first)."""
    present = {t for d in trait_dicts for t in d}
    order = [t for p in sorted(TRAIT_NAMES) for t in TRAIT_NAMES[p]]
    return sorted(present, key=order.index)


def build_demo_dataset(out_dir: Path, max_tokens: int) -> Path:
    """The synthetic demo corpus (official ASAP TSV layout) built into ``out_dir``, unless
    a complete dataset is already there."""
    if (out_dir / "manifest.json").is_file():
        return out_dir
    tsv = asap_demo.write_demo_tsv(out_dir.parent / "demo_training_set.tsv")
    build_dataset(BuildOptions(inputs=[tsv], output_dir=out_dir, max_tokens=max_tokens))
    return out_dir


# ----------------------------------------------------------------------------- reading back


def load_manifest(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a complete dataset directory (one of another format raises)."""
    path = Path(dataset_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{dataset_dir}: no manifest.json, so not a (complete) ASAP "
                                "dataset; build one with python -m launch.build_dataset")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != MANIFEST_VERSION:
        raise ValueError(f"{path}: format {manifest.get('format')!r}, expected "
                         f"{MANIFEST_VERSION!r}; rebuild the dataset")
    return manifest


class AsapDataSource:
    """Random-access grain source over one split of a built dataset.

    ``source[i]`` is a dict of numpy values: ``essay_id`` (int64), ``prompt`` (int32),
    ``input_ids`` (int32, variable length), ``score`` (int32, raw), ``target`` (float32 in
    [0, 1]), and fixed-size trait arrays over the manifest's ``trait_names`` so batches
    mixing prompts stack: ``trait_scores`` (int32, -1 where the prompt lacks the trait),
    ``trait_targets`` (float32, 0 there) and ``trait_mask`` (bool). ``record(i)`` gives
    the stored JSON dict (traits by name).
    """

    def __init__(self, dataset_dir: str | os.PathLike, split: str):
        import grain

        self.dataset_dir = Path(dataset_dir)
        self.manifest = load_manifest(self.dataset_dir)
        if split not in self.manifest["splits"]:
            raise ValueError(f"{dataset_dir}: no split {split!r}; it has "
                             f"{list(self.manifest['splits'])}")
        self.split = split
        path = self.dataset_dir / f"{split}.array_record"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (the manifest lists split {split!r})")
        self._source = grain.sources.ArrayRecordDataSource([str(path)])
        expected = self.manifest["splits"][split]
        if len(self._source) != expected:
            raise ValueError(f"{path}: {len(self._source)} records but the manifest says "
                             f"{expected}; the dataset is damaged, rebuild it")
        self.trait_names: list[str] = list(self.manifest["trait_names"])
        self._trait_index = {t: k for k, t in enumerate(self.trait_names)}

    def __len__(self) -> int:
        return len(self._source)

    def record(self, index: int) -> dict[str, Any]:
        return json.loads(self._source[index])

    def _to_arrays(self, rec: Mapping[str, Any]) -> dict[str, Any]:
        n = len(self.trait_names)
        scores = np.full(n, -1, dtype=np.int32)
        targets = np.zeros(n, dtype=np.float32)
        for name, value in rec["traits"].items():
            k = self._trait_index[name]
            scores[k] = value
            targets[k] = rec["trait_targets"][name]
        return {
            "essay_id": np.int64(rec["essay_id"]),
            "prompt": np.int32(rec["prompt"]),
            "input_ids": np.asarray(rec["input_ids"], dtype=np.int32),
            "score": np.int32(rec["score"]),
            "target": np.float32(rec["target"]),
            "trait_scores": scores,
            "trait_targets": targets,
            "trait_mask": scores >= 0,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self._to_arrays(self.record(int(index)))

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        return [self._to_arrays(json.loads(b))
                for b in self._source.__getitems__([int(i) for i in indices])]

    def __repr__(self) -> str:
        return (f"AsapDataSource({str(self.dataset_dir)!r}, {self.split!r}: {len(self)} essays, "
                f"prompts {self.manifest['prompts']})")
