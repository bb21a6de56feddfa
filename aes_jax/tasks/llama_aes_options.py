"""LLaMA-AES options, read from the config and validated once (the flags keep their names:
--config.ntl_weight, --config.emo_weight, --config.data.dir, ...).

How `ntl_weight` / `emo_weight` combine with `weighting` (0 always switches a term off):

* ``auto``: dynamic when either weight is negative (the PyTorch CLI's switch), else static.
* ``static``: CE + ntl_weight * NTL + emo_weight * EMO; weights must be >= 0 (a negative
  one would train the model to INCREASE that loss).
* ``dynamic``: 0.5 * (CE + sg(CE / aux) * aux) with aux = the sum of the active terms.
  The ratio rescales aux to CE's magnitude, so a weight only switches its term on: it
  must be 0, 1 or -1, since any other magnitude would be silently ignored. The PyTorch
  CLI's one mixed form (ntl_weight < 0 with emo_weight > 0: NTL balanced, EMO static) is
  refused rather than read as both balanced.
* ``uncertainty``: learned log-variances weigh the active terms, so a weight must be 0
  or 1 (on).
"""

from __future__ import annotations

import dataclasses
from typing import Any

WEIGHTINGS = ("auto", "static", "dynamic", "uncertainty")


@dataclasses.dataclass(frozen=True)
class MtlData:
    dir: str = ""  # a `launch.build_dataset --format=mtl` dir; "" = the synthetic demo
    # Hugging Face `datasets` instead (aes_jax/data/hf_inputs.py): a save_to_disk
    # DatasetDict dir or one data file (hf), or split=FILE,... (hf_files); traits and
    # codecs from a manifest.json beside them, else inferred from the traits column.
    hf: str = ""
    hf_files: str = ""
    # Or a TFDS dataset of aes_jax.datasets (aes_jax/datasets/mtl_source.py): `ellipse/...`
    # or `asap_traits/prompt_k`, built by `launch.build_dataset --format=tfds` into
    # tfds_dir ("" = TFDS's default dir); made into examples as `--format=mtl` would, with
    # tfds_feedback (none | rubric) and tfds_prompt_texts (a JSON {prompt: text} file).
    tfds_name: str = ""
    tfds_dir: str = ""
    tfds_feedback: str = "none"
    tfds_prompt_texts: str = ""
    demo_essays: int = 240
    eval_split: str = "dev"
    limit_train: int = 0  # only the first N train examples; 0 = all
    limit_eval: int = 0  # only the first N eval_split examples; 0 = all
    seq_len: int = 768  # longest prompt + answer; longer essays are shortened (counted)

    def __post_init__(self):
        given = [f"config.data.{k}" for k in ("dir", "hf", "hf_files", "tfds_name")
                 if getattr(self, k)]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)}: give one dataset source")
        if self.tfds_feedback not in ("none", "rubric"):
            raise ValueError(f"config.data.tfds_feedback={self.tfds_feedback!r}: expected "
                             "'none' or 'rubric'")
        if not self.tfds_name:
            stray = [f"config.data.{k}" for k in ("tfds_dir", "tfds_prompt_texts")
                     if getattr(self, k)] + (["config.data.tfds_feedback"]
                                             if self.tfds_feedback != "none" else [])
            if stray:
                raise ValueError(f"{' and '.join(stray)} without config.data.tfds_name: "
                                 "name the TFDS dataset too")

    @property
    def demo(self) -> bool:
        """No source given: the synthetic demo corpus (built into the workdir)."""
        return not (self.dir or self.hf or self.hf_files or self.tfds_name)

    @property
    def hf_source(self) -> str | dict[str, str] | None:
        """What `hf_inputs.load_hf_mtl` reads, or None for an mtl dir / the demo."""
        if self.hf_files:
            from aes_jax.data.hf_inputs import parse_split_files
            return parse_split_files(self.hf_files)
        return self.hf or None


@dataclasses.dataclass(frozen=True)
class LlamaAesOptions:
    data: MtlData = MtlData()
    seed: int = 0
    mtl: bool = True  # answer = scores + feedback; False = the score line only
    train_ratio: float = 1.0
    ntl_weight: float = 1.0  # 0 = off; negative = dynamic weighting (under auto)
    ntl_type: str = "mse"  # "mse" | "was"
    emo_weight: float = -1.0  # 0 = off; negative = dynamic weighting (under auto)
    emo_type: str = "topk"  # "topk" | "full"
    emo_topk: int = 64
    emo_normalize: bool = False  # False: the public EMO code's dot form; see losses/emo.py
    weighting: str = "auto"
    max_new_tokens: int = 128  # decoding for launch.score / launch.self_consistency

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"config.weighting={self.weighting!r}: expected one of {WEIGHTINGS}")
        if self.ntl_type not in ("mse", "was"):
            raise ValueError(f"config.ntl_type={self.ntl_type!r}: expected 'mse' or 'was'")
        if self.emo_type not in ("topk", "full"):
            raise ValueError(f"config.emo_type={self.emo_type!r}: expected 'topk' or 'full'")
        _check_weights(self.resolved_weighting, self.weighting, self.ntl_weight,
                       self.emo_weight)
        if not 0.0 < self.train_ratio <= 1.0:
            raise ValueError(f"config.train_ratio={self.train_ratio}: expected (0, 1]")

    @classmethod
    def from_config(cls, config: Any) -> "LlamaAesOptions":
        names = {f.name for f in dataclasses.fields(cls)} - {"data", "max_new_tokens"}
        values = {k: config[k] for k in names if k in config}
        data_names = {f.name for f in dataclasses.fields(MtlData)}
        data = MtlData(**{k: v for k, v in config.data.items() if k in data_names})
        sampling = config.get("sampling", {})
        max_new = int(sampling.get("max_new_tokens", cls.max_new_tokens))
        return cls(data=data, max_new_tokens=max_new, **values)

    @property
    def resolved_weighting(self) -> str:
        """The weighting in force: `auto` is dynamic when either weight is negative."""
        if self.weighting != "auto":
            return self.weighting
        return "dynamic" if min(self.ntl_weight, self.emo_weight) < 0 else "static"

    @property
    def active_terms(self) -> tuple[str, ...]:
        """The loss terms this configuration computes (CE always)."""
        active = ["ce"]
        if self.ntl_weight != 0:
            active.append("ntl")
        if self.mtl and self.emo_weight != 0:
            active.append("emo")
        return tuple(active)


def _check_weights(resolved: str, asked: str, ntl: float, emo: float) -> None:
    """Refuses weights the chosen weighting would misread (see the module docstring)."""
    where = (f"config.ntl_weight={ntl:g}, config.emo_weight={emo:g} with "
             f"weighting={asked!r}" + (f" (= {resolved})" if asked != resolved else ""))
    if resolved == "static" and min(ntl, emo) < 0:
        raise ValueError(f"{where}: a negative weight would train the model to increase "
                         "that loss; a negative weight means dynamic weighting, so use "
                         "weighting='auto' or 'dynamic' (or a weight >= 0)")
    if resolved == "uncertainty" and not {ntl, emo} <= {0.0, 1.0}:
        raise ValueError(f"{where}: uncertainty weighting learns each term's weight, so a "
                         "weight only switches its term on (1) or off (0)")
    if resolved == "dynamic":
        if not {abs(ntl), abs(emo)} <= {0.0, 1.0}:
            raise ValueError(f"{where}: dynamic weighting rescales NTL + EMO to CE's "
                             "magnitude, so a weight only switches its term on (1 or -1) "
                             "or off (0); other magnitudes would be ignored")
        if ntl < 0 < emo:
            raise ValueError(f"{where}: in the PyTorch CLI this means NTL balanced "
                             "dynamically plus EMO with a static weight, which aes_jax does "
                             "not implement; use emo_weight=-1 (both balanced) or 0 (no "
                             "EMO), or weighting='static' with positive weights")
