"""ASAP / ASAP++ TSV files -> a tokenised dataset directory the TRM-AES training reads.

    # the Kaggle release, stratified 60/20/20 split per prompt
    python -m launch.build_dataset --input=training_set_rel3.tsv --output_dir=data/asap
    # ASAP++ train/dev/test files keep their split; a directory means every *.tsv below it
    python -m launch.build_dataset --input=asap_traits/ --prompt_set=1,2 --output_dir=data/pp
    # token-length report (table + token_lengths.png) instead of a dataset
    python -m launch.build_dataset --input=training_set_rel3.tsv --output_dir=reports \
        --analyze_lengths
    # the synthetic demo corpus (no download needed)
    python -m launch.build_dataset --demo --output_dir=data/demo
    # also as a Hugging Face DatasetDict (save_to_disk; token ids, the records keep no text)
    python -m launch.build_dataset --demo --output_dir=data/demo --export_hf=data/demo_hf

Writes ``{train,dev,test}.array_record`` and ``manifest.json`` (see
aes_jax/data/asap_records.py); read them with
``aes_jax.data.asap_records.AsapDataSource(output_dir, split)``.

``--format=mtl`` builds the instruction data of the LLaMA-AES multi-trait scorer instead
(see aes_jax/data/mtl_dataset.py): ``{train,dev,test}.jsonl`` of instruction/output pairs and
``manifest.json`` naming the traits and their digit codecs. ``--input`` is then ASAP++
trait TSVs (as above), an ELLIPSE csv (Kaggle train.csv layout) or a folder of ArTS
``fold_k.csv`` files (detected from the path and header):

    # ELLIPSE folds: test = fold_0.csv, dev = 10% of the other folds
    python -m launch.build_dataset --format=mtl --input=data/ell --output_dir=data/ell_mtl
    # ASAP++ prompt 3, answers followed by (synthetic) rubric feedback
    python -m launch.build_dataset --format=mtl --input=asap_traits/prompt_3 \
        --feedback=rubric --output_dir=data/p3_mtl
    # the synthetic ELLIPSE-layout demo corpus (no download needed)
    python -m launch.build_dataset --format=mtl --demo --output_dir=data/ell_demo

``--format=tfds`` prepares a TFDS dataset of the raw essays (aes_jax/datasets/); with
``--analyze_lengths`` the token-length report reads it (every split; ``--manual_dir`` only
when it is still to be built):

    python -m launch.build_dataset --format=tfds --dataset=asap_traits \
        --manual_dir=asap_traits/ --data_dir=data/tfds
    python -m launch.build_dataset --format=tfds --dataset=asap_traits --config=prompt_3 \
        --data_dir=data/tfds --analyze_lengths --output_dir=reports
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from absl import app, flags

from aes_jax.data.read_report import decoding_lines, skip_lines
from launch import cli

INPUT = flags.DEFINE_string("input", None, "ASAP TSV file(s), comma-separated; a directory "
                            "stands for every *.tsv below it. Official training_set_rel3.tsv "
                            "or the ASAP++ traits layout, detected from the header.")
DEMO = flags.DEFINE_bool("demo", False, "Use the synthetic demo corpus (written into "
                         "OUTPUT_DIR/source/) instead of --input.")
PROMPT_SET = flags.DEFINE_string("prompt_set", "all", "'all' or comma-separated prompts, "
                                 "e.g. 1,2,7.")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Dataset directory to write (trm, mtl); "
                                  "the report's directory with --analyze_lengths.")
MAX_TOKENS = flags.DEFINE_integer("max_tokens", 512, "Longest sequence, special tokens and "
                                  "prompt text included.")
OVERLENGTH = flags.DEFINE_enum("overlength", "truncate", ["truncate", "drop"],
                               "What to do with essays over --max_tokens (counts reported).")
LIMIT_TRAIN = flags.DEFINE_integer("limit_train_essays", None, "Keep a seeded random subset "
                                   "of this many train essays (quick runs).")
ANALYZE = flags.DEFINE_bool("analyze_lengths", False, "Print a per-prompt token-length report "
                            "and save token_lengths.png in --output_dir; writes no dataset. "
                            "With --format=tfds: of the built asap_* dataset (every split).")
SPLIT = flags.DEFINE_string("split", None, "train,dev,test fractions, stratified by score "
                            "per prompt. Default: the split of ASAP++ train/dev/test.tsv "
                            "inputs, else 0.6,0.2,0.2.")
SEED = flags.DEFINE_integer("seed", 0, "Seed of the stratified split and the train limit.")
SPLIT_FILE = flags.DEFINE_string("split_file", None, "CSV of essay_id,split (train/dev/test); "
                                 "essays not listed are skipped and counted.")
TOKENIZER_DIR = flags.DEFINE_string("tokenizer_dir", None, "Local HF dir of a BERT uncased "
                                    "WordPiece tokenizer; default the packaged MiniLM.")
PROMPT_TEXTS = flags.DEFINE_string("prompt_texts", None, "JSON file {prompt: text}; given "
                                   "prompts are encoded as [CLS] prompt [SEP] essay [SEP].")
STRICT = flags.DEFINE_bool("strict", False, "Stop at the first bad row (naming file and line) "
                           "instead of skipping and counting it.")
ENCODING = flags.DEFINE_string("encoding", "auto", "Text encoding of the inputs. 'auto': UTF-8, "
                               "and the bytes that are not valid UTF-8 as cp1252 (the Kaggle "
                               "ASAP file mixes both); lines decoded each way are counted. A "
                               "codec name (utf-8, cp1252, ...) reads every line with it. "
                               "Undecodable bytes become U+FFFD and are counted.")
OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace a dataset already in --output_dir.")
FORMAT = flags.DEFINE_enum("format", "trm", ["trm", "mtl", "tfds"], "trm: tokenised "
                           "ArrayRecord dataset for TRM-AES; mtl: instruction JSONL for the "
                           "LLaMA-AES multi-trait scorer; tfds: a TFDS dataset of raw essays "
                           "(aes_jax.datasets; --dataset, --manual_dir, --data_dir).")
DATASET = flags.DEFINE_enum("dataset", None, ["asap_aes", "asap_traits", "ellipse"],
                            "tfds: the builder (aes_jax/datasets/).")
MANUAL_DIR = flags.DEFINE_string("manual_dir", None, "tfds: folder of the downloaded files "
                                 "(see the builder's MANUAL_DOWNLOAD_INSTRUCTIONS).")
DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds: TFDS data dir to write into.")
TFDS_CONFIG = flags.DEFINE_string("config", None, "tfds: builder config, e.g. prompt_3 "
                                  "(asap_*) or test_fold_2 (ellipse); default: every essay.")
TEST_FOLD = flags.DEFINE_integer("test_fold", 0, "mtl, ELLIPSE: the fold used as test (a "
                                 "single csv is first cut into 5 seeded folds).")
DEV_FRACTION = flags.DEFINE_float("dev_fraction", 0.1, "mtl, ELLIPSE: seeded share of the "
                                  "non-test folds held out as dev.")
FEEDBACK = flags.DEFINE_enum("feedback", "none", ["none", "rubric"], "mtl: 'rubric' appends "
                             "SYNTHETIC template feedback built from the scores to each answer.")
EXPORT_HF = flags.DEFINE_string("export_hf", None, "mtl, trm: also write the built dataset to "
                                "this dir with Hugging Face DatasetDict.save_to_disk (+ its "
                                "manifest.json); mtl: read it with --config.data.hf=DIR; trm: "
                                "the records' fields (token ids, no text).")

_TRM_ONLY = ("max_tokens", "overlength", "limit_train_essays", "analyze_lengths",
             "tokenizer_dir")
_MTL_ONLY = ("test_fold", "dev_fraction", "feedback")
_ELL_ONLY = ("test_fold", "dev_fraction")
_ASAP_ONLY = ("prompt_set", "split", "split_file", "prompt_texts")
_TFDS_ONLY = ("dataset", "manual_dir", "data_dir", "config")
# What --format=tfds also takes with --analyze_lengths (the report's options).
_TFDS_REPORT = ("analyze_lengths", "output_dir", "max_tokens", "tokenizer_dir", "prompt_texts")


def _prompt_texts(path: str | None, demo: bool) -> dict[int, str] | None:
    if path:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        try:
            return {int(k): str(v) for k, v in raw.items()}
        except (AttributeError, ValueError):
            raise ValueError(f"{path}: expected a JSON object {{prompt number: text}}") from None
    if demo:
        from aes_jax.data import asap_demo
        return dict(asap_demo.PROMPT_TEXTS)
    return None


def _inputs() -> str:
    if DEMO.value == bool(INPUT.value):
        raise app.UsageError("give exactly one of --input and --demo")
    if DEMO.value:
        from aes_jax.data import asap_demo
        return str(asap_demo.write_demo_tsv(Path(OUTPUT_DIR.value) / "source" /
                                            "training_set_rel3.tsv"))
    return INPUT.value


def _summary(manifest: dict) -> str:
    lines = [f"wrote {OUTPUT_DIR.value}: " + ", ".join(
        f"{s} {n}" for s, n in manifest["splits"].items()) + f" ({manifest['split']['rule']})"]
    for split, per_prompt in manifest["counts"].items():
        lines.append(f"  {split:>5}: " + ", ".join(f"prompt {p} {n}"
                                                    for p, n in per_prompt.items()))
    lines += skip_lines(manifest)
    lines += decoding_lines(manifest)
    over = manifest["overlength"]
    total_over = sum(n for d in over["over_limit"].values() for n in d.values())
    done = {"truncate": "truncated", "drop": "dropped"}[over["policy"]]
    lines.append(f"  over max_tokens={manifest['max_tokens']}: {total_over} ({done})"
                 + (f" {over['over_limit']}" if total_over else ""))
    if manifest["split"].get("train_essays_removed_by_limit"):
        lines.append(f"  --limit_train_essays removed "
                     f"{manifest['split']['train_essays_removed_by_limit']} train essays")
    return "\n".join(lines)


def main(argv):
    del argv
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Bad input or options end in one line naming the file/line or flag (launch/cli.py).
    if FORMAT.value == "tfds":
        return run_tfds()
    _reject_flags(_TFDS_ONLY, "--format=tfds")
    if not OUTPUT_DIR.value:
        raise app.UsageError("--output_dir is required with --format=trm or mtl")
    if FORMAT.value == "mtl":
        run_mtl()
    else:
        _reject_flags(_MTL_ONLY, "--format=mtl")
        run()


def run() -> None:
    """Build the dataset (or the length report) from the flags; prints a summary."""
    from aes_jax.data import asap, asap_records, splits

    if EXPORT_HF.value:
        if ANALYZE.value:
            raise app.UsageError("--export_hf exports a built dataset; --analyze_lengths "
                                 "builds none")
        # Refuse an existing export before anything is written or built, not after it.
        from aes_jax.data.hf_inputs import EXPORT_FILES
        from aes_jax.data.read_report import refuse_existing
        refuse_existing(EXPORT_HF.value, OVERWRITE.value, names=EXPORT_FILES)
    opts = asap_records.BuildOptions(
        inputs=_inputs(),
        output_dir=OUTPUT_DIR.value,
        prompts=asap.parse_prompt_set(PROMPT_SET.value),
        max_tokens=MAX_TOKENS.value,
        overlength=OVERLENGTH.value,
        limit_train_essays=LIMIT_TRAIN.value,
        split=splits.parse_split_fractions(SPLIT.value) if SPLIT.value else None,
        split_file=SPLIT_FILE.value,
        seed=SEED.value,
        tokenizer_dir=TOKENIZER_DIR.value,
        prompt_texts=_prompt_texts(PROMPT_TEXTS.value, DEMO.value),
        strict=STRICT.value,
        encoding=ENCODING.value,
        overwrite=OVERWRITE.value,
    )
    if ANALYZE.value:
        from aes_jax.data import length_report

        _print_report(length_report.analyze_lengths(opts))
        return
    print(_summary(asap_records.build_dataset(opts)))
    if EXPORT_HF.value:
        from aes_jax.data.hf_inputs import export_trm_dir

        export_trm_dir(OUTPUT_DIR.value, EXPORT_HF.value, overwrite=OVERWRITE.value)
        print(f"  exported (datasets save_to_disk, token ids): {EXPORT_HF.value}")


def _print_report(report: dict) -> None:
    from aes_jax.data import length_report

    print(length_report.format_length_report(report))
    print(f"histogram: {report['png']}")


def _reject_flags(names, needs: str) -> None:
    given = [f"--{n}" for n in names if flags.FLAGS[n].present]
    if given:
        raise app.UsageError(f"{', '.join(given)} only appl{'ies' if len(given) == 1 else 'y'} "
                             f"with {needs}")


def run_mtl() -> None:
    """Build the instruction JSONL dataset (--format=mtl) from the flags; prints a summary."""
    from aes_jax.data import ell

    _reject_flags(_TRM_ONLY, "--format=trm")
    if DEMO.value == bool(INPUT.value):
        raise app.UsageError("give exactly one of --input and --demo")
    if DEMO.value or ("," not in INPUT.value and ell.is_ell_input(INPUT.value)):
        _reject_flags(_ASAP_ONLY, "ASAP inputs")
    else:
        _reject_flags(_ELL_ONLY, "ELLIPSE inputs")
    from aes_jax.data.mtl_dataset import build_mtl

    if EXPORT_HF.value:  # refuse an existing export before the build, not after it
        from aes_jax.data.hf_inputs import EXPORT_FILES
        from aes_jax.data.read_report import refuse_existing
        refuse_existing(EXPORT_HF.value, OVERWRITE.value, names=EXPORT_FILES)
    manifest = build_mtl(
        inputs=INPUT.value, output_dir=OUTPUT_DIR.value, feedback=FEEDBACK.value,
        demo=DEMO.value, test_fold=TEST_FOLD.value, dev_fraction=DEV_FRACTION.value,
        seed=SEED.value, prompt_set=PROMPT_SET.value, split=SPLIT.value,
        split_file=SPLIT_FILE.value, prompt_texts=_prompt_texts(PROMPT_TEXTS.value, False),
        strict=STRICT.value, encoding=ENCODING.value, overwrite=OVERWRITE.value)
    print(_mtl_summary(manifest, OUTPUT_DIR.value))
    if EXPORT_HF.value:
        from aes_jax.data.hf_inputs import export_mtl_dir

        export_mtl_dir(OUTPUT_DIR.value, EXPORT_HF.value, overwrite=OVERWRITE.value)
        print(f"  exported (datasets save_to_disk): {EXPORT_HF.value}")


def run_tfds() -> None:
    """Prepare a TFDS dataset (--format=tfds) without TensorFlow; prints its splits."""
    allowed = _TFDS_ONLY + ("format", "overwrite") + (_TFDS_REPORT if ANALYZE.value else ())
    given = [n for n in flags.FLAGS if n not in allowed
             and n in _ALL_BUILD_FLAGS and flags.FLAGS[n].present]
    if given:
        raise app.UsageError(f"{', '.join('--' + n for n in given)}: not used with "
                             "--format=tfds (the builder config fixes prompts and splits)")
    # A built dataset is reported on without its manual files.
    needed = ("dataset", "data_dir") + (("output_dir",) if ANALYZE.value else ("manual_dir",))
    missing = [f"--{n}" for n in needed if not flags.FLAGS[n].value]
    if missing:
        raise app.UsageError(f"--format=tfds{' --analyze_lengths' if ANALYZE.value else ''} "
                             f"needs {', '.join(missing)}")
    if ANALYZE.value and DATASET.value == "ellipse":
        raise app.UsageError("--analyze_lengths reports ASAP token lengths: --dataset=asap_aes "
                             "or asap_traits")
    from aes_jax import datasets

    if MANUAL_DIR.value:
        _check_manual_dir(MANUAL_DIR.value, DATASET.value)
        builder = datasets.build(DATASET.value, MANUAL_DIR.value, DATA_DIR.value,
                                 TFDS_CONFIG.value, overwrite=OVERWRITE.value)
        print("\n".join(datasets.summary_lines(builder)))
    if ANALYZE.value:
        from aes_jax.data import length_report

        name = DATASET.value + (f"/{TFDS_CONFIG.value}" if TFDS_CONFIG.value else "")
        _print_report(length_report.analyze_tfds_lengths(
            name, DATA_DIR.value, OUTPUT_DIR.value, max_tokens=MAX_TOKENS.value,
            tokenizer_dir=TOKENIZER_DIR.value,
            prompt_texts=_prompt_texts(PROMPT_TEXTS.value, False)))


def _check_manual_dir(manual_dir: str, name: str) -> None:
    """tfds asserts (a multi-line AssertionError, a traceback here) on a missing or empty
    manual dir: say it in one line, with the builder's download instructions."""
    folder = Path(manual_dir)
    if not folder.is_dir() or not any(folder.iterdir()):
        import tensorflow_datasets as tfds

        how = " ".join(tfds.builder_cls(name).MANUAL_DOWNLOAD_INSTRUCTIONS.split())
        raise FileNotFoundError(f"{folder}: {'empty' if folder.is_dir() else 'no such'} "
                                f"manual directory. {how}")


_ALL_BUILD_FLAGS = ("input", "demo", "prompt_set", "output_dir", "strict", "encoding",
                    "seed", "export_hf") + _TRM_ONLY + _MTL_ONLY + _ASAP_ONLY


def _mtl_summary(manifest: dict, output_dir: str) -> str:
    counts = manifest["counts"]
    lines = [f"wrote {output_dir} ({manifest['format']}, {manifest['dataset']}): "
             + ", ".join(f"{s} {n}" for s, n in counts.items())
             + f" ({manifest['split']['rule']})"]
    lines.append("  traits: " + ", ".join(
        f"{t} {c['digits'][0]}-{c['digits'][1]}"
        for t, c in zip(manifest["traits"], manifest["codecs"])))
    lines.append(f"  feedback: {manifest['feedback']['mode']}"
                 + (" (SYNTHETIC template text)" if manifest["feedback"]["mode"] != "none"
                    else ""))
    lines += skip_lines(manifest)
    lines += decoding_lines(manifest)
    return "\n".join(lines)


if __name__ == "__main__":
    cli.run(main)
