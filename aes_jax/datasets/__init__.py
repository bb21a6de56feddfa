"""TFDS builders for the essay corpora; importing this package registers them with tfds.

    import aes_jax.datasets, tensorflow_datasets as tfds
    tfds.builder("asap_aes", data_dir=OUT).download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=DIR))
    tfds.data_source("asap_aes", data_dir=OUT, split="train")

Builders: ``asap_aes`` (Kaggle training_set_rel3.tsv), ``asap_traits`` (ASAP++ trait TSVs),
``ellipse`` (Kaggle train.csv or ArTS fold files). All store ArrayRecord files and need no
TensorFlow. The corpus readers of :mod:`aes_jax.data` do the parsing.
"""

from aes_jax.datasets.asap_aes import AsapAes
from aes_jax.datasets.asap_traits import AsapTraits
from aes_jax.datasets.prepare import NAMES, build, summary_lines
from aes_jax.datasets.ellipse import Ellipse

__all__ = ["AsapAes", "AsapTraits", "Ellipse", "NAMES", "build", "summary_lines"]
