"""What the essay-corpus TFDS builders share: features, ordered examples, the read report.

The builders only yield: the readers in :mod:`aes_jax.data` parse the files (with their
counted skips and clear errors), and :func:`read_report.summary` of that read is stored in
the dataset's ``metadata.json`` (``info.metadata["read"]``), so a built dataset says which
rows of its files it left out and why.

Examples are written in a fixed order (``disable_shuffling``: keys are ranks of
``(prompt, essay_id)`` or ``text_id``), so index ``i`` of a split is the same essay for
every build of the same files; a training pipeline shuffles with its own seed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from aes_jax.data.asap import SCORE_RANGES, TRAIT_NAMES, TRAIT_RANGES, Essay

__all__ = ["ManualBuilder", "ASAP_TRAITS", "asap_features", "asap_example", "ordered",
           "find_manual_file", "dataset_info", "asap_metadata"]

# The fixed trait axis of every ASAP example: each ASAP++ trait once, in the order of the
# score tables (prompt 1's five, then the four of prompts 3-6 not already named). A prompt
# lacks the others: their `trait_scores` are -1 and `trait_mask` is False.
ASAP_TRAITS: tuple[str, ...] = tuple(dict.fromkeys(t for p in sorted(TRAIT_NAMES)
                                                   for t in TRAIT_NAMES[p]))


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder of manually downloaded files: no URLs, so no checksums file to find.

    tfds locates a packaged builder's checksums through ``code_path``, which for a module
    inside a package needs ``importlib_resources`` (not installed, and not otherwise
    needed); with nothing to download there is nothing to check, so say there is no path.
    """

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return None


def asap_features() -> tfds.features.FeaturesDict:
    n = len(ASAP_TRAITS)
    return tfds.features.FeaturesDict({
        "essay_id": np.int64,
        "prompt": np.int32,
        "essay": tfds.features.Text(doc="raw essay text as the reader returns it"),
        "score": tfds.features.Scalar(np.int32, doc="holistic score (domain1_score / score)"),
        "trait_scores": tfds.features.Tensor(shape=(n,), dtype=np.int32,
                                             doc=f"ASAP++ traits {list(ASAP_TRAITS)}; -1 = none"),
        "trait_mask": tfds.features.Tensor(shape=(n,), dtype=np.bool_,
                                           doc="True where the prompt has the trait"),
    })


def asap_example(essay: Essay) -> dict[str, Any]:
    scores = np.array([essay.traits.get(t, -1) for t in ASAP_TRAITS], dtype=np.int32)
    return {"essay_id": essay.essay_id, "prompt": essay.prompt, "essay": essay.text,
            "score": essay.score, "trait_scores": scores, "trait_mask": scores >= 0}


def ordered(items: Iterable[Any], key) -> Iterator[tuple[int, Any]]:
    """(rank, item) in ``key`` order: integer keys a builder with disable_shuffling keeps."""
    yield from enumerate(sorted(items, key=key))


def find_manual_file(manual_dir: os.PathLike | str, names: Sequence[str], what: str,
                     instructions: str) -> Path:
    """The first of ``names`` in ``manual_dir``, or an error saying what to put there."""
    folder = Path(manual_dir)
    for name in names:
        if (folder / name).is_file():
            return folder / name
    # One line (launchers print one): the instructions joined up.
    raise FileNotFoundError(f"{folder}: no {' or '.join(names)} ({what}). "
                            + " ".join(instructions.split()))


def dataset_info(builder: tfds.core.DatasetBuilder, description: str,
                 features: tfds.features.FeaturesDict, homepage: str,
                 citation: str) -> tfds.core.DatasetInfo:
    # DatasetInfo directly, not dataset_info_from_configs: that reads README/CITATIONS
    # files from a package folder these builders do not ship.
    return tfds.core.DatasetInfo(builder=builder, description=description, features=features,
                                 homepage=homepage, citation=citation,
                                 metadata=tfds.core.MetadataDict(),
                                 disable_shuffling=True)


def asap_metadata(read: Mapping[str, Any], essays: Sequence[Essay],
                  split_rule: Mapping[str, Any],
                  filtered: Mapping[int, int]) -> dict[str, Any]:
    """JSON-able facts a consumer needs without scanning the data (TRM-AES's manifest)."""
    prompts = sorted({e.prompt for e in essays})
    present = {t for e in essays for t in e.traits}
    with_traits = sorted({e.prompt for e in essays if e.traits})
    return {
        "read": dict(read),
        "prompts": prompts,
        "prompts_filtered_out": {str(p): n for p, n in sorted(filtered.items())},
        "split": dict(split_rule),
        "score_ranges": {str(p): list(SCORE_RANGES[p]) for p in prompts},
        "trait_axis": list(ASAP_TRAITS),
        "trait_names": [t for t in ASAP_TRAITS if t in present],
        "trait_ranges": {str(p): {t: list(r) for t, r in TRAIT_RANGES[p].items()}
                         for p in with_traits},
    }
