"""LLaMA-AES: an instruction LLaMA + LoRA answers an essay with its trait scores as single
digits, optionally followed by feedback, trained with CE + number-token loss + EMO.

Losses, per batch (masks come from `aes_jax.data.mtl_encoding.training_arrays`):
  CE   over every answer token (the prompt is masked out),
  NTL  over the score-digit tokens (`ntl_type`: "mse" expected value, "was" W1 distance),
  EMO  over the feedback tokens (only when `mtl` and the data carries feedback),
combined by `weighting`: "static" (CE + ntl_weight*NTL + emo_weight*EMO), "dynamic"
(0.5 * (CE + sg(CE / aux) * aux), aux = the active NTL + EMO; chosen by a negative
ntl_weight or emo_weight, as in the PyTorch CLI) or "uncertainty" (learned log-variances);
which weights each accepts is in `llama_aes_options.py`. Evaluation during training is
teacher-forced (one forward pass: the expected digit at each gold score position);
free generation (greedy, expected-score, self-consistency) lives in `eval/llm_scoring.py`,
driven by `tasks/llama_aes_scoring.py`.

The task is a composition: a `CausalLM` part (model, LoRA, export) plus this file's data
and losses. Building it reads the dataset manifest and the tokenizer only; the training
split is tokenised when the train iterator is first asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from aes_jax.data import mtl_dataset, mtl_encoding, mtl_io, pipeline
from aes_jax.data.score_codec import ScoreCodec
from aes_jax.data.score_format import ScoreFormat, mode_digits, newline_token_ids
from aes_jax.eval import metrics
from aes_jax.losses import emo as emo_lib
from aes_jax.losses import number_tokens, weighting
from aes_jax.losses.blockwise import token_nll_of_block
from aes_jax.losses.reduce import masked_mean
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec
from aes_jax.tasks import llama_aes_scoring
from aes_jax.tasks.capabilities import EssaysRead
from aes_jax.tasks.llama_aes_options import LlamaAesOptions

log = logging.getLogger(__name__)


class LlamaAesTask:
    """LoRA (or full) fine-tuning of a LLaMA checkpoint on score(-and-feedback) answers."""

    def __init__(self, config: Any, workdir: str | Path):
        self.options = LlamaAesOptions.from_config(config)
        self.lm = CausalLM(CausalLMSpec.from_config(config))
        d = self.options.data
        self.data_dir = Path(d.dir) if d.dir else Path(workdir) / "data" / "mtl_demo"
        if d.hf_source is not None:  # messages name the HF / TFDS source instead
            self.data_dir = Path(d.hf or d.hf_files)
        elif d.tfds_name:
            self.data_dir = Path(f"tfds:{d.tfds_name}" + (f" in {d.tfds_dir}" if d.tfds_dir
                                                           else ""))

    @property
    def tokenizer(self):
        return self.lm.tokenizer

    @property
    def weighting(self) -> str:
        return self.options.resolved_weighting

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> None:
        if self.options.data.demo:
            mtl_dataset.build_demo_dataset(self.data_dir, self.options.data.demo_essays)

    @functools.cached_property
    def dataset(self) -> tuple[dict, dict[str, list[mtl_io.MtlExample]]]:
        """(manifest, {split: examples}) read from the dataset (no tokenising)."""
        return self._read_dataset()

    def _read_dataset(self) -> tuple[dict, dict[str, list[mtl_io.MtlExample]]]:
        """The one place choosing the source: HF `datasets` (config.data.hf / hf_files), a
        TFDS dataset (config.data.tfds_name) or an mtl dir (config.data.dir, or the demo
        built into the workdir)."""
        d = self.options.data
        hf_source = d.hf_source
        if hf_source is not None:
            from aes_jax.data import hf_inputs  # imports `datasets`: only when asked for
            return hf_inputs.load_hf_mtl(hf_source)
        if d.tfds_name:
            from aes_jax.datasets import mtl_source  # imports tensorflow_datasets: likewise
            return mtl_source.load_tfds_mtl(
                d.tfds_name, d.tfds_dir, feedback=d.tfds_feedback,
                prompt_texts=mtl_source.read_prompt_texts(d.tfds_prompt_texts))
        if not (self.data_dir / "manifest.json").is_file():
            raise FileNotFoundError(
                f"{self.data_dir}: no manifest.json; build a dataset with "
                "`launch.build_dataset --format=mtl` (or leave config.data.dir empty and "
                "train with launch.train, which builds the demo dataset)")
        return mtl_io.load_mtl_dir(self.data_dir)

    @property
    def traits(self) -> list[str]:
        return list(self.dataset[0]["traits"])

    @functools.cached_property
    def codecs(self) -> list[ScoreCodec]:
        return [ScoreCodec.from_dict(x) for x in self.dataset[0]["codecs"]]

    @functools.cached_property
    def digit_tokens(self) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, digit values) of the digits 0-9 in this tokenizer."""
        return number_tokens.digit_token_ids(self.tokenizer.encode, self.lm.cfg.vocab_size)

    @functools.cached_property
    def train_examples(self) -> list[mtl_io.MtlExample]:
        """The training subset: the first limit_train, then a seeded train_ratio of them
        (the original CLI's --train_ratio)."""
        o = self.options
        examples = self.dataset[1]["train"][:o.data.limit_train or None]
        if o.train_ratio >= 1.0:
            return list(examples)
        n = max(1, int(round(len(examples) * o.train_ratio)))
        keep = np.sort(np.random.default_rng(o.seed).permutation(len(examples))[:n])
        return [examples[i] for i in keep]

    def split_examples(self, split: str, limit: int = 0) -> list[mtl_io.MtlExample]:
        splits = self.dataset[1]
        if split not in splits:
            raise ValueError(f"{self.data_dir}: no split {split!r} (have {sorted(splits)})")
        return splits[split][:limit or None]

    def encode(self, examples: Sequence[mtl_io.MtlExample], split: str
               ) -> list[mtl_encoding.Encoded]:
        """MtlExamples -> Encoded (prompt/answer ids, digit positions, feedback mask);
        essays are shortened (counted) when prompt + answer exceed seq_len + 1 tokens."""
        out, truncated = [], 0
        seq_len = self.options.data.seq_len
        for ex in examples:
            # Score-only training (mtl=False) keeps just the first line of the answer.
            answer = ex if self.options.mtl else dataclasses.replace(
                ex, output=ex.output.split("\n", 1)[0])
            enc = mtl_encoding.encode_example(answer, self.tokenizer, self.codecs,
                                              max_tokens=seq_len + 1, essay=ex.essay)
            truncated += enc.truncated_words > 0
            out.append(enc)
        if truncated:
            log.warning("%s: %d of %d essays shortened to fit seq_len=%d", split, truncated,
                        len(examples), seq_len)
        return out

    @functools.cached_property
    def train_encoded(self) -> list[mtl_encoding.Encoded]:
        encoded = self.encode(self.train_examples, "train")
        log.info("LLaMA-AES on %s: traits %s, %d train examples (train_ratio %.2f), seq_len %d, "
                 "weighting %s", self.data_dir, self.traits, len(encoded),
                 self.options.train_ratio, self.options.data.seq_len, self.weighting)
        return encoded

    @functools.cached_property
    def eval_encoded(self) -> list[mtl_encoding.Encoded]:
        d = self.options.data
        return self.encode(self.split_examples(d.eval_split, d.limit_eval), d.eval_split)

    def record(self, enc: mtl_encoding.Encoded) -> dict:
        seq_len = self.options.data.seq_len
        arrays = mtl_encoding.training_arrays(enc, seq_len)
        real = len(enc.prompt_ids) + len(enc.output_ids) - 1
        arrays["token_mask"] = np.arange(seq_len) < real
        return arrays

    def train_iterator(self, global_batch_size: int, seed: int, process_index: int,
                       process_count: int):
        return pipeline.train_iterator(self.train_encoded, global_batch_size=global_batch_size,
                                       seed=seed, process_index=process_index,
                                       process_count=process_count, map_fn=self.record)

    def eval_batches(self, batch_size: int, process_index: int, process_count: int):
        return pipeline.eval_batches(self.eval_encoded, batch_size=batch_size,
                                     process_index=process_index, process_count=process_count,
                                     map_fn=self.record)

    def tokens_in_batch(self, batch) -> int:
        return int(np.asarray(batch["token_mask"]).sum())

    def flops_per_token(self) -> float:
        return self.lm.flops_per_token(self.options.data.seq_len)

    def score_format(self) -> ScoreFormat:
        """Traits, codecs, digit tokens, fallback digits and stop tokens of the answers."""
        return self._score_format

    @functools.cached_property
    def _score_format(self) -> ScoreFormat:
        # Scoring asks for it several times; the fallback digits read the training split.
        ids, values = self.digit_tokens
        digits = [mtl_io.check_example(ex, self.codecs) for ex in self.train_examples]
        return ScoreFormat(traits=tuple(self.traits), codecs=tuple(self.codecs),
                           digit_ids=tuple(int(i) for i in ids),
                           digit_values=tuple(float(v) for v in values),
                           fallback_digits=mode_digits(digits),
                           end_of_answer_id=int(self.tokenizer.end_of_answer_id),
                           newline_ids=newline_token_ids(self.tokenizer),
                           mtl=self.options.mtl)

    # ------------------------------------------------------------------ model
    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        trainable, frozen = self.lm.init(rng)
        if self.weighting == "uncertainty":
            log_vars = weighting.init_log_vars(len(self.options.active_terms))
            trainable = {**trainable, "loss_weights": {"log_vars": log_vars}}
        return trainable, frozen

    def logical_axes(self) -> tuple[dict, dict]:
        trainable, frozen = self.lm.logical_axes()
        if self.weighting == "uncertainty":
            trainable = {**trainable, "loss_weights": {"log_vars": P()}}
        return trainable, frozen

    def _lm_trainable(self, trainable: dict) -> dict:
        return {k: v for k, v in trainable.items() if k != "loss_weights"}

    def token_values(self, lm_trainable, frozen, batch, rng=None, *, emo: bool = False
                     ) -> tuple[dict[str, jax.Array], jax.Array | None]:
        """Per token: NLL, the digit logits and (with `emo`) EMO's mixture q, computed a
        block of tokens at a time (the part's loss_block_tokens) so no [B, T, vocab]
        logits exist; -> (values [B, T, ...], EMO's cost embedding or None)."""
        o = self.options
        ids = jnp.asarray(self.digit_tokens[0])
        e = (emo_lib.cost_embedding(self.lm.lm_head(lm_trainable, frozen)) if emo else None)

        def per_token(logits, labels):
            out = {"nll": token_nll_of_block(logits, labels),
                   "digits": jnp.take(logits, ids, axis=-1)}
            if e is not None:
                out["emo_q"] = (emo_lib.mixture_topk(logits, labels, e,
                                                     min(o.emo_topk, logits.shape[-1]))
                                if o.emo_type == "topk" else
                                emo_lib.mixture_full(logits, labels, e))
            return out

        # Targets are real ids everywhere (masks pick the positions each term reads).
        values = self.lm.per_token(lm_trainable, frozen, batch["input_ids"],
                                   jnp.maximum(batch["targets"], 0), per_token, rng=rng)
        return values, e

    def loss_terms(self, values: dict, e: jax.Array | None, batch) -> dict[str, jax.Array]:
        o = self.options
        terms = {"ce": masked_mean(values["nll"], batch["loss_mask"])}
        ids, digit_values = (jnp.asarray(x) for x in self.digit_tokens)
        if "ntl" in o.active_terms:
            ntl_fn = number_tokens.ntl_mse if o.ntl_type == "mse" else number_tokens.ntl_wasserstein
            terms["ntl"] = ntl_fn(values["digits"], batch["targets"], batch["digit_mask"], ids,
                                  digit_values, digits_only=True)
        if "emo" in o.active_terms:
            gold = jnp.maximum(batch["targets"], 0)
            terms["emo"] = emo_lib.loss_from_mixture(values["emo_q"], e, gold,
                                                     batch["feedback_mask"], o.emo_normalize)
        return terms

    def combine(self, terms: dict[str, jax.Array], trainable) -> jax.Array:
        o = self.options
        if self.weighting == "static":
            weights = {"ce": 1.0, "ntl": o.ntl_weight, "emo": o.emo_weight}
            return weighting.static(terms, {k: weights[k] for k in terms})
        if self.weighting == "dynamic":
            aux = sum(terms[k] for k in terms if k != "ce")
            return weighting.dynamic(terms["ce"], aux) if len(terms) > 1 else terms["ce"]
        stacked = jnp.stack([terms[k] for k in o.active_terms])
        return weighting.uncertainty(stacked, trainable["loss_weights"]["log_vars"])

    def loss(self, trainable, frozen, batch, rng, step):
        lm_trainable = self._lm_trainable(trainable)
        values, e = self.token_values(lm_trainable, frozen, batch, rng,
                                      emo="emo" in self.options.active_terms)
        terms = self.loss_terms(values, e, batch)
        return self.combine(terms, trainable), {f"{k}_loss": v for k, v in terms.items()}

    def teacher_forced_digits(self, digit_logits, batch
                              ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """At each gold score position: (expected digit, argmax digit, gold digit), [B, K].
        The previous digits are the gold ones, so this is an optimistic dev signal; the
        honest figures come from free generation (eval/llm_scoring.py)."""
        values = jnp.asarray(self.digit_tokens[1])
        expected = jax.nn.softmax(digit_logits, axis=-1) @ values
        argmax = values[jnp.argmax(digit_logits, axis=-1)]
        onehot = (batch["trait_index"][..., None] == jnp.arange(len(self.traits))).astype(
            jnp.float32)

        def per_trait(x):
            return jnp.einsum("bt,btk->bk", x, onehot)
        return per_trait(expected), per_trait(argmax), per_trait(batch["digit_value"])

    def eval_step(self, trainable, frozen, batch) -> dict[str, jax.Array]:
        values, _ = self.token_values(self._lm_trainable(trainable), frozen, batch)
        mask = batch["loss_mask"].astype(jnp.float32) * batch["weight"][:, None]
        expected, argmax, gold = self.teacher_forced_digits(values["digits"], batch)
        return {"loss_sum": jnp.sum(values["nll"] * mask),
                "loss_count": jnp.sum(mask), "tf_expected": expected, "tf_argmax": argmax,
                "gold": gold, "weight": batch["weight"]}

    def summarize(self, outputs: list[dict]) -> dict[str, float]:
        sums = [{k: v for k, v in o.items() if k.endswith(("_sum", "_count"))} for o in outputs]
        result = {"loss": metrics.mean_from_sums(sums)["loss"]}  # dev CE over answer tokens
        rows = {k: np.concatenate([np.asarray(o[k]) for o in outputs])
                for k in ("tf_expected", "tf_argmax", "gold", "weight")}
        keep = rows["weight"] > 0
        for name in ("tf_expected", "tf_argmax"):
            report = metrics.trait_report(rows["gold"][keep], rows[name][keep], self.traits,
                                          self.codecs)
            for trait, q in report["qwk_per_trait"].items():
                result[f"{name}_qwk_{metrics.trait_key(trait)}"] = q
            result[f"{name}_qwk_mean"] = report["qwk_mean"]
            result[f"{name}_mcrmse"] = report["mcrmse"]
        return result

    # ------------------------------------------------------------------ console
    def describe(self) -> dict[str, str]:
        d = self.options.data
        return {"model": self.lm.describe(),
                "data": f"{self.data_dir}: {len(self.train_examples)} train, "
                        f"{len(self.split_examples(d.eval_split, d.limit_eval))} {d.eval_split} "
                        f"examples, traits {', '.join(self.traits)}, seq_len {d.seq_len}",
                "loss": f"CE + NTL {self.options.ntl_weight:g} + EMO {self.options.emo_weight:g}"
                        f", {self.weighting} weighting"}

    def headline_metrics(self) -> tuple[str, ...]:
        return ("loss", "tf_expected_qwk_mean", "tf_expected_mcrmse", "tf_argmax_qwk_mean")

    def best_metric(self) -> tuple[str, str]:
        return "eval_tf_expected_qwk_mean", "max"

    # ------------------------------------------------------------------ scoring
    def split_essays(self, split: str, limit: int = 0) -> list:
        return llama_aes_scoring.split_inputs(self, split, limit)

    def read_essays(self, path: str | Path, limit: int = 0, *, strict: bool = False,
                    encoding: str = "auto") -> EssaysRead:
        del strict  # a JSONL file skips no rows: a bad line always raises (file:line)
        return llama_aes_scoring.jsonl_inputs(self, path, limit, encoding=encoding)

    def inference_model(self, trainable: dict, frozen: dict) -> tuple[Any, dict]:
        return self.lm.inference_params(self._lm_trainable(trainable), frozen)

    def score(self, trainable, frozen, essays, *, batch_size: int, full_answer: bool = False):
        return llama_aes_scoring.score(self, trainable, frozen, essays, batch_size=batch_size,
                                       full_answer=full_answer)

    def write_scores(self, scored, path: Path, meta) -> dict[str, Any]:
        return llama_aes_scoring.write_scores(self, scored, path, meta)

    # ------------------------------------------------------------------ export
    def export(self, trainable: dict, frozen: dict, out_dir: str | Path) -> list[Path]:
        """PEFT adapter + merged model and `score_format.json`: the traits, their score
        codecs and digit tokens a user needs to read the model's answers."""
        written = self.lm.export(self._lm_trainable(trainable), frozen, out_dir)
        fmt = Path(out_dir) / "score_format.json"
        fmt.write_text(json.dumps(self.score_format().to_json(), indent=2) + "\n")
        return written + [fmt]
