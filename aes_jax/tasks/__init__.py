"""One module per system. A task supplies init, a pure loss, its data and its evaluation;
`aes_jax.train.loop` does the rest. `build(config)` picks the task named in the config."""

from __future__ import annotations

from typing import Any


def build(config: Any, workdir: str):
    name = config.task
    if name == "lm_lora":
        from aes_jax.tasks.lm_lora import LMLoraTask

        return LMLoraTask(config, workdir)
    if name == "trm_aes":
        from aes_jax.tasks.trm_aes import TRMAesTask

        return TRMAesTask(config, workdir)
    if name == "llama_aes":
        from aes_jax.tasks.llama_aes import LlamaAesTask

        return LlamaAesTask(config, workdir)
    raise ValueError(f"config.task={name!r}: unknown task (known: lm_lora, trm_aes, llama_aes)")
