"""An ``ellipse`` or ``asap_traits`` TFDS dataset as LLaMA-AES's data: instruction examples.

:func:`load_tfds_mtl` reads a built dataset with ``tfds.data_source`` and returns what
:func:`aes_jax.data.mtl_io.load_mtl_dir` returns for the dir ``launch.build_dataset
--format=mtl`` writes from the same files with the same split: ``(manifest, {split:
[MtlExample]})``. The essays become examples through the same functions
(:func:`aes_jax.data.mtl_dataset.examples_from_ell` / ``examples_from_asap``), in the same
order (both sort a split by text_id, or by prompt then essay_id), so the same seed gives
the same batches. Only ``MtlExample.source`` differs: ``tfds:NAME/VERSION/SPLIT:INDEX``
instead of the file's ``path:line`` (a TFDS record keeps no line).

The matching ``build_mtl`` call: ``ellipse/test_fold_k`` = ``test_fold=k`` (dev_fraction
0.1, seed 0); ``asap_traits/prompt_k`` = ``prompt_set="k"`` (the files' splits, else
60/20/20 seed 0); ``feedback`` and ``prompt_texts`` are passed here as there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aes_jax.data import asap, ell, mtl_dataset
from aes_jax.data.mtl_io import MtlExample, check_example, mtl_manifest
from aes_jax.data.score_codec import ell_traits_and_codecs

__all__ = ["load_tfds_mtl", "read_prompt_texts", "FEEDBACK_MODES"]

FEEDBACK_MODES = ("none", "rubric")


def read_prompt_texts(path: str | os.PathLike | None) -> dict[int, str] | None:
    """A JSON file ``{prompt number: text}`` (``launch.build_dataset --prompt_texts``'s)."""
    if not path:
        return None
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    try:
        return {int(k): str(v) for k, v in raw.items()}
    except (AttributeError, ValueError):
        raise ValueError(f"{path}: expected a JSON object {{prompt number: text}}") from None


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _records(name: str, data_dir: str | None, split: str, have) -> list:
    """The split's records in their stored order; none for a split TFDS left out (it
    refuses empty splits, an mtl dir writes them as empty files)."""
    import tensorflow_datasets as tfds

    if split not in have:
        return []
    source = tfds.data_source(name, data_dir=data_dir, split=split)
    return [source[i] for i in range(len(source))]


def _ell_essays(records, where: str) -> list[ell.EllEssay]:
    return [ell.EllEssay(text_id=_text(r["text_id"]), text=_text(r["essay"]),
                         scores={t: float(v) for t, v in zip(ell.ELL_TRAITS, r["scores"])},
                         source=where, line=i, fold=int(r["fold"]))
            for i, r in enumerate(records)]


def _asap_essays(records, axis: list[str], where: str, split: str) -> list[asap.Essay]:
    out = []
    for i, r in enumerate(records):
        prompt = int(r["prompt"])
        traits = {t: int(r["trait_scores"][axis.index(t)])
                  for t in asap.TRAIT_NAMES.get(prompt, ()) if r["trait_mask"][axis.index(t)]}
        out.append(asap.Essay(essay_id=int(r["essay_id"]), prompt=prompt,
                              text=_text(r["essay"]), score=int(r["score"]), traits=traits,
                              source=where, line=i, split=split))
    return out


def load_tfds_mtl(name: str, data_dir: str | os.PathLike | None = None, *,
                  feedback: str = "none",
                  prompt_texts: Mapping[int, str] | None = None
                  ) -> tuple[dict[str, Any], dict[str, list[MtlExample]]]:
    """(manifest, {split: examples}) of a built ``ellipse`` / ``asap_traits`` dataset
    ``name`` (e.g. ``ellipse/test_fold_0``, ``asap_traits/prompt_3``) in ``data_dir``
    ("" / None = TFDS's default dir); every example checked against the codecs."""
    import tensorflow_datasets as tfds

    import aes_jax.datasets  # noqa: F401  (registers the builders)

    if feedback not in FEEDBACK_MODES:
        raise ValueError(f"feedback must be one of {FEEDBACK_MODES}, got {feedback!r}")
    data_dir = os.fspath(data_dir) if data_dir else None
    builder = tfds.builder(name, data_dir=data_dir)
    info = builder.info
    if not info.splits:
        raise FileNotFoundError(f"{name}: not built in {data_dir or 'the default TFDS dir'}; "
                                "build it with launch.build_dataset --format=tfds")
    meta = info.metadata or {}
    with_feedback = feedback == "rubric"
    splits: dict[str, list[MtlExample]] = {}
    if info.name == "ellipse":
        traits, codecs = ell_traits_and_codecs()
        for split in asap.SPLITS:
            where = f"tfds:{info.full_name}/{split}"
            essays = _ell_essays(_records(name, data_dir, split, info.splits), where)
            splits[split] = mtl_dataset.examples_from_ell(essays, with_feedback=with_feedback)
        source_info: dict[str, Any] = {"dataset": "ellipse", "layouts": [meta.get("layout")]}
    elif info.name == "asap_traits":
        prompts = list(meta["prompts"])
        traits, codecs = mtl_dataset.asap_dataset_traits(
            prompts, how=f"with a config asap_traits/prompt_k (this is {info.full_name})")
        axis = list(meta["trait_axis"])
        for split in asap.SPLITS:
            where = f"tfds:{info.full_name}/{split}"
            records = _records(name, data_dir, split, info.splits)
            essays = _asap_essays(records, axis, where, split)
            splits[split] = mtl_dataset.examples_from_asap(
                essays, with_feedback=with_feedback, prompt_texts=prompt_texts)
        source_info = {"dataset": "asap++", "prompts": prompts}
    else:
        raise ValueError(f"{name}: LLaMA-AES reads the TFDS datasets ellipse and asap_traits "
                         f"(trait scores), not {info.name}")
    for split, examples in splits.items():
        for example in examples:
            check_example(example, codecs, traits)
    read = dict(meta.get("read", {}))
    source_info.update({
        "tfds": {"name": name, "full_name": info.full_name, "data_dir": data_dir or ""},
        "sources": [f"tfds:{info.full_name}"],
        "skipped": dict(read.get("skipped", {})), "read": read,
        "split": dict(meta.get("split", {})),
        "feedback": mtl_dataset.feedback_info(with_feedback),
    })
    if prompt_texts:
        source_info["prompt_texts"] = {str(p): t for p, t in sorted(prompt_texts.items())}
    manifest = mtl_manifest(traits, codecs, {s: len(v) for s, v in splits.items()},
                            source_info)
    return manifest, splits
