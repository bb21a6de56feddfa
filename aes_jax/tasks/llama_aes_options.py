"""LLaMA-AES options, read from the config and validated once (the flags keep their names:
--config.ntl_weight, --config.emo_weight, --config.data.dir, ...)."""

from __future__ import annotations

import dataclasses
from typing import Any

WEIGHTINGS = ("auto", "static", "dynamic", "uncertainty")


@dataclasses.dataclass(frozen=True)
class MtlData:
    dir: str = ""  # a `launch.build_dataset --format=mtl` dir; "" = the synthetic demo
    demo_essays: int = 240
    eval_split: str = "dev"
    limit_train: int = 0  # only the first N train examples; 0 = all
    limit_eval: int = 0  # only the first N eval_split examples; 0 = all
    seq_len: int = 768  # longest prompt + answer; longer essays are shortened (counted)


@dataclasses.dataclass(frozen=True)
class LlamaAesOptions:
    data: MtlData = MtlData()
    seed: int = 0
    mtl: bool = True  # answer = scores + feedback; False = the score line only
    train_ratio: float = 1.0
    ntl_weight: float = 1.0  # 0 = off
    ntl_type: str = "mse"  # "mse" | "was"
    emo_weight: float = -1.0  # 0 = off; negative = dynamic weighting
    emo_type: str = "topk"  # "topk" | "full"
    emo_topk: int = 64
    emo_normalize: bool = True
    weighting: str = "auto"
    max_new_tokens: int = 128  # decoding for launch.score / launch.self_consistency

    def __post_init__(self):
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"config.weighting={self.weighting!r}: expected one of {WEIGHTINGS}")
        if self.ntl_type not in ("mse", "was"):
            raise ValueError(f"config.ntl_type={self.ntl_type!r}: expected 'mse' or 'was'")
        if self.emo_type not in ("topk", "full"):
            raise ValueError(f"config.emo_type={self.emo_type!r}: expected 'topk' or 'full'")
        if self.weighting in ("static", "uncertainty") and min(self.ntl_weight,
                                                               self.emo_weight) < 0:
            raise ValueError(f"config.weighting={self.weighting!r} with a negative weight "
                             f"(ntl {self.ntl_weight}, emo {self.emo_weight}): a negative "
                             "emo_weight means dynamic weighting; use weighting='auto'")
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
        if self.weighting != "auto":
            return self.weighting
        return "dynamic" if self.emo_weight < 0 else "static"

    @property
    def active_terms(self) -> tuple[str, ...]:
        """The loss terms this configuration computes (CE always)."""
        active = ["ce"]
        if self.ntl_weight != 0:
            active.append("ntl")
        if self.mtl and self.emo_weight != 0:
            active.append("emo")
        return tuple(active)
