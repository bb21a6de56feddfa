"""One module per system. A task supplies init, a pure loss, its data and its evaluation
(the contract: `aes_jax.train.task`); `aes_jax.train.loop.train(task, ...)` does the rest.
`build(config, workdir)` makes the task a config names: a registered name, or
"package.module:ClassName" for a task defined outside this package."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from aes_jax.train.task import Task

REGISTRY = {
    "lm_lora": "aes_jax.tasks.lm_lora:LMLoraTask",
    "trm_aes": "aes_jax.tasks.trm_aes:TRMAesTask",
    "llama_aes": "aes_jax.tasks.llama_aes:LlamaAesTask",
    "pair2score": "aes_jax.tasks.pair2score:Pair2ScoreTask",
    "dpo": "aes_jax.tasks.dpo:DpoTask",
    "explain_sft": "aes_jax.tasks.explain_sft:ExplainSftTask",
    "explain_verifier": "aes_jax.tasks.explain_verifier:ExplainVerifierTask",
    "ppo": "aes_jax.tasks.ppo:PpoTask",
    "steper": "aes_jax.tasks.steper:SteperTask",
}


def build(config: Any, workdir: str | Path) -> Task:
    """Cheap: tasks read configs, manifests and tokenizers here, never model weights or a
    whole training set (those wait for `init` and the iterators)."""
    name = config.task
    target = REGISTRY.get(name, name)
    if ":" not in target:
        raise ValueError(f"config.task={name!r}: unknown task (known: {', '.join(REGISTRY)}; "
                         "or give 'package.module:ClassName')")
    module_name, class_name = target.split(":", 1)
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"config.task={name!r}: cannot import {target} ({err})") from err
    return cls(config, workdir)
