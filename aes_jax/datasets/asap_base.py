"""The base of the two ASAP builders (``asap_aes``, ``asap_traits``): read, select, split, yield.

Reading and prompt selection are :func:`aes_jax.data.asap_records.read_selected` (the
same call ``launch.build_dataset`` makes), splits are :func:`aes_jax.data.splits.assign_splits`
(the file names' train/dev/test when the files carry them, else stratified by score within
each prompt with the config's fractions and seed), so a TFDS build and the ArrayRecord
dataset built from the same files hold the same essays in the same splits.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tensorflow_datasets as tfds

from aes_jax.data import read_report
from aes_jax.data.asap import SPLITS, expand_inputs
from aes_jax.data.asap_records import BuildOptions, read_selected
from aes_jax.data.splits import assign_splits
from aes_jax.datasets import common

__all__ = ["AsapConfig", "AsapBuilderBase", "prompt_configs"]

ASAP_CITATION = """@misc{asap-aes,
  author = {Ben Hamner and Jaison Morgan and lynnvandev and Mark Shermis and Tom Vander Ark},
  title = {The Hewlett Foundation: Automated Essay Scoring},
  year = {2012},
  howpublished = {\\url{https://kaggle.com/competitions/asap-aes}}
}"""


@dataclasses.dataclass(eq=False)
class AsapConfig(tfds.core.BuilderConfig):
    """Which prompts, and how essays without a file split are split (recorded here, so a
    config name pins its split)."""

    prompts: tuple[int, ...] | None = None  # None: every prompt the files hold
    fractions: tuple[float, float, float] | None = None  # None: file splits, else 0.6/0.2/0.2
    seed: int = 0


def prompt_configs(prompts: tuple[int, ...], version: str,
                   fractions: tuple[float, float, float] | None = None,
                   seed: int = 0) -> list[AsapConfig]:
    """``all`` (the default: every essay) and one config per prompt."""
    how = "file splits" if fractions is None else f"stratified {fractions}, seed {seed}"
    return [AsapConfig(name="all", version=version, fractions=fractions, seed=seed,
                       description=f"every prompt the files hold; {how}")] + [
        AsapConfig(name=f"prompt_{p}", prompts=(p,), version=version, fractions=fractions,
                   seed=seed, description=f"prompt {p} only; {how}") for p in prompts]


class AsapBuilderBase(common.ManualBuilder, skip_registration=True):
    """Subclasses name the manual files (``_inputs``) and describe the corpus."""

    DESCRIPTION = ""
    HOMEPAGE = ""

    def _info(self) -> tfds.core.DatasetInfo:
        return common.dataset_info(self, self.DESCRIPTION, common.asap_features(),
                                   self.HOMEPAGE, ASAP_CITATION)

    def _inputs(self, manual_dir) -> list:
        raise NotImplementedError

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        config: AsapConfig = self.builder_config
        inputs = self._inputs(dl_manager.manual_dir)
        result, essays, filtered = read_selected(
            BuildOptions(inputs=[str(p) for p in inputs], output_dir="", prompts=config.prompts))
        split_of, rule = assign_splits(essays, fractions=config.fractions, seed=config.seed)
        self.info.metadata.update(common.asap_metadata(read_report.summary(result), essays,
                                                       rule, filtered))
        by_split = {s: [e for e in essays if split_of.get(e.essay_id) == s] for s in SPLITS}
        # TFDS refuses an empty split, and a prompt config of a small corpus may lack one.
        return {s: self._generate_examples(group) for s, group in by_split.items() if group}

    def _generate_examples(self, essays):
        for rank, essay in common.ordered(essays, key=lambda e: (e.prompt, e.essay_id)):
            yield rank, common.asap_example(essay)


def tsv_inputs(manual_dir) -> list:
    """Every ``*.tsv`` below ``manual_dir`` (the reader's own directory expansion)."""
    return expand_inputs([str(manual_dir)])
