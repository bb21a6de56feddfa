"""The verifier as a scorer: (question, explanation) pairs -> ratings 0-5, from a verifier
adapter and head on a base shared with other adapters. PPO's reward and RLearner's
evaluation (`eval.explainer`) rate through this one function."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.data import explanations as ex
from aes_jax.data.chat_rows import encode_prompt
from aes_jax.data.mcq import Mcq
from aes_jax.models import lora as lora_lib
from aes_jax.models.llama import Llama, LlamaConfig
from aes_jax.tasks.explain_verifier import prompt_row, rate_hidden


class VerifierRater:
    """`rater(params, lora, head, questions, explanations)` -> [N] ratings clipped to 0-5.
    Rows are right-padded to `prompt_tokens`, batches to `batch_size`: one compile."""

    def __init__(self, base_cfg: LlamaConfig, lora_cfg: lora_lib.LoraConfig | None,
                 tokenizer: Any, prompt_tokens: int, chat_template: bool = True,
                 batch_size: int = 16):
        self.tokenizer, self.prompt_tokens = tokenizer, prompt_tokens
        self.chat_template, self.batch_size = chat_template, batch_size
        model = Llama(base_cfg.replace(lora=lora_cfg))

        def rate(params, lora, head, ids, mask):
            variables = {"params": params} if lora is None else {"params": params, "lora": lora}
            out = model.apply(variables, ids, attention_mask=mask, return_hidden=True,
                              compute_logits=False)
            return rate_hidden(out.hidden, mask, head)

        self._rate = jax.jit(rate)

    def rows(self, questions: Sequence[Mcq], explanations: Sequence[str]) -> dict:
        """The verifier's input rows ("way 2": question, options, explanation)."""
        rows = [prompt_row(encode_prompt(ex.verifier_prompt(q, e), self.tokenizer,
                                         self.prompt_tokens, self.chat_template)[0],
                           self.prompt_tokens)
                for q, e in zip(questions, explanations)]
        return {k: np.stack([r[k] for r in rows]) for k in ("input_ids", "attention_mask")}

    def __call__(self, params: Any, lora: Any, head: Any, questions: Sequence[Mcq],
                 explanations: Sequence[str]) -> np.ndarray:
        if len(questions) != len(explanations):
            raise ValueError(f"{len(questions)} questions but {len(explanations)} explanations")
        out = []
        for start in range(0, len(questions), self.batch_size):
            rows = self.rows(questions[start:start + self.batch_size],
                             explanations[start:start + self.batch_size])
            real = len(rows["input_ids"])
            pad = self.batch_size - real
            ids, mask = (np.concatenate([rows[k], np.repeat(rows[k][:1], pad, axis=0)])
                         for k in ("input_ids", "attention_mask"))
            got = self._rate(params, lora, head, jnp.asarray(ids), jnp.asarray(mask))
            out.append(np.asarray(got)[:real])
        scores = np.concatenate(out) if out else np.zeros(0, np.float32)
        return np.clip(scores, 0.0, ex.MAX_RATING)
