"""RLearner's PPO stage: the explanation generator samples explanations for questions, the
verifier (optionally an NLI model, a length penalty) scores them, and the policy is
updated online against a KL penalty to the SFT model (`train/rl_loop.py` trains it).

Everything runs on ONE unmerged base: the policy is the SFT adapter (frozen, from
`sft_run` or `sft_adapter`) concatenated with a fresh PPO adapter (`models.lora.concat`);
the reference is the SFT adapter alone (the PPO adapter off), the verifier its own
adapter + head. The critic is a linear value head on the policy's last hidden states
(`critic="head"`, zero-initialised), or a separate LoRA critic on the base with its own
head (`critic="lora"`); GRPO runs without one (`critic="none"`).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from aes_jax.data import explanations as ex
from aes_jax.data import pipeline
from aes_jax.data.chat_rows import encode_prompt
from aes_jax.data.mcq import Mcq
from aes_jax.eval import generate as gen
from aes_jax.interop.heads import save_head
from aes_jax.models import lora as lora_lib
from aes_jax.models import siamese
from aes_jax.models.llama import Llama, init_lora, logical_axes
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec
from aes_jax.tasks import run_adapters
from aes_jax.tasks.verifier_rating import VerifierRater
from aes_jax.train.rl_config import RLConfig

log = logging.getLogger(__name__)

CRITICS = ("head", "lora", "none")
VALUE_HEAD_FORMAT = "aes_jax.ppo_value_head"


@dataclasses.dataclass(frozen=True)
class PpoOptions:
    """config.data.*, config.sampling.*, config.ppo.*, config.reward.*, validated once."""

    questions_file: str = ""  # bank JSONL or the original's JSON; "" = the demo bank
    eval_file: str = ""  # "" = the demo bank's held-out questions
    demo_test_fraction: float = 0.2
    split_seed: int = 0
    demo_questions: int = 0  # use the first N training questions (0 = all)
    eval_questions: int = 16  # held-out questions per evaluation (0 = all)
    max_prompt_tokens: int = 384
    chat_template: bool = True
    max_new_tokens: int = 96
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    sft_run: str = ""  # an explain_sft run dir: its adapter is the policy's start
    sft_adapter: str = ""  # or a PEFT adapter dir
    critic: str = "head"
    verifier_run: str = ""  # an explain_verifier run dir on the same base
    untrained_verifier: bool = False  # tests only: a random verifier head, no run
    verifier_prompt_tokens: int = 0  # 0 = the verifier run's data.max_prompt_tokens
    nli_model: str = ""  # a local HF NLI cross-encoder dir; "" = no NLI term
    nli_weight: float = 0.0  # reward += weight x P(explanation entails the answer)
    length_penalty: float = 0.0  # reward -= coef x tokens beyond target / target
    target_tokens: int = 0
    missing_eos_penalty: float = 0.0  # reward -= this when the completion never stopped

    def __post_init__(self):
        if self.critic not in CRITICS:
            raise ValueError(f"config.ppo.critic={self.critic!r}: expected one of "
                             f"{', '.join(CRITICS)}")
        if self.sft_run and self.sft_adapter:
            raise ValueError("config.ppo: give sft_run or sft_adapter, not both")
        if not self.verifier_run and not self.untrained_verifier:
            raise ValueError("config.reward.verifier_run is required (an explain_verifier run "
                             "dir on the same base); untrained_verifier=True is for tests")
        if self.nli_weight and not self.nli_model:
            raise ValueError("config.reward.nli_weight needs config.reward.nli_model")
        if self.length_penalty and self.target_tokens < 1:
            raise ValueError("config.reward.length_penalty needs config.reward.target_tokens")
        gen.SamplingConfig(max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                           top_k=self.top_k, top_p=self.top_p,
                           repetition_penalty=self.repetition_penalty)  # validates them

    @classmethod
    def from_config(cls, config: Any) -> "PpoOptions":
        values = {}
        for block in ("data", "sampling", "ppo", "reward"):
            values.update(dict(config.get(block, {})))
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)
                      if f.name in values})


class PpoTask:
    def __init__(self, config: Any, workdir: str | Path):
        self.options = o = PpoOptions.from_config(config)
        self.lm = CausalLM(CausalLMSpec.from_config(config))
        if not self.lm.uses_lora:
            raise ValueError("the PPO task trains a LoRA policy (config.use_lora=True): its "
                             "reference is the base without the PPO adapter")
        self.workdir = Path(workdir)
        self.seed = int(config.seed)
        rl = RLConfig.from_config(config)  # the loop's settings, checked before anything runs
        rl.check_batch(int(config.global_batch_size), int(config.get("grad_accum_steps", 1)))
        if rl.advantage == "gae" and o.critic == "none":
            raise ValueError("config.rl.advantage=gae needs a critic (config.ppo.critic=head "
                             "or lora); GRPO (config.rl.advantage=grpo) runs without one")
        # The runs it builds on must exist and share its base: fail before any training.
        for flag, run, task in (("ppo.sft_run", o.sft_run, "explain_sft"),
                                ("reward.verifier_run", o.verifier_run, "explain_verifier")):
            if not run:
                continue
            if not (Path(run) / "config.json").is_file():
                raise FileNotFoundError(f"config.{flag}={run}: no training run there (train "
                                        f"a {task} run into it first, see README)")
            theirs = run_adapters.read_run_config(run)
            if theirs.task != task:
                raise ValueError(f"config.{flag}={run}: a {theirs.task} run; expected {task}")
            run_adapters.check_same_base(theirs, run, self.lm.spec, self.seed, "this PPO run")
        self.sampling = gen.SamplingConfig(
            max_new_tokens=o.max_new_tokens, temperature=o.temperature, top_k=o.top_k,
            top_p=o.top_p, repetition_penalty=o.repetition_penalty,
            stop_token_ids=tuple(self.lm.cfg.stop_token_ids)
            or (int(self.lm.tokenizer.end_of_answer_id),),
            pad_token_id=int(self.lm.tokenizer.pad_id))
        self.sft: run_adapters.Adapter | None = None
        # Set by init from the verifier run (its adapter's shape, its input length).
        self._verifier_cfg: lora_lib.LoraConfig | None = None
        self._verifier_tokens = int(o.verifier_prompt_tokens or 512)
        self._verifier: VerifierRater | None = None
        self._nli = None

    # ------------------------------------------------------------------ data
    @functools.cached_property
    def questions(self) -> dict[str, list[Mcq]]:
        o = self.options
        train = ex.load_questions(o.questions_file or None, "train", o.demo_test_fraction,
                                  o.split_seed)
        evals = ex.load_questions(o.eval_file or None, "test", o.demo_test_fraction,
                                  o.split_seed)
        if o.demo_questions:
            train = train[:o.demo_questions]
        if o.eval_questions:
            evals = evals[:o.eval_questions]
        return {"train": train, "eval": evals}

    @functools.cached_property
    def prompt_records(self) -> dict[str, list[dict[str, np.ndarray]]]:
        """{split: [prompt_ids / prompt_mask (left-padded), question index]}; the index
        counts the training questions first, then the held-out ones."""
        o, tok = self.options, self.lm.tokenizer
        out, offset = {}, 0
        for split in ("train", "eval"):
            out[split] = []
            for i, q in enumerate(self.questions[split]):
                ids = encode_prompt(ex.generator_prompt(q), tok, o.max_prompt_tokens,
                                    o.chat_template)[0]
                padded, mask = gen.left_pad([ids.tolist()], int(tok.pad_id),
                                            width=o.max_prompt_tokens)
                out[split].append({"prompt_ids": padded[0], "prompt_mask": mask[0],
                                   "question": np.int32(offset + i)})
            offset += len(self.questions[split])
        return out

    def _question(self, index: int) -> Mcq:
        n_train = len(self.questions["train"])
        return (self.questions["train"][index] if index < n_train
                else self.questions["eval"][index - n_train])

    def prompt_iterator(self, global_batch_size: int, seed: int, process_index: int,
                        process_count: int):
        return pipeline.train_iterator(self.prompt_records["train"],
                                       global_batch_size=global_batch_size, seed=seed,
                                       process_index=process_index,
                                       process_count=process_count)

    def eval_prompts(self, batch_size: int):
        return pipeline.eval_batches(self.prompt_records["eval"], batch_size=batch_size)

    # ------------------------------------------------------------------ model
    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        o = self.options
        # The base from `rng` itself, as the SFT and verifier tasks draw it (tiny bases match).
        trainable, frozen = self.lm.init(rng)
        if o.sft_run or o.sft_adapter:
            self.sft = run_adapters.sft_adapter_of(
                {"task": "ppo", "ppo": {"sft_run": o.sft_run, "sft_adapter": o.sft_adapter}},
                self.lm)
            frozen["sft_lora"] = self.sft.lora
        hidden = self.lm.cfg.hidden_size
        if o.critic != "none":
            trainable["value_head"] = {"kernel": jnp.zeros((hidden, 1), jnp.float32),
                                       "bias": jnp.zeros((1,), jnp.float32)}
        if o.critic == "lora":
            trainable["critic_lora"] = init_lora(self.lm.cfg, jax.random.fold_in(rng, 3))
        frozen["verifier"] = self._verifier_tree(rng)
        return trainable, frozen

    def _verifier_tree(self, rng: jax.Array) -> dict:
        o = self.options
        if not o.verifier_run:  # tests: the bare base and a random head
            hidden = self.lm.cfg.hidden_size
            head = siamese.init_regression_head(jax.random.fold_in(rng, 5), hidden, hidden // 2)
            return {"head": head}
        config = run_adapters.read_run_config(o.verifier_run)
        trainable = run_adapters.run_trainable(o.verifier_run)
        self._verifier_cfg = lora_lib.LoraConfig(**dict(config.lora))
        self._verifier_tokens = int(o.verifier_prompt_tokens or config.data.max_prompt_tokens)
        return {"lora": trainable["lora"], "head": trainable["head"]}

    def logical_axes(self) -> tuple[dict, dict]:
        trainable, frozen = self.lm.logical_axes()
        if self.options.critic != "none":
            trainable["value_head"] = {"kernel": P(None, None), "bias": P(None)}
        if self.options.critic == "lora":
            trainable["critic_lora"] = logical_axes(self.lm.cfg, "lora")
        if self.options.sft_run or self.options.sft_adapter:
            frozen["sft_lora"] = logical_axes(self.lm.base_cfg.replace(lora=self.sft.cfg), "lora")
        verifier = {"head": siamese.regression_head_axes()}
        if self.options.verifier_run:
            cfg = self.lm.base_cfg.replace(lora=self._verifier_cfg)
            verifier["lora"] = logical_axes(cfg, "lora")
        frozen["verifier"] = verifier
        return trainable, frozen

    # ------------------------------------------------------------------ policy
    def _policy_adapter(self, trainable: Any, frozen: Any) -> tuple[lora_lib.LoraConfig, Any]:
        """The SFT adapter (frozen) and the PPO adapter as one, or the PPO adapter alone."""
        if self.sft is None:
            return self.lm.cfg.lora, trainable["lora"]
        return lora_lib.concat((self.sft.cfg, frozen["sft_lora"]),
                               (self.lm.cfg.lora, trainable["lora"]),
                               scan_layers=self.lm.cfg.scan_layers)

    def _forward(self, cfg, lora, params, ids, mask, *, hidden: bool):
        variables = {"params": params} if lora is None else {"params": params, "lora": lora}
        return Llama(self.lm.base_cfg.replace(lora=cfg)).apply(
            variables, ids, attention_mask=mask, return_hidden=True, compute_logits=not hidden)

    def _values(self, trainable: Any, hidden: jax.Array) -> jax.Array:
        head = trainable["value_head"]
        return (hidden.astype(jnp.float32) @ head["kernel"])[..., 0] + head["bias"][0]

    def policy(self, trainable, frozen, input_ids, attention_mask):
        cfg, lora = self._policy_adapter(trainable, frozen)
        out = self._forward(cfg, lora, frozen["params"], input_ids, attention_mask,
                            hidden=False)
        critic = self.options.critic
        if critic == "none":
            return out.logits, jnp.zeros(input_ids.shape, jnp.float32)
        hidden = out.hidden
        if critic == "lora":
            hidden = self._forward(self.lm.cfg.lora, trainable["critic_lora"], frozen["params"],
                                   input_ids, attention_mask, hidden=True).hidden
        return out.logits, self._values(trainable, hidden)

    def reference_logits(self, trainable, frozen, input_ids, attention_mask):
        del trainable
        cfg, lora = (None, None) if self.sft is None else (self.sft.cfg, frozen["sft_lora"])
        return jax.lax.stop_gradient(self._forward(cfg, lora, frozen["params"], input_ids,
                                                   attention_mask, hidden=False).logits)

    def rollout(self, trainable, frozen, prompts, rng, greedy: bool = False):
        cfg, lora = self._policy_adapter(trainable, frozen)
        sampling = (dataclasses.replace(self.sampling, temperature=0.0) if greedy
                    else self.sampling)
        out = gen.generate(self.lm.base_cfg.replace(lora=cfg), frozen["params"],
                           prompts["prompt_ids"], prompts["prompt_mask"], rng=rng,
                           sampling=sampling, lora=lora)
        return out.tokens, out.lengths

    def sampling_temperature(self) -> float:
        return self.sampling.temperature

    def has_critic(self) -> bool:
        return self.options.critic != "none"

    # ------------------------------------------------------------------ reward
    def _rater(self) -> VerifierRater:
        if self._verifier is None:
            self._verifier = VerifierRater(self.lm.base_cfg, self._verifier_cfg,
                                           self.lm.tokenizer, self._verifier_tokens,
                                           self.options.chat_template)
        return self._verifier

    def decode(self, tokens: np.ndarray, lengths: np.ndarray) -> list[str]:
        rows = gen.strip_after_stop(gen.GenerateOutput(tokens, lengths),
                                    self.sampling.stop_token_ids)
        return [self.lm.tokenizer.decode(r).strip() for r in rows]

    def score(self, frozen, prompts, tokens, lengths):
        o = self.options
        texts = self.decode(tokens, lengths)
        questions = [self._question(int(i)) for i in np.asarray(prompts["question"])]
        verifier = frozen["verifier"]
        parts = {"verifier": self._rater()(frozen["params"], verifier.get("lora"),
                                           verifier["head"], questions, texts)}
        reward = parts["verifier"].astype(np.float64)
        if o.nli_weight:
            if self._nli is None:
                from aes_jax.interop.torch_ref.text_scorers import NliScorer
                self._nli = NliScorer(o.nli_model)
            parts["nli"] = self._nli(texts, [q.options[q.answer] for q in questions])
            reward = reward + o.nli_weight * parts["nli"]
        n = np.asarray(lengths, np.float64)
        if o.length_penalty:
            parts["length_penalty"] = o.length_penalty * np.maximum(
                0.0, n - o.target_tokens) / o.target_tokens
            reward = reward - parts["length_penalty"]
        if o.missing_eos_penalty:
            stopped = np.isin(np.asarray(tokens)[np.arange(len(n)), np.maximum(n - 1, 0)
                                                 .astype(int)], self.sampling.stop_token_ids)
            parts["missing_eos"] = (~stopped).astype(np.float64)
            reward = reward - o.missing_eos_penalty * parts["missing_eos"]
        return reward.astype(np.float32), parts, texts

    # ------------------------------------------------------------------ engine accounting
    def flops_per_token(self) -> float:
        # An update is the policy's forward + backward (x2 with a LoRA critic).
        per = self.lm.flops_per_token(self.options.max_prompt_tokens + self.options.max_new_tokens)
        return per * (2.0 if self.options.critic == "lora" else 1.0)

    # ------------------------------------------------------------------ reporting
    def describe(self) -> dict[str, Any]:
        o = self.options
        reward = ["verifier " + (o.verifier_run or "(untrained, tests)")]
        if o.nli_weight:
            reward.append(f"{o.nli_weight} x NLI {o.nli_model}")
        if o.length_penalty:
            reward.append(f"- {o.length_penalty} x tokens over {o.target_tokens}")
        if o.missing_eos_penalty:
            reward.append(f"- {o.missing_eos_penalty} without a stop")
        s = self.sampling
        return {"model": self.lm.describe(),
                "policy": f"SFT {o.sft_run or o.sft_adapter} + PPO adapter"
                          if (o.sft_run or o.sft_adapter) else "base + PPO adapter",
                "critic": {"head": "value head on the policy", "lora": "LoRA critic + head",
                           "none": "none"}[o.critic],
                "questions": f"{len(self.questions['train'])} train / "
                             f"{len(self.questions['eval'])} eval "
                             f"({o.questions_file or 'demo bank'})",
                "sampling": f"{s.max_new_tokens} new tokens, temperature {s.temperature}, "
                            f"top-k {s.top_k}, top-p {s.top_p}",
                "reward": ", ".join(reward)}

    def headline_metrics(self) -> tuple[str, ...]:
        return ("reward_mean", "verifier_mean", "response_length")

    def best_metric(self) -> tuple[str, str]:
        return "eval_reward_mean", "max"

    # ------------------------------------------------------------------ export
    def export(self, trainable: dict, frozen: dict, out_dir: str | Path) -> list[Path]:
        """The policy (SFT + PPO adapters as one) as a PEFT adapter on the base, the merged
        model, and the value head; a random tiny base is written as `base/`."""
        out = Path(out_dir)
        written = self.lm.export(trainable, frozen, out,
                                 adapter=self._policy_adapter(trainable, frozen))
        if "value_head" in trainable:
            written.append(save_head({"value": trainable["value_head"]},
                                     out / "value_head.safetensors", VALUE_HEAD_FORMAT))
        return written
