"""ELLIPSE essays -> a Pair2Score pair cache (run{R}_{trait}.jsonl + _meta.json), as the
PyTorch original writes it (see aes_jax/data/pairs.py).

    # the ArTS fold layout: the fold map comes from fold_k.csv (k -> A..E)
    python -m launch.build_pairs --input=data/ell --trait=grammar --run=1 --size=small \
        --output_dir=data/pairs_small
    # a Kaggle train.csv with the original's fold map (made and written when missing)
    python -m launch.build_pairs --input=train.csv --fold_map=data/folds/fold_map.json \
        --trait=vocabulary --run=3 --size=large --output_dir=data/pairs_large

Run R holds out one fold (1: E, 2: A, 3: B, 4: C, 5: D) and fixes the seed (36, 42, 48,
54, 60); the other four folds are split 80/10/10 into train/val/test pools and paired.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from absl import flags

from launch import cli

INPUT = flags.DEFINE_string("input", None, "A Kaggle ELLIPSE train.csv, or a folder of ArTS "
                            "fold_k.csv files (detected from the path and header).")
FOLD_MAP = flags.DEFINE_string("fold_map", "", "The original's fold_map.json {text_id: A-E}. "
                               "An existing file is read; a missing one is made (from the "
                               "fold files, else stratified by --trait with "
                               "--seed_fold_map) and written there. Empty: "
                               "OUTPUT_DIR/fold_map.json.")
TRAIT = flags.DEFINE_string("trait", None, "The ELLIPSE trait to pair on: cohesion, syntax, "
                            "vocabulary, phraseology, grammar or conventions.")
RUN = flags.DEFINE_integer("run", 1, "Run 1-5: the held-out fold and the seed.")
SIZE = flags.DEFINE_enum("size", "small", ["large", "small", "mini"], "large: every essay of "
                         "the pools; small: a seeded half of each pool; mini: the small "
                         "pairs subsampled to 100 train / 100 val / 200 test.")
OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where the two cache files go.")
MIN_GAP = flags.DEFINE_float("min_score_gap", 1.0, "Smallest score gap of a pair (coverage "
                             "fallbacks below it are counted).")
TARGET_USAGE = flags.DEFINE_integer("target_usage", 5, "Pairs per essay the fill aims at.")
SOFT_CAP = flags.DEFINE_integer("soft_cap", 6, "Pairs per essay never passed.")
SEED_FOLD_MAP = flags.DEFINE_integer("seed_fold_map", 0, "Seed of a fold map made here.")


def main(argv: list[str]) -> None:
    del argv
    from aes_jax.data import pairs
    from aes_jax.data.ell import ELL_TRAITS
    from aes_jax.data.read_report import skip_lines

    for flag in (INPUT, TRAIT, OUTPUT_DIR):
        if not flag.value:
            cli.fail(f"--{flag.name} is required")
    if TRAIT.value not in ELL_TRAITS:
        close = difflib.get_close_matches(TRAIT.value, ELL_TRAITS, n=1)
        cli.fail(f"--trait={TRAIT.value}: not an ELLIPSE trait; expected one of "
                 f"{', '.join(ELL_TRAITS)}" + (f" (did you mean {close[0]}?)" if close else ""))
    pairs.run_setup(RUN.value)  # a bad --run fails before the essays are read
    out_dir = Path(OUTPUT_DIR.value)
    essays, report = pairs.read_essays_for_pairs(INPUT.value)
    print(f"read {report['essays']} essays from {INPUT.value} ({', '.join(report['layouts'])})")
    print("\n".join(skip_lines(report)))
    fold_map_path = Path(FOLD_MAP.value) if FOLD_MAP.value else out_dir / "fold_map.json"
    fold_map, said = pairs.load_or_make_fold_map(fold_map_path, essays, TRAIT.value,
                                                 SEED_FOLD_MAP.value)
    print(said)
    cache = pairs.build_pair_cache(essays, fold_map, TRAIT.value, RUN.value, SIZE.value,
                                   min_score_gap=MIN_GAP.value,
                                   target_usage=TARGET_USAGE.value, soft_cap=SOFT_CAP.value)
    print("\n".join(pairs.stats_lines(cache)))
    for path in pairs.write_pair_cache(out_dir, cache):
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
