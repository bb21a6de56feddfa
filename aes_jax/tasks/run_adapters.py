"""LoRA adapters read back from training runs (RUN/config.json + RUN/checkpoints), for
tasks and tools that put several runs' adapters on one base: PPO's policy (after an SFT
run) and reward (a verifier run), RLearner's `Explainer`.

A generator run's adapter is what its policy adds to the base: an SFT run's own; a DPO or
PPO run's own adapter concatenated after the SFT adapter it was trained on top of
(`models.lora.concat`), so it runs on the unmerged base the others share.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from aes_jax.models import lora as lora_lib
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec
from aes_jax.train.checkpoint import read_state_numpy


# The spec fields two runs must share for their adapters to fit one base.
SHARED_SPEC = ("model", "tiny_model", "dtype", "param_dtype", "scan_layers")


@dataclasses.dataclass(frozen=True)
class Adapter:
    cfg: lora_lib.LoraConfig
    lora: Any
    source: str = ""


def read_run_config(run_dir: str | Path) -> ml_collections.ConfigDict:
    """RUN/config.json (written by launch.train) as a ConfigDict."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no config.json; expected a training run "
                                "directory written by launch.train")
    return ml_collections.ConfigDict(json.loads(path.read_text()))


def check_same_base(config: Any, where: str, spec: CausalLMSpec, seed: int, other: str
                    ) -> None:
    """ValueError unless the run of `config` (at `where`) trained on the base `spec` and
    `seed` describe (`other` names that one): their adapters then share it."""
    theirs = CausalLMSpec.from_config(config)
    for field in SHARED_SPEC:
        if getattr(theirs, field) != getattr(spec, field):
            raise ValueError(f"{where} and {other} differ in {field} "
                             f"({getattr(theirs, field)!r} vs {getattr(spec, field)!r}): "
                             "their adapters cannot share one base")
    if spec.model == "tiny" and int(config.seed) != int(seed):
        raise ValueError(f"{where}: a tiny random base of seed {config.seed}, {other} has "
                         f"seed {seed}")


def run_trainable(run_dir: str | Path, step: str | int | None = None) -> dict:
    """The run's trainable tree (best checkpoint, else the last) as jax arrays."""
    _, state = read_state_numpy(run_dir, step)
    return jax.tree.map(jnp.asarray, state["trainable"])


def own_adapter(run_dir: str | Path, step: str | int | None = None,
                config: Any = None) -> Adapter:
    """The run's own LoRA adapter (its config.lora and checkpointed `lora` tree)."""
    config = config if config is not None else read_run_config(run_dir)
    if not config.get("use_lora", True):
        raise ValueError(f"{run_dir}: a full fine-tuning run has no adapter")
    return Adapter(lora_lib.LoraConfig(**dict(config.lora)),
                   run_trainable(run_dir, step)["lora"], str(run_dir))


def sft_adapter_of(config: Any, lm: CausalLM) -> Adapter | None:
    """The SFT adapter a DPO or PPO run was trained on top of, None if none."""
    block = config.get("dpo" if config["task"] == "dpo" else "ppo", {})
    if block.get("sft_run", ""):
        return own_adapter(block["sft_run"])
    if block.get("sft_adapter", ""):
        cfg, tree = lm.load_adapter(block["sft_adapter"])
        return Adapter(cfg, tree, str(block["sft_adapter"]))
    return None


def policy_adapter(run_dir: str | Path, lm: CausalLM, step: str | int | None = None,
                   config: Any = None) -> Adapter:
    """What a generator run (explain_sft, dpo, ppo) adds to the unmerged base."""
    config = config if config is not None else read_run_config(run_dir)
    adapter = own_adapter(run_dir, step, config)
    sft = sft_adapter_of(config, lm) if config["task"] in ("dpo", "ppo") else None
    if sft is None:
        return adapter
    cfg, tree = lora_lib.concat((sft.cfg, sft.lora), (adapter.cfg, adapter.lora),
                                scan_layers=lm.cfg.scan_layers)
    return Adapter(cfg, tree, f"{sft.source} + {run_dir}")
