"""RLearner at inference: generators and the verifier as LoRA trees on ONE frozen base.

`Explainer.from_runs` reads the base once and each run's adapter: an SFT run's, a DPO
run's (on top of the SFT adapter it was trained after: the two are concatenated into one
adapter on the unmerged base, `models.lora.concat`), the verifier's adapter and head.
Switching model is switching the `lora` tree; the base is never copied or merged.

* `explain`: one explanation per question (batched, jitted sampling), with the time spent;
* `score`: the verifier's rating of (question, explanation) pairs;
* `ilearner`: the original's K-round loop: generate, score, prompt again with the last
  explanation and its score, K times.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import jax
import numpy as np

from aes_jax import runs
from aes_jax.data import explanations as ex
from aes_jax.data.chat_rows import encode_prompt
from aes_jax.data.mcq import Mcq
from aes_jax.eval import generate as gen
from aes_jax.models import lora as lora_lib
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec
from aes_jax.tasks.run_adapters import (Adapter, check_same_base, policy_adapter,
                                       run_trainable)
from aes_jax.tasks.verifier_rating import VerifierRater

GENERATOR_TASKS = ("explain_sft", "dpo", "ppo")


@dataclasses.dataclass(frozen=True)
class Explanation:
    text: str
    seconds: float  # this question's share of its batch's wall time
    rounds: tuple[dict, ...] = ()  # ILearner: {"round", "explanation", "score"} per round


def ilearner_prompt(question_prompt: str, last: str, score: float) -> str:
    """The original's feedback turn: the question again, the last answer and its score."""
    return (f"{question_prompt}\n\nYour last explanation was:\n{last}\n\nIt was rated "
            f"{score:.1f} out of {ex.MAX_RATING:g}. Write a better explanation.")


class Explainer:
    def __init__(self, lm: CausalLM, params: Any, generators: dict[str, Adapter], *,
                 verifier: Adapter | None = None, verifier_head: Any = None,
                 max_prompt_tokens: int = 384, verifier_prompt_tokens: int = 512,
                 chat_template: bool = True):
        self.lm, self.params = lm, params
        self.generators = {"base": None, **generators}
        self.verifier, self.verifier_head = verifier, verifier_head
        self.max_prompt_tokens = max_prompt_tokens
        self.verifier_prompt_tokens = verifier_prompt_tokens
        self.chat_template = chat_template
        self._rater: VerifierRater | None = None
        self._compiled: set = set()

    @classmethod
    def from_runs(cls, generators: dict[str, str | Path], verifier_run: str | Path | None = None,
                  step: str | int | None = None, max_prompt_tokens: int | None = None
                  ) -> "Explainer":
        """`generators`: name -> run dir (explain_sft or dpo); one base for all of them.
        `max_prompt_tokens` defaults to the generator run's (ILearner's prompts, which
        carry the last explanation, may want more)."""
        named = {name: Path(d) for name, d in generators.items()}
        if verifier_run is not None:
            named["verifier"] = Path(verifier_run)
        if not named:
            raise ValueError("Explainer.from_runs: give at least one generator or a verifier run")
        configs = {name: runs.load_config(d) for name, d in named.items()}
        first_name, first = next(iter(configs.items()))
        spec = CausalLMSpec.from_config(first)
        for name, config in configs.items():
            want = "explain_verifier" if name == "verifier" else GENERATOR_TASKS
            if config.task not in want:
                raise ValueError(f"{named[name]}: a {config.task} run; expected {want}")
            check_same_base(config, str(named[name]), spec, first.seed,
                            str(named[first_name]))
        lm = CausalLM(spec)
        _, frozen = lm.init(jax.random.PRNGKey(first.seed))
        adapters = {name: policy_adapter(named[name], lm, step, configs[name])
                    for name in generators}
        verifier = head = None
        verifier_tokens = 512
        if verifier_run is not None:
            trained = run_trainable(named["verifier"], step)
            verifier = Adapter(lora_lib.LoraConfig(**dict(configs["verifier"].lora)),
                               trained["lora"], str(named["verifier"]))
            head = trained["head"]
            verifier_tokens = int(configs["verifier"].data.max_prompt_tokens)
        data = next((configs[n].data for n in generators), first.data)
        return cls(lm, frozen["params"], adapters, verifier=verifier, verifier_head=head,
                   max_prompt_tokens=int(max_prompt_tokens or data.max_prompt_tokens),
                   verifier_prompt_tokens=verifier_tokens,
                   chat_template=bool(data.get("chat_template", True)))

    # ------------------------------------------------------------------ generation
    def _prompt_ids(self, prompt: str, max_tokens: int) -> list[int]:
        return encode_prompt(prompt, self.lm.tokenizer, max_tokens, self.chat_template)[0].tolist()

    def generate(self, prompts: Sequence[str], generator: str, sampling: gen.SamplingConfig,
                 rng: jax.Array, batch_size: int = 8) -> list[Explanation]:
        """One completion per prompt. Batches are padded to `batch_size` rows and prompts to
        `max_prompt_tokens`, so one compile serves them all (done before the timed call);
        each prompt is charged its batch's wall time / its rows."""
        if generator not in self.generators:
            raise ValueError(f"no generator {generator!r} (have {', '.join(self.generators)})")
        adapter = self.generators[generator]
        cfg = self.lm.base_cfg if adapter is None else self.lm.base_cfg.replace(lora=adapter.cfg)
        lora = None if adapter is None else adapter.lora
        tok = self.lm.tokenizer
        stops = tuple(self.lm.cfg.stop_token_ids) or (int(tok.end_of_answer_id),)
        sampling = dataclasses.replace(sampling, stop_token_ids=stops,
                                       pad_token_id=int(tok.pad_id))
        out: list[Explanation] = []
        for start in range(0, len(prompts), batch_size):
            chunk = [self._prompt_ids(p, self.max_prompt_tokens)
                     for p in prompts[start:start + batch_size]]
            real = len(chunk)
            chunk += [chunk[0]] * (batch_size - real)
            ids, mask = gen.left_pad(chunk, int(tok.pad_id), width=self.max_prompt_tokens)
            rng, sub = jax.random.split(rng)
            # What jit compiles for: a new key is run once untimed (compile + run).
            key = (cfg, sampling, ids.shape,
                   tuple(x.shape for x in jax.tree.leaves(lora)) if lora is not None else ())
            if key not in self._compiled:
                jax.block_until_ready(gen.generate(cfg, self.params, ids, mask, rng=sub,
                                                   sampling=sampling, lora=lora).tokens)
                self._compiled.add(key)
            began = time.perf_counter()
            result = gen.generate(cfg, self.params, ids, mask, rng=sub, sampling=sampling,
                                  lora=lora)
            rows = gen.strip_after_stop(jax.device_get(result), stops)
            seconds = (time.perf_counter() - began) / real
            out += [Explanation(tok.decode(r).strip(), seconds) for r in rows[:real]]
        return out

    def explain(self, questions: Sequence[Mcq], generator: str, sampling: gen.SamplingConfig,
                rng: jax.Array, batch_size: int = 8) -> list[Explanation]:
        return self.generate([ex.generator_prompt(q) for q in questions], generator, sampling,
                             rng, batch_size)

    # ------------------------------------------------------------------ verifier
    def score(self, questions: Sequence[Mcq], explanations: Sequence[str],
              batch_size: int = 16) -> np.ndarray:
        """[N] verifier ratings (clipped to 0-5) of explanations[i] for questions[i]."""
        if self.verifier is None:
            raise ValueError("this Explainer has no verifier (give verifier_run)")
        if len(questions) != len(explanations):
            raise ValueError(f"{len(questions)} questions but {len(explanations)} explanations")
        if self._rater is None:
            self._rater = VerifierRater(self.lm.base_cfg, self.verifier.cfg, self.lm.tokenizer,
                                        self.verifier_prompt_tokens, self.chat_template,
                                        batch_size)
        return self._rater(self.params, self.verifier.lora, self.verifier_head, questions,
                           explanations)

    # ------------------------------------------------------------------ ILearner
    def ilearner(self, questions: Sequence[Mcq], k: int, generator: str,
                 sampling: gen.SamplingConfig, rng: jax.Array, batch_size: int = 8
                 ) -> list[Explanation]:
        """K rounds of generate -> verify -> re-prompt with the last score. The answer is the
        last round's explanation (the loop's output); every round is kept in `rounds`."""
        if k < 1:
            raise ValueError(f"ilearner k={k}: expected >= 1")
        base_prompts = [ex.generator_prompt(q) for q in questions]
        prompts = list(base_prompts)
        self.score(questions[:1], [""])  # compile the verifier outside the timed rounds
        history: list[list[dict]] = [[] for _ in questions]
        seconds = np.zeros(len(questions))
        latest: list[Explanation] = []
        for round_index in range(1, k + 1):
            rng, sub = jax.random.split(rng)
            began = time.perf_counter()
            latest = self.generate(prompts, generator, sampling, sub, batch_size)
            scores = self.score(questions, [e.text for e in latest])
            seconds += (time.perf_counter() - began) / max(len(questions), 1)
            for i, (e, s) in enumerate(zip(latest, scores)):
                history[i].append({"round": round_index, "explanation": e.text,
                                   "score": float(s)})
            prompts = [ilearner_prompt(p, e.text, float(s))
                       for p, e, s in zip(base_prompts, latest, scores)]
        return [Explanation(e.text, float(t), tuple(h))
                for e, t, h in zip(latest, seconds, history)]

