"""TFDS builder ``ellipse``: ELLIPSE / Feedback Prize - English Language Learning essays.

The manual directory holds either the ArTS fold files ``fold_0.csv`` ... ``fold_4.csv``
(used when present: their folds are kept) or the Kaggle ``train.csv`` (cut into 5 seeded
folds by :func:`aes_jax.data.ell.assign_folds`). Reading is :mod:`aes_jax.data.ell`; the
split is :func:`aes_jax.data.ell.split_ell`: config ``test_fold_k`` has test = fold k,
dev = a seeded 10% of the other folds, train = the rest, so every config holds all
essays. Scores are the original 1.0-5.0 scale (fold files' ``v`` read as ``v / 2``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from aes_jax.data import ell, read_report
from aes_jax.datasets import common

__all__ = ["Ellipse", "EllipseConfig"]

NUM_FOLDS = 5
_INSTRUCTIONS = """\
Either download train.csv of https://www.kaggle.com/competitions/feedback-prize-english-language-learning/data
(Kaggle account, accept the rules) into the manual directory (`--manual_dir`), or put
there the five fold files fold_0.csv ... fold_4.csv of the ArTS layout
(https://github.com/doheejin/ArTS, data_fp/fold_k/total_test.csv renamed fold_k.csv).
"""
_CITATION = """@misc{feedback-prize-english-language-learning,
  author = {Scott Crossley and Perpetual Baffour and Jules King and Lauryn Burleigh and
            Walter Reade and Maggie Demkin},
  title = {Feedback Prize - English Language Learning},
  year = {2022},
  howpublished = {\\url{https://kaggle.com/competitions/feedback-prize-english-language-learning}}
}"""


@dataclasses.dataclass(eq=False)
class EllipseConfig(tfds.core.BuilderConfig):
    test_fold: int = 0
    dev_fraction: float = 0.1
    seed: int = 0  # of the dev share, and of the folds of a plain train.csv


class Ellipse(common.ManualBuilder):
    """ELLIPSE essays with six analytic trait scores (1.0-5.0, steps of 0.5)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: Kaggle train.csv or ArTS fold files; "
                              "test fold k, seeded 10% dev."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = _INSTRUCTIONS
    BUILDER_CONFIGS = [EllipseConfig(name=f"test_fold_{k}", test_fold=k, version="1.0.0",
                                     description=f"test = fold {k}, dev = seeded 10% of the "
                                                 "other folds (seed 0)")
                       for k in range(NUM_FOLDS)]
    DEFAULT_CONFIG_NAME = "test_fold_0"

    def _info(self) -> tfds.core.DatasetInfo:
        features = tfds.features.FeaturesDict({
            "text_id": tfds.features.Text(),
            "essay": tfds.features.Text(doc="raw essay text as the reader returns it"),
            "scores": tfds.features.Tensor(shape=(len(ell.ELL_TRAITS),), dtype=np.float32,
                                           doc=f"{list(ell.ELL_TRAITS)}, 1.0-5.0"),
            "fold": np.int32,
        })
        return common.dataset_info(
            self, "ELLIPSE essays by English language learners (grades 8-12), each scored "
                  f"on {', '.join(ell.ELL_TRAITS)}. Skipped rows are counted in "
                  "info.metadata['read'].", features,
            "https://www.kaggle.com/competitions/feedback-prize-english-language-learning",
            _CITATION)

    def _read(self, manual_dir) -> tuple[Any, list[ell.EllEssay] | None, str]:
        try:
            return ell.read_ell_dir(manual_dir), None, "arts_fold"
        except FileNotFoundError:
            pass  # no fold files: the Kaggle train.csv then
        path = common.find_manual_file(manual_dir, ["train.csv"], "the Kaggle ELLIPSE "
                                       "train.csv, nor fold_k.csv files", _INSTRUCTIONS)
        result = ell.read_ell(path)
        return result, ell.assign_folds(result.essays, NUM_FOLDS,
                                        self.builder_config.seed), "kaggle"

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        config: EllipseConfig = self.builder_config
        result, essays, layout = self._read(dl_manager.manual_dir)
        essays = result.essays if essays is None else essays
        splits = ell.split_ell(essays, config.test_fold, config.dev_fraction, config.seed)
        self.info.metadata.update({
            "read": read_report.summary(result), "layout": layout,
            "traits": list(ell.ELL_TRAITS), "score_range": list(ell.ELL_RANGE),
            "split": {"rule": "test fold, seeded dev share", "test_fold": config.test_fold,
                      "dev_fraction": config.dev_fraction, "seed": config.seed,
                      "folds": ("fold_k.csv files" if layout == "arts_fold" else
                                f"{NUM_FOLDS} seeded folds of train.csv (seed {config.seed})")},
        })
        return {s: self._generate_examples(group) for s, group in splits.items() if group}

    def _generate_examples(self, essays):
        for rank, e in common.ordered(essays, key=lambda e: e.text_id):
            yield rank, {"text_id": e.text_id, "essay": e.text, "fold": e.fold,
                         "scores": np.array([e.scores[t] for t in ell.ELL_TRAITS], np.float32)}
