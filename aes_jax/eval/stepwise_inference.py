"""StepER's stepwise inference, batched over questions: retrieve k passages for the
question, an init step, up to `max_steps` - 2 expansion steps each re-querying the
retriever with the last reasoning step (a step that already says "So the answer is" ends
its question early), then an aggregation step; questions that finished drop out of the
next step's batch. The same loop serves a teacher (an LLM prompted step by step) and the
trained student. Baselines with the same prompts: `single` (one retrieval for the
question, then the aggregation step directly) and `none` (no passages at all).

Prompts are `data.stepwise.step_prompt`, the ones the student trains on; every batch is
padded to `batch_size` rows of `max_prompt_tokens`, so each mode compiles once.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax

from aes_jax.data.chat_rows import encode_prompt
from aes_jax.data.stepwise import ANSWER_PREFIX, Step, step_prompt
from aes_jax.eval import generate as gen
from aes_jax.eval.qa import extract_answer
from aes_jax.models.llama import LlamaConfig
from aes_jax.retrieval.base import Retriever

MODES = ("stepwise", "single", "none")


@dataclasses.dataclass
class Trace:
    question: str
    steps: list[Step] = dataclasses.field(default_factory=list)
    answer: str = ""
    seconds: float = 0.0  # this question's share of the batches it was in
    done: bool = False

    @property
    def reasoning(self) -> list[str]:
        return [s.output for s in self.steps if s.type != "agg"]


class StepwiseAnswerer:
    def __init__(self, cfg: LlamaConfig, params: Any, tokenizer: Any, retriever: Retriever, *,
                 k: int = 4, max_steps: int = 5, max_new_tokens: int = 48,
                 max_prompt_tokens: int = 768, batch_size: int = 8, chat_template: bool = True,
                 lora: Any = None):
        if max_steps < 2:
            raise ValueError(f"max_steps={max_steps}: expected >= 2 (init and aggregation)")
        self.cfg, self.params, self.tokenizer, self.retriever = cfg, params, tokenizer, retriever
        self.k, self.max_steps, self.batch_size = k, max_steps, batch_size
        self.max_prompt_tokens, self.chat_template, self.lora = (max_prompt_tokens,
                                                                 chat_template, lora)
        stops = tuple(cfg.stop_token_ids) or (int(tokenizer.end_of_answer_id),)
        self.sampling = gen.SamplingConfig(max_new_tokens=max_new_tokens, stop_token_ids=stops,
                                           pad_token_id=int(tokenizer.pad_id))

    def _generate(self, prompts: Sequence[str]) -> tuple[list[str], float]:
        """Greedy completions (first line each) and the wall seconds they took."""
        texts: list[str] = []
        began = time.perf_counter()
        for start in range(0, len(prompts), self.batch_size):
            chunk = [encode_prompt(p, self.tokenizer, self.max_prompt_tokens,
                                   self.chat_template)[0].tolist()
                     for p in prompts[start:start + self.batch_size]]
            real = len(chunk)
            chunk += [chunk[0]] * (self.batch_size - real)
            ids, mask = gen.left_pad(chunk, int(self.tokenizer.pad_id),
                                     width=self.max_prompt_tokens)
            out = jax.device_get(gen.generate(self.cfg, self.params, ids, mask,
                                              sampling=self.sampling, lora=self.lora))
            rows = gen.strip_after_stop(out, self.sampling.stop_token_ids)[:real]
            texts += [self.tokenizer.decode(r).strip().split("\n")[0].strip() for r in rows]
        return texts, time.perf_counter() - began

    def _retrieve(self, query: str) -> tuple[list[int], list[str]]:
        found = [i for i, _ in self.retriever.search(query, self.k)]
        return found, [self.retriever.passages[i] for i in found]

    def _run_step(self, traces: list[Trace], kind: str, queries: list[str]) -> list[str]:
        retrieved = [self._retrieve(q) if q else ([], []) for q in queries]
        prompts = [step_prompt(kind, t.question, t.reasoning, texts)
                   for t, (_, texts) in zip(traces, retrieved)]
        outputs, seconds = self._generate(prompts)
        for t, prompt, (found, _), out in zip(traces, prompts, retrieved, outputs):
            t.steps.append(Step(kind, prompt, out, tuple(found)))
            t.seconds += seconds / max(len(traces), 1)
        return outputs

    def answer(self, questions: Sequence[str], mode: str = "stepwise") -> list[Trace]:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: expected one of {', '.join(MODES)}")
        traces = [Trace(q) for q in questions]
        queries = {id(t): t.question for t in traces}
        if mode == "stepwise":
            for step in range(self.max_steps - 1):
                active = [t for t in traces if not t.done]
                if not active:
                    break
                outputs = self._run_step(active, "init" if step == 0 else "exp",
                                         [queries[id(t)] for t in active])
                for t, out in zip(active, outputs):
                    if ANSWER_PREFIX.lower().strip() in out.lower():
                        t.answer, t.done = extract_answer(out), True
                    queries[id(t)] = out
        rest = [t for t in traces if not t.done]
        if rest:
            outputs = self._run_step(rest, "agg", [queries[id(t)] if mode != "none" else ""
                                                   for t in rest])
            for t, out in zip(rest, outputs):
                t.answer, t.done = extract_answer(out), True
        return traces
