"""Instruction (mtl) datasets for LLaMA-AES: ELLIPSE or ASAP++ essays -> {train,dev,test}.jsonl
+ manifest.json. `launch.build_dataset --format=mtl` and the task's demo default call
`build_mtl`; `examples_from_asap` / `examples_from_ell` turn read essays into examples."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from aes_jax.data import asap, ell, mtl_demo
from aes_jax.data.answer_format import build_instruction, format_output, rubric_feedback
from aes_jax.data.mtl_io import MTL_FILES, MtlExample, mtl_manifest, write_mtl_dir
from aes_jax.data.read_report import decoding_report, refuse_existing
from aes_jax.data.score_codec import ScoreCodec, asap_traits_and_codecs, ell_traits_and_codecs
from aes_jax.data.splits import assign_splits, parse_split_fractions
from aes_jax.data.tsv_records import AUTO, LineDecoding

__all__ = ["build_mtl", "build_demo_dataset", "examples_from_asap", "examples_from_ell",
           "asap_dataset_traits", "feedback_info"]

log = logging.getLogger(__name__)


def build_mtl(inputs: str | None, output_dir: str | os.PathLike, *, feedback: str = "none",
              demo: bool = False, test_fold: int = 0, dev_fraction: float = 0.1,
              seed: int = 0, prompt_set: str | None = None, split: str | None = None,
              split_file: str | None = None, prompt_texts: dict[int, str] | None = None,
              strict: bool = False, encoding: str = AUTO,
              overwrite: bool = False, demo_essays: int = 240) -> dict:
    """Write an mtl dataset (``{train,dev,test}.jsonl`` + ``manifest.json``); returns the
    manifest. The flag-free core of ``--format=mtl``, for code that builds data itself.

    ``inputs``: an ELLIPSE fold folder or csv (``test_fold``/``dev_fraction`` split it), or
    ASAP++ trait TSVs (``prompt_set``/``split``/``split_file``/``prompt_texts`` apply);
    ``demo=True`` instead writes the synthetic ELLIPSE-layout corpus into
    ``output_dir/source/train.csv`` and builds from it. ``encoding``: ``"auto"`` (UTF-8,
    cp1252 for the bytes of a line that are not UTF-8) or a codec name; the manifest's ``decoding``
    counts the lines of the essays kept, its ``sources`` whole files.
    """
    if feedback not in ("none", "rubric"):
        raise ValueError(f"feedback must be 'none' or 'rubric', got {feedback!r}")
    if demo == bool(inputs):
        raise ValueError("give exactly one of inputs and demo=True")
    output_dir = Path(output_dir)
    refuse_existing(output_dir, overwrite, names=MTL_FILES)  # before any work, not after it
    if demo:
        inputs = str(mtl_demo.write_demo_ell_csv(output_dir / "source" / "train.csv",
                                                 n=demo_essays))
    with_feedback = feedback == "rubric"
    if "," not in inputs and ell.is_ell_input(inputs):
        traits, codecs, splits, info = _ell_examples(
            inputs, with_feedback, test_fold=test_fold, dev_fraction=dev_fraction, seed=seed,
            strict=strict, encoding=encoding)
    else:
        traits, codecs, splits, info = _asap_examples(
            inputs, with_feedback, prompt_set=prompt_set, split=split, split_file=split_file,
            prompt_texts=prompt_texts, seed=seed, strict=strict, encoding=encoding)
    info["feedback"] = feedback_info(with_feedback)
    if demo:
        info["synthetic_demo"] = ("SYNTHETIC essays and scores in the ELLIPSE train.csv "
                                  "layout (mtl_demo.demo_ell_rows), not real data")
    counts = {s: len(v) for s, v in splits.items()}
    manifest = mtl_manifest(traits, codecs, counts, info)
    write_mtl_dir(output_dir, splits, manifest, overwrite=overwrite)
    return manifest


def _ell_examples(source: str, with_feedback: bool, *, test_fold: int, dev_fraction: float,
                  seed: int, strict: bool, encoding: str):
    path = Path(source)
    if path.is_dir():
        result = ell.read_ell_dir(path, strict=strict, encoding=encoding)
        essays, folds = result.essays, "fold files"
    else:
        result = ell.read_ell(path, strict=strict, encoding=encoding)
        essays, folds = ell.assign_folds(result.essays, 5, seed), "5 seeded folds"
    if not essays:
        raise ValueError(f"no essays read from {source} (skipped: {dict(result.skipped)})")
    by_split = ell.split_ell(essays, test_fold, dev_fraction, seed)
    splits = {s: examples_from_ell(v, with_feedback=with_feedback)
              for s, v in by_split.items()}
    traits, codecs = ell_traits_and_codecs()
    info = {"dataset": "ellipse", "layouts": result.layouts,
            "sources": [dataclasses.asdict(f) for f in result.files],
            "decoding": _kept_decoding(essays, result.files[0].encoding),
            "skipped": dict(sorted(result.skipped.items())),
            "skip_examples": result.skip_examples,
            "split": {"rule": f"test = fold {test_fold}, dev = {dev_fraction:g} of the other "
                              f"folds ({folds})",
                      "folds": folds, "test_fold": test_fold, "dev_fraction": dev_fraction,
                      "seed": seed}}
    return traits, codecs, splits, info


def _asap_examples(source: str, with_feedback: bool, *, prompt_set: str | None,
                   split: str | None, split_file: str | None,
                   prompt_texts: dict[int, str] | None, seed: int, strict: bool,
                   encoding: str):
    result = asap.read_asap(asap.expand_inputs(source), strict=strict, encoding=encoding)
    keep = asap.parse_prompt_set(prompt_set)
    essays = [e for e in result.essays if keep is None or e.prompt in keep]
    if not essays:
        raise ValueError(f"no essays of {'any prompt' if keep is None else sorted(keep)} in "
                         f"{source} (skipped: {dict(result.skipped)})")
    prompt_list = sorted({e.prompt for e in essays})
    traits, codecs = asap_dataset_traits(prompt_list)
    split_of, rule = assign_splits(
        essays, fractions=parse_split_fractions(split) if split else None, seed=seed,
        split_file=split_file)
    skipped = dict(result.skipped)
    unlisted = sum(e.essay_id not in split_of for e in essays)
    if unlisted:
        skipped["not in split file"] = unlisted
    splits = {}
    for name in asap.SPLITS:
        group = sorted((e for e in essays if split_of.get(e.essay_id) == name),
                       key=lambda e: (e.prompt, e.essay_id))
        splits[name] = examples_from_asap(group, with_feedback=with_feedback,
                                          prompt_texts=prompt_texts)
    kept = [e for e in essays if e.essay_id in split_of]
    info = {"dataset": "asap++", "prompts": prompt_list,
            "sources": [dataclasses.asdict(f) for f in result.files],
            "decoding": _kept_decoding(kept, result.files[0].encoding),
            "skipped": dict(sorted(skipped.items())), "skip_examples": result.skip_examples,
            "notes": dict(result.notes), "split": rule}
    return traits, codecs, splits, info


def asap_dataset_traits(prompts: Sequence[int], how: str = "with --prompt_set (1,2 or 3,4 "
                        "or 5,6)") -> tuple[tuple[str, ...], tuple[ScoreCodec, ...]]:
    """The one (traits, codecs) of an mtl dataset of ASAP++ ``prompts`` (sorted); prompts
    that differ in traits or score ranges are an error (``how`` says how to pick others)."""
    scales = {p: asap_traits_and_codecs(p) for p in prompts if p in asap.TRAIT_NAMES}
    if len(set(scales.values())) > 1:
        raise ValueError(f"prompts {list(prompts)} differ in ASAP++ traits or score ranges, "
                         "but an mtl dataset has one trait list and one codec per trait; "
                         f"pick prompts that share them {how}")
    return next(iter(scales.values())) if scales else asap_traits_and_codecs(prompts[0])


def feedback_info(with_feedback: bool) -> dict:
    """The manifest's ``feedback`` entry."""
    return ({"mode": "rubric", "note": "SYNTHETIC template feedback made from the scores by "
             "answer_format.rubric_feedback; the corpus has none"}
            if with_feedback else {"mode": "none"})


def _kept_decoding(essays: Sequence[asap.Essay | ell.EllEssay], encoding: str) -> dict:
    return decoding_report(sum((e.decoding for e in essays), LineDecoding()), encoding)


def build_demo_dataset(out_dir: Path, num_essays: int) -> Path:
    """The synthetic ELLIPSE-layout demo corpus (rubric feedback) as an mtl dataset in
    ``out_dir``, unless one is already there."""
    if not (out_dir / "manifest.json").is_file():
        build_mtl(None, out_dir, feedback="rubric", demo=True, overwrite=True,
                  demo_essays=num_essays)
        log.info("built the synthetic demo dataset in %s", out_dir)
    return out_dir


# ----------------------------------------------------------------------------- examples


def _example(essay_text: str, essay_id: str, source: str, traits: Sequence[str],
             codecs: Sequence[ScoreCodec], scores: Sequence[float], with_feedback: bool,
             prompt_text: str | None) -> MtlExample:
    try:
        digits = [c.encode(s) for c, s in zip(codecs, scores)]
    except ValueError as e:
        raise ValueError(f"{source}: essay {essay_id}: {e}") from None
    feedback = rubric_feedback(traits, digits, codecs) if with_feedback else None
    return MtlExample(
        instruction=build_instruction(essay_text, traits, codecs, prompt_text=prompt_text,
                                      with_feedback=with_feedback),
        output=format_output(digits, feedback), essay_id=essay_id, traits=tuple(traits),
        scores=tuple(float(s) for s in scores), source=source)


def examples_from_asap(essays: Sequence[asap.Essay], *, with_feedback: bool,
                       prompt_texts: Mapping[int, str] | None = None) -> list[MtlExample]:
    """One example per essay over its prompt's ASAP++ traits (the holistic score unused).

    An essay without trait scores (e.g. from the official layout) is an error naming its
    file:line: the scorer has nothing to learn from it.
    """
    out = []
    for essay in essays:
        where = f"{essay.source}:{essay.line}"
        if not essay.traits:
            raise ValueError(f"{where}: essay {essay.essay_id} (prompt {essay.prompt}) has no "
                             "ASAP++ trait scores; the mtl format needs the traits layout "
                             "(essay_id, essay_set, essay, score, <traits>)")
        traits, codecs = asap_traits_and_codecs(essay.prompt)
        text = (prompt_texts or {}).get(essay.prompt)
        out.append(_example(essay.text, str(essay.essay_id), where, traits, codecs,
                            [essay.traits[t] for t in traits], with_feedback, text))
    return out


def examples_from_ell(records: Sequence[ell.EllEssay], *,
                      with_feedback: bool) -> list[MtlExample]:
    """One example per ELLIPSE essay over the six traits (unscored essays are an error)."""
    traits, codecs = ell_traits_and_codecs()
    out = []
    for rec in records:
        where = f"{rec.source}:{rec.line}"
        missing = [t for t in traits if t not in rec.scores]
        if missing:
            raise ValueError(f"{where}: essay {rec.text_id} has no {missing} score(s); "
                             "unscored essays (test.csv) cannot be training examples")
        out.append(_example(rec.text, rec.text_id, where, traits, codecs,
                            [rec.scores[t] for t in traits], with_feedback, None))
    return out
