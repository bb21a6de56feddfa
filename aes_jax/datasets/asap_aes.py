"""TFDS builder ``asap_aes``: the Kaggle ASAP-AES release ``training_set_rel3.tsv``.

All eight prompts, holistic ``domain1_score`` (the rater and domain2 columns are not
read, as in :func:`aes_jax.data.asap.read_tsv`), trait arrays all -1 / False (ASAP++
traits are the ``asap_traits`` builder). The file has no split, so each config splits
stratified by score within each prompt, 60/20/20 with seed 0 (recorded in the config;
the same split ``launch.build_dataset`` makes by default).
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from aes_jax.data.asap import SCORE_RANGES
from aes_jax.data.splits import DEFAULT_SPLIT
from aes_jax.datasets import asap_base, common

__all__ = ["AsapAes"]

_FILE = "training_set_rel3.tsv"
_INSTRUCTIONS = f"""\
Download the ASAP-AES data from https://www.kaggle.com/c/asap-aes/data (Kaggle account,
accept the competition rules), unzip it and put `{_FILE}` (tab-separated, 28 columns,
header essay_id, essay_set, essay, rater1_domain1, ...) in the manual directory
(`--manual_dir`, or DownloadConfig(manual_dir=...)).
"""


class AsapAes(asap_base.AsapBuilderBase):
    """ASAP-AES essays (prompts 1-8) with their holistic scores."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: training_set_rel3.tsv, seeded stratified "
                              "60/20/20 splits per prompt."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = asap_base.prompt_configs(tuple(sorted(SCORE_RANGES)), "1.0.0",
                                               fractions=DEFAULT_SPLIT, seed=0)
    DEFAULT_CONFIG_NAME = "all"
    DESCRIPTION = ("The Hewlett Foundation ASAP-AES training essays (8 prompts) with the "
                   "resolved holistic score (domain1_score); anonymised with @CAPS1-style "
                   "tokens. Skipped rows are counted in info.metadata['read'].")
    HOMEPAGE = "https://www.kaggle.com/c/asap-aes"

    def _inputs(self, manual_dir) -> list:
        return [common.find_manual_file(manual_dir, [_FILE], "the Kaggle ASAP-AES training "
                                        "file", _INSTRUCTIONS)]
