"""Build one of the registered essay datasets from manually downloaded files (no TF needed).

The ``tfds build`` CLI imports TensorFlow; this is the same ``download_and_prepare`` call
without it, always writing ArrayRecord (what ``tfds.data_source`` and grain read).
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

__all__ = ["NAMES", "build", "summary_lines"]

NAMES = ("asap_aes", "asap_traits", "ellipse")


def build(name: str, manual_dir: str | os.PathLike, data_dir: str | os.PathLike,
          config: str | None = None, overwrite: bool = False) -> tfds.core.DatasetBuilder:
    """Prepare ``name`` (its default config unless ``config``) into ``data_dir``.

    A complete build already there is kept (TFDS's rule) unless ``overwrite``.
    """
    if name not in NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(NAMES)}")
    builder = tfds.builder(name, data_dir=os.fspath(data_dir), config=config or None,
                           file_format="array_record")
    mode = (tfds.download.GenerateMode.FORCE_REDOWNLOAD if overwrite
            else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=os.fspath(manual_dir), download_mode=mode))
    return builder


def summary_lines(builder: tfds.core.DatasetBuilder) -> list[str]:
    """What a build wrote: the directory, essays per split, rows skipped per reason."""
    info = builder.info
    splits = ", ".join(f"{s} {info.splits[s].num_examples}" for s in info.splits)
    read = info.metadata.get("read", {})
    lines = [f"wrote {builder.data_dir} ({info.full_name}): {splits}"]
    skipped = read.get("skipped", {})
    lines.append("  skipped: " + (", ".join(f"{k} {v}" for k, v in skipped.items())
                                  if skipped else "none"))
    lines += [f"    {x}" for x in read.get("skip_examples", [])[:10]]
    return lines
