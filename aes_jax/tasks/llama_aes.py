"""LLaMA-AES: an instruction LLaMA + LoRA answers an essay with its trait scores as single
digits, optionally followed by feedback, trained with CE + number-token loss + EMO.

Losses, per batch (masks come from `aes_jax.data.prompts.training_arrays`):
  CE   over every answer token (the prompt is masked out),
  NTL  over the score-digit tokens (`ntl_type`: "mse" expected value, "was" W1 distance),
  EMO  over the feedback tokens (only when `mtl` and the data carries feedback),
combined by `weighting`: "static" (CE + ntl_weight*NTL + emo_weight*EMO), "dynamic"
(0.5 * (CE + sg(CE / aux) * aux), aux = NTL + EMO; chosen by a negative emo_weight, as in
the PyTorch CLI) or "uncertainty" (learned log-variances). Evaluation during training is
teacher-forced (one forward pass: the expected digit at each gold score position);
free generation (greedy, expected-score, self-consistency) lives in `eval/llm_scoring.py`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from aes_jax.data import prompts
from aes_jax.data.mtl_dataset import build_mtl
from aes_jax.eval import metrics
from aes_jax.losses import emo as emo_lib
from aes_jax.losses import number_tokens, weighting
from aes_jax.losses.lm import masked_cross_entropy, token_nll
from aes_jax.tasks.base import mean_from_sums
from aes_jax.tasks.lm_lora import LMLoraTask

log = logging.getLogger(__name__)

WEIGHTINGS = ("auto", "static", "dynamic", "uncertainty")


def build_demo_dataset(out_dir: Path, num_essays: int) -> Path:
    """The synthetic ELLIPSE-layout demo corpus (rubric feedback) as an mtl dataset."""
    if not (out_dir / "manifest.json").is_file():
        build_mtl(None, out_dir, feedback="rubric", demo=True, overwrite=True,
                  demo_essays=num_essays)
        log.info("built the synthetic demo dataset in %s", out_dir)
    return out_dir


class LlamaAesTask(LMLoraTask):
    """LoRA (or full) fine-tuning of a LLaMA checkpoint on score(-and-feedback) answers."""

    def __init__(self, config, workdir: str | Path):
        if config.weighting not in WEIGHTINGS:
            raise ValueError(f"config.weighting={config.weighting!r}: expected one of {WEIGHTINGS}")
        if config.ntl_type not in ("mse", "was"):
            raise ValueError(f"config.ntl_type={config.ntl_type!r}: expected 'mse' or 'was'")
        if config.emo_type not in ("topk", "full"):
            raise ValueError(f"config.emo_type={config.emo_type!r}: expected 'topk' or 'full'")
        if config.weighting in ("static", "uncertainty") and min(config.ntl_weight,
                                                                 config.emo_weight) < 0:
            raise ValueError(f"config.weighting={config.weighting!r} with a negative weight "
                             f"(ntl {config.ntl_weight}, emo {config.emo_weight}): a negative "
                             "emo_weight means dynamic weighting; use weighting='auto'")
        if not 0.0 < config.train_ratio <= 1.0:
            raise ValueError(f"config.train_ratio={config.train_ratio}: expected (0, 1]")
        super().__init__(config, workdir)

    # ------------------------------------------------------------------ data
    @property
    def weighting(self) -> str:
        if self.config.weighting != "auto":
            return self.config.weighting
        return "dynamic" if self.config.emo_weight < 0 else "static"

    def _sources(self, workdir: Path):
        c, d = self.config, self.config.data
        data_dir = (Path(d.dir) if d.dir else
                    build_demo_dataset(workdir / "data" / "mtl_demo", d.demo_essays))
        self.data_dir = data_dir
        self.manifest, self.splits = prompts.load_mtl_dir(data_dir)
        self.traits = list(self.manifest["traits"])
        self.codecs = [prompts.ScoreCodec.from_dict(x) for x in self.manifest["codecs"]]
        ids, values = number_tokens.digit_token_ids(self.tokenizer.encode,
                                                    self.model_cfg.vocab_size)
        self.digit_ids, self.digit_values = ids, values
        train = self.splits["train"][:d.get("limit_train", 0) or None]
        train = self._subset(train, c.train_ratio, c.seed)
        self.train_encoded = self.encode(train, "train")
        evals = self.splits[d.eval_split][:d.get("limit_eval", 0) or None]
        self.eval_encoded = self.encode(evals, d.eval_split)
        self.fallback_digits = self._mode_digits(self.train_encoded)
        log.info("LLaMA-AES on %s: traits %s, %d train (train_ratio %.2f) / %d %s examples, "
                 "seq_len %d, weighting %s", data_dir, self.traits, len(self.train_encoded),
                 c.train_ratio, len(self.eval_encoded), d.eval_split, d.seq_len, self.weighting)
        return self.train_encoded, self.eval_encoded

    @staticmethod
    def _subset(examples: list, ratio: float, seed: int) -> list:
        """A seeded `ratio` of the training examples (the original CLI's --train_ratio)."""
        if ratio >= 1.0:
            return list(examples)
        n = max(1, int(round(len(examples) * ratio)))
        keep = np.sort(np.random.default_rng(seed).permutation(len(examples))[:n])
        return [examples[i] for i in keep]

    def _answer(self, example: prompts.MtlExample) -> prompts.MtlExample:
        """Score-only training (mtl=False) keeps just the first line of the answer."""
        if self.config.mtl:
            return example
        return dataclasses.replace(example, output=example.output.split("\n", 1)[0])

    def encode(self, examples: list, split: str) -> list[prompts.Encoded]:
        """MtlExamples -> Encoded (prompt/answer ids, digit positions, feedback mask);
        essays are shortened (counted) when prompt + answer exceed seq_len + 1 tokens."""
        out, truncated = [], 0
        for ex in examples:
            enc = prompts.encode_example(self._answer(ex), self.tokenizer, self.codecs,
                                         max_tokens=self.config.data.seq_len + 1,
                                         essay=ex.essay)
            truncated += enc.truncated_words > 0
            out.append(enc)
        if truncated:
            log.warning("%s: %d of %d essays shortened to fit seq_len=%d", split, truncated,
                        len(examples), self.config.data.seq_len)
        return out

    def _mode_digits(self, encoded: list[prompts.Encoded]) -> np.ndarray:
        """Per trait, the most frequent training digit: the documented parse-failure fallback."""
        digits = np.stack([e.digit_value for e in encoded]).astype(np.int64)
        return np.array([np.bincount(digits[:, k]).argmax() for k in range(digits.shape[1])])

    def _example(self, enc: prompts.Encoded) -> dict:
        arrays = prompts.training_arrays(enc, self.config.data.seq_len)
        real = len(enc.prompt_ids) + len(enc.output_ids) - 1
        arrays["token_mask"] = np.arange(self.config.data.seq_len) < real
        return arrays

    def record_fn(self):
        return self._example

    def tokens_in_batch(self, batch) -> int:
        return int(np.asarray(batch["token_mask"]).sum())

    # ------------------------------------------------------------------ scoring
    def scoring_inputs(self, split: str, limit: int = 0) -> list:
        """The prompts (and gold digits) of a dataset split, for free generation."""
        from aes_jax.eval.llm_scoring import inputs_from_encoded

        if split not in self.splits:
            raise ValueError(f"{self.data_dir}: no split {split!r} (have {sorted(self.splits)})")
        examples = self.splits[split][:limit] if limit else self.splits[split]
        reuse = split == self.config.data.eval_split and len(examples) <= len(self.eval_encoded)
        encoded = self.eval_encoded[:len(examples)] if reuse else self.encode(examples, split)
        return inputs_from_encoded(examples, encoded)

    def jsonl_inputs(self, path: str | Path, limit: int = 0) -> list:
        """Prompts of a JSONL file in the PyTorch original's format. An example whose output
        holds a score line is encoded exactly like training data (gold known, long essays
        shortened); one with an empty output is scored without gold, and its prompt must
        fit seq_len as it is."""
        from aes_jax.eval.llm_scoring import ScoringInput

        examples = prompts.read_jsonl(path)[:limit or None]
        inputs = []
        for i, ex in enumerate(examples):
            essay_id = ex.essay_id or f"{Path(path).name}:{i + 1}"
            if ex.output.strip():
                enc = self.encode([ex], str(path))[0]
                inputs.append(ScoringInput(essay_id, np.asarray(enc.prompt_ids, np.int32),
                                           np.asarray(enc.digit_value, np.float64)))
                continue
            ids = np.asarray(self.tokenizer.encode(self.tokenizer.chat_prompt(ex.instruction)),
                             np.int32)
            if len(ids) > self.config.data.seq_len:
                raise ValueError(f"{ex.name()}: prompt of {len(ids)} tokens exceeds seq_len="
                                 f"{self.config.data.seq_len}; shorten the essay")
            inputs.append(ScoringInput(essay_id, ids, None))
        return inputs

    def stop_token_ids(self, score_line_only: bool = True) -> tuple[int, ...]:
        """End of answer, plus (score_line_only) the newline tokens: votes and parsing read
        only the first line, so sampling the feedback after it would be wasted work."""
        stops = [int(self.tokenizer.end_of_answer_id)]
        if score_line_only:
            for text in ("\n", "\n\n"):
                ids = self.tokenizer.encode(text)
                if len(ids) == 1:
                    stops.append(int(ids[0]))
        return tuple(dict.fromkeys(stops))

    # ------------------------------------------------------------------ model
    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        trainable, frozen = super().init(rng)
        if self.weighting == "uncertainty":
            trainable = {**trainable,
                         "loss_weights": {"log_vars": weighting.init_log_vars(len(self._active()))}}
        return trainable, frozen

    def logical_axes(self) -> tuple[dict, dict]:
        trainable, frozen = super().logical_axes()
        if self.weighting == "uncertainty":
            trainable = {**trainable, "loss_weights": {"log_vars": P()}}
        return trainable, frozen

    def _active(self) -> tuple[str, ...]:
        """The loss terms this configuration computes (CE always)."""
        c = self.config
        active = ["ce"]
        if c.ntl_weight != 0:
            active.append("ntl")
        if c.mtl and c.emo_weight != 0:
            active.append("emo")
        return tuple(active)

    def _lm_head(self, trainable, frozen) -> jax.Array:
        """[V, D] output embedding rows, EMO's cost embedding."""
        params = frozen.get("params", trainable.get("params"))
        if self.model_cfg.tie_word_embeddings:
            return params["embed_tokens"]
        return params["lm_head"].T

    def loss_terms(self, logits, batch, lm_head) -> dict[str, jax.Array]:
        c = self.config
        terms = {"ce": masked_cross_entropy(logits, batch["targets"], batch["loss_mask"])}
        active = self._active()
        digit_ids, digit_values = jnp.asarray(self.digit_ids), jnp.asarray(self.digit_values)
        if "ntl" in active:
            ntl_fn = number_tokens.ntl_mse if c.ntl_type == "mse" else number_tokens.ntl_wasserstein
            terms["ntl"] = ntl_fn(logits, batch["targets"], batch["digit_mask"], digit_ids,
                                  digit_values)
        if "emo" in active:
            if c.emo_type == "topk":
                terms["emo"] = emo_lib.emo_topk(logits, batch["targets"], batch["feedback_mask"],
                                                lm_head, k=c.emo_topk, normalize=c.emo_normalize)
            else:
                terms["emo"] = emo_lib.emo_full(logits, batch["targets"], batch["feedback_mask"],
                                                lm_head, normalize=c.emo_normalize)
        return terms

    def combine(self, terms: dict[str, jax.Array], trainable) -> jax.Array:
        c = self.config
        mode = self.weighting
        if mode == "static":
            weights = {"ce": 1.0, "ntl": c.ntl_weight, "emo": c.emo_weight}
            return weighting.static(terms, {k: weights[k] for k in terms})
        if mode == "dynamic":
            aux = sum(terms[k] for k in terms if k != "ce")
            return weighting.dynamic(terms["ce"], aux) if len(terms) > 1 else terms["ce"]
        stacked = jnp.stack([terms[k] for k in self._active()])
        return weighting.uncertainty(stacked, trainable["loss_weights"]["log_vars"])

    def loss(self, trainable, frozen, batch, rng):
        logits = self._logits(trainable, frozen, batch, rng)
        terms = self.loss_terms(logits, batch, self._lm_head(trainable, frozen))
        return self.combine(terms, trainable), {f"{k}_loss": v for k, v in terms.items()}

    def teacher_forced_digits(self, logits, batch) -> tuple[jax.Array, jax.Array, jax.Array]:
        """At each gold score position: (expected digit, argmax digit, gold digit), [B, K].
        The previous digits are the gold ones, so this is an optimistic dev signal; the
        honest figures come from free generation (eval/llm_scoring.py)."""
        digit_logits = logits[..., jnp.asarray(self.digit_ids)]
        probs = jax.nn.softmax(digit_logits, axis=-1)
        values = jnp.asarray(self.digit_values)
        expected = probs @ values
        argmax = values[jnp.argmax(digit_logits, axis=-1)]
        onehot = (batch["trait_index"][..., None] == jnp.arange(len(self.traits))).astype(
            jnp.float32)
        def per_trait(x):
            return jnp.einsum("bt,btk->bk", x, onehot)
        return per_trait(expected), per_trait(argmax), per_trait(batch["digit_value"])

    def eval_step(self, trainable, frozen, batch) -> dict[str, jax.Array]:
        logits = self._logits(trainable, frozen, batch)
        weight = batch["weight"][:, None]
        mask = batch["loss_mask"].astype(jnp.float32) * weight
        out = {"loss_sum": jnp.sum(token_nll(logits, batch["targets"]) * mask),
               "loss_count": jnp.sum(mask)}
        expected, argmax, gold = self.teacher_forced_digits(logits, batch)
        return {**out, "tf_expected": expected, "tf_argmax": argmax, "gold": gold,
                "weight": batch["weight"]}

    def summarize(self, outputs: list[dict]) -> dict[str, float]:
        sums = [{k: v for k, v in o.items() if k.endswith(("_sum", "_count"))} for o in outputs]
        result = {"loss": mean_from_sums(sums)["loss"]}  # dev CE over answer tokens
        rows = {k: np.concatenate([np.asarray(o[k]) for o in outputs])
                for k in ("tf_expected", "tf_argmax", "gold", "weight")}
        keep = rows["weight"] > 0
        gold = rows["gold"][keep]
        for name in ("tf_expected", "tf_argmax"):
            pred = rows[name][keep]
            qwks, true_scores, pred_scores = [], [], []
            for k, (trait, codec) in enumerate(zip(self.traits, self.codecs)):
                lo, hi = codec.digit_range
                q = metrics.qwk(gold[:, k].round().astype(int),
                                metrics.round_and_clip(pred[:, k], lo, hi), lo, hi)
                qwks.append(q)
                result[f"{name}_qwk_{trait.lower().replace(' ', '_')}"] = q
                true_scores.append(codec.to_scores(gold[:, k]))
                pred_scores.append(codec.to_scores(pred[:, k]))
            result[f"{name}_qwk_mean"] = float(np.mean(qwks))
            result[f"{name}_mcrmse"] = metrics.mcrmse(np.stack(true_scores, 1),
                                                      np.stack(pred_scores, 1))
        return result

    # ------------------------------------------------------------------ export
    def export(self, trainable: dict, frozen: dict, out_dir: str | Path) -> list[Path]:
        """PEFT adapter + merged model (as lm_lora) and `score_format.json`: the traits, their
        score codecs and digit tokens a user needs to read the model's answers."""
        written = super().export(trainable, frozen, out_dir)
        fmt = Path(out_dir) / "score_format.json"
        fmt.write_text(json.dumps({
            "traits": self.traits, "codecs": [c.to_dict() for c in self.codecs],
            "digit_token_ids": self.digit_ids.tolist(), "mtl": bool(self.config.mtl),
            "answer_format": "digits separated by spaces on the first line, trait order as "
                             "in 'traits'" + (", then a blank line and 'Essay Feedback:'"
                                              if self.config.mtl else ""),
        }, indent=2) + "\n")
        return written + [fmt]

