"""StepER's LLM teacher for `data.stepwise_dataset.build_stepwise`: a local LLaMA (HF dir
or .gguf) prompted step by step with BM25 passages (`eval.stepwise_inference`, greedy)."""

from __future__ import annotations

from typing import Any, Sequence

import jax

from aes_jax.data.stepwise_dataset import BuildOptions, TeacherFactory
from aes_jax.data.stepwise_dataset import build_stepwise as _build
from aes_jax.eval import qa
from aes_jax.eval.stepwise_inference import StepwiseAnswerer
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec
from aes_jax.retrieval.bm25 import BM25


def llm_teacher(options: BuildOptions, index: BM25) -> StepwiseAnswerer:
    lm = CausalLM(CausalLMSpec(model=options.teacher, use_lora=False))
    trainable, _ = lm.init(jax.random.PRNGKey(0))
    return StepwiseAnswerer(lm.base_cfg, trainable["params"], lm.tokenizer, index,
                            k=options.k, max_steps=options.max_steps,
                            max_new_tokens=options.max_new_tokens,
                            max_prompt_tokens=options.max_prompt_tokens,
                            batch_size=options.batch_size)


def build_stepwise(inputs: Sequence[Any], out_dir: Any, options: BuildOptions,
                   passages_file: Any = None, teacher: TeacherFactory = llm_teacher
                   ) -> dict[str, Any]:
    """`data.stepwise_dataset.build_stepwise` with the LLM teacher for a non-oracle run,
    keeping a trace only when its answer matches the gold one (official normalisation)."""
    return _build(inputs, out_dir, options, passages_file, teacher=teacher,
                  answers_match=qa.exact_match)
