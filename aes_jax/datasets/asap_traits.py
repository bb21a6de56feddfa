"""TFDS builder ``asap_traits``: ASAP prompts 1-6 with the ASAP++ trait scores.

Reads every ``*.tsv`` below the manual directory in the ASAP++ combined layout (essay_id,
essay_set, essay, score, <traits>; the published defective headers of prompts 2-6 are
handled by the reader), e.g. the ``prompt_{k}/{train,dev,test}.tsv`` folders of
robert1ridley/cross-prompt-trait-scoring. Splits are the file names' train/dev/test; files
without one are split stratified 60/20/20 with the config's seed. Traits sit on the fixed
axis :data:`aes_jax.datasets.common.ASAP_TRAITS` (-1 / mask False where a prompt lacks one).
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from aes_jax.data.asap import TRAIT_NAMES
from aes_jax.datasets import asap_base

__all__ = ["AsapTraits"]

_INSTRUCTIONS = """\
Put the ASAP++ trait TSVs in the manual directory (`--manual_dir`): e.g. the folders
prompt_1 ... prompt_6 of data/aes-cross-val-data-attributes-tsv/ from
https://github.com/robert1ridley/cross-prompt-trait-scoring (each with train.tsv, dev.tsv,
test.tsv). The essays are ASAP-AES's (https://www.kaggle.com/c/asap-aes/data), the traits
ASAP++ (Mathias & Bhattacharyya, LREC 2018).
"""


class AsapTraits(asap_base.AsapBuilderBase):
    """ASAP-AES prompts 1-6 with ASAP++ trait scores and the files' train/dev/test."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: ASAP++ combined TSVs, file splits."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = asap_base.prompt_configs(tuple(sorted(TRAIT_NAMES)), "1.0.0")
    DEFAULT_CONFIG_NAME = "all"
    DESCRIPTION = ("ASAP-AES essays of prompts 1-6 with holistic and ASAP++ trait scores "
                   "(five traits for prompts 1-2, four for 3-6).")
    HOMEPAGE = "https://github.com/robert1ridley/cross-prompt-trait-scoring"

    def _inputs(self, manual_dir) -> list:
        try:
            return asap_base.tsv_inputs(manual_dir)
        except (FileNotFoundError, ValueError) as e:
            raise FileNotFoundError(f"{e}. " + " ".join(_INSTRUCTIONS.split())) from None
