"""TRM-AES: the Tiny Recursive Model trained as a per-prompt-normalised score regressor.

Deep supervision (tasks/trm_supervision.py): by default every supervision step is one
optimiser update on the rows' persistent carry, halted rows refilled with new essays (the
paper's scheme; the carry lives in the task state, so it is checkpointed and resumed
exactly); `supervision="per_batch"` instead averages the n_sup steps of each batch into
one update. Evaluation runs all n_sup steps unless `eval_halting` is set.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import PartitionSpec as P
from safetensors.numpy import save_file

from aes_jax.data import asap, asap_records, essays_tsv, pipeline, read_report, wordpiece
from aes_jax.eval import metrics, plots
from aes_jax.interop import assets
from aes_jax.interop.safetensors_file import open_safetensors
from aes_jax.models.trm import (TRM, TRMConfig, embedding_scale, init_params, predict,
                                start_states)
from aes_jax.tasks import trm_supervision
from aes_jax.tasks.capabilities import EssaysRead
from aes_jax.tasks.trm_supervision import Supervision

log = logging.getLogger(__name__)

EMBEDDING_TENSOR = "embeddings.word_embeddings.weight"
DEMO_MAX_TOKENS = 128


def read_embedding_table(model_dir: Path) -> np.ndarray:
    """The word-embedding matrix [vocab, width] of a BERT-style HF dir (safetensors)."""
    path = model_dir / "model.safetensors"
    with open_safetensors(path) as f:
        names = [n for n in f.keys() if n.endswith(EMBEDDING_TENSOR)]
        if not names:
            raise KeyError(f"{path}: no tensor named *{EMBEDDING_TENSOR}")
        return f.get_tensor(names[0]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TRMAesOptions:
    """The TRM-AES config fields, validated once (flags keep their names)."""

    dataset_dir: str = ""  # "" = the synthetic demo corpus built into WORKDIR/data
    # Or a TFDS dataset of aes_jax.datasets (e.g. "asap_traits/prompt_3"), tokenised when
    # read; tfds_dir "" = TFDS's default data dir.
    tfds_name: str = ""
    tfds_dir: str = ""
    tfds_prompt_texts: str = ""  # JSON {prompt: text}: [CLS] prompt [SEP] essay [SEP]
    eval_split: str = "dev"
    embeddings_dir: str = ""  # "" = the packaged MiniLM
    # The demo dataset is built with it; a built dataset must have it (0 = its own).
    max_tokens: int = 128
    model: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    dtype: str = "float32"
    train_traits: bool = True
    supervision: Supervision = Supervision()
    eval_halting: bool = False

    @classmethod
    def from_config(cls, config: Any) -> "TRMAesOptions":
        d = config.data
        defaults = Supervision()
        supervision = Supervision(
            scheme=config.get("supervision", defaults.scheme),
            use_halting=config.get("use_halting", defaults.use_halting),
            halt_exploration_prob=config.get("halt_exploration_prob",
                                             defaults.halt_exploration_prob),
            halt_loss_weight=config.get("halt_loss_weight", defaults.halt_loss_weight))
        if d.get("tfds_name", "") and d.dataset_dir:
            raise ValueError("give data.dataset_dir or data.tfds_name, not both")
        return cls(dataset_dir=d.dataset_dir, eval_split=d.eval_split,
                   tfds_name=d.get("tfds_name", ""), tfds_dir=d.get("tfds_dir", ""),
                   tfds_prompt_texts=d.get("tfds_prompt_texts", ""),
                   embeddings_dir=d.embeddings_dir, max_tokens=d.max_tokens,
                   model=dict(config.model), dtype=config.dtype,
                   train_traits=config.get("train_traits", True), supervision=supervision,
                   eval_halting=config.get("eval_halting", False))


class TRMAesTask:
    def __init__(self, config: Any, workdir: str | Path):
        self.options = TRMAesOptions.from_config(config)
        o = self.options
        self.dataset_dir = Path(o.dataset_dir) if o.dataset_dir else Path(workdir) / "data"
        if o.dataset_dir and (self.dataset_dir / "manifest.json").is_file():
            self.seq_len  # a length mismatch fails here, before a run writes anything

    def prepare_data(self) -> None:
        if not self.options.dataset_dir and not self.options.tfds_name:
            asap_records.build_demo_dataset(self.dataset_dir,
                                            self.options.max_tokens or DEMO_MAX_TOKENS)

    # ------------------------------------------------------------------ dataset facts
    @functools.cached_property
    def manifest(self) -> dict:
        if self.options.tfds_name:
            return self._tfds_manifest()
        return asap_records.load_manifest(self.dataset_dir)

    @functools.cached_property
    def seq_len(self) -> int:
        """The dataset's sequence length; config data.max_tokens must name the same (0 =
        take the dataset's), so a config never trains silently on another length."""
        built, asked = int(self.manifest["max_tokens"]), int(self.options.max_tokens)
        if asked and asked != built:
            fix = (f"rebuild it with launch.build_dataset --max_tokens={asked}"
                   if self.options.dataset_dir else "use a new --workdir")
            raise ValueError(f"config data.max_tokens={asked}, but {self.dataset_dir} was built "
                             f"with max_tokens={built}: {fix}, or pass "
                             f"--config.data.max_tokens={built} (or 0: the dataset's length)")
        return built

    @property
    def pad_id(self) -> int:
        return int(self.manifest["tokenizer"]["pad_id"])

    @property
    def ranges(self) -> dict[int, tuple[int, int]]:
        return {int(p): tuple(r) for p, r in self.manifest["score_ranges"].items()}

    @property
    def traits(self) -> list[str]:
        """Output 0 is the holistic score; then one per ASAP++ trait in the dataset."""
        return list(self.manifest["trait_names"]) if self.options.train_traits else []

    @functools.cached_property
    def embeddings(self) -> np.ndarray:
        o = self.options
        embeddings_dir = Path(o.embeddings_dir) if o.embeddings_dir else assets.minilm_dir()
        table = read_embedding_table(embeddings_dir)
        vocab = int(self.manifest["tokenizer"]["vocab_size"])
        if table.shape[0] != vocab:
            raise ValueError(f"{embeddings_dir}: {table.shape[0]} embedding rows but the "
                             f"dataset's tokenizer has {vocab} tokens; use the same BERT dir for both")
        return table

    @functools.cached_property
    def model_cfg(self) -> TRMConfig:
        return TRMConfig(vocab_size=int(self.manifest["tokenizer"]["vocab_size"]),
                         embed_dim=self.embeddings.shape[1], max_len=self.seq_len,
                         embed_scale=embedding_scale(self.embeddings),
                         num_outputs=1 + len(self.traits), dtype=self.options.dtype,
                         **dict(self.options.model))

    @property
    def model(self) -> TRM:
        return TRM(self.model_cfg)

    # ------------------------------------------------------------------ data
    def _example(self, record: dict) -> dict:
        ids, mask = pipeline.pad_to_bucket(record["input_ids"], (self.seq_len,), self.pad_id)
        lo, hi = self.ranges[int(record["prompt"])]
        n = len(self.traits)
        return {"input_ids": ids, "attention_mask": mask,
                "target": np.concatenate([[record["target"]], record["trait_targets"][:n]]
                                         ).astype(np.float32),
                "target_mask": np.concatenate([[True], record["trait_mask"][:n]]),
                "trait_scores": record["trait_scores"][:n].astype(np.int32),
                "half_point": np.float32(0.5 / max(hi - lo, 1)),
                "prompt": np.int32(record["prompt"]), "score": np.int32(record["score"]),
                "essay_id": np.int32(record["essay_id"])}

    def source(self, split: str) -> asap_records.AsapDataSource:
        if self.options.tfds_name:
            return self._tfds_source(split)
        return asap_records.AsapDataSource(self.dataset_dir, split)

    # ------------------------------------------------------------------ TFDS data
    # data.tfds_name: the same records from a TFDS build of the raw essays, tokenised with
    # the embeddings' tokenizer when read (aes_jax/datasets/trm_source.py).
    @functools.cached_property
    def _tfds_tokenizer(self) -> wordpiece.WordPieceTokenizer:
        return wordpiece.load_tokenizer(self.options.embeddings_dir or None)

    def _tfds_manifest(self) -> dict:
        from aes_jax.datasets import trm_source
        from aes_jax.datasets.mtl_source import read_prompt_texts

        o = self.options
        return trm_source.tfds_manifest(o.tfds_name, o.tfds_dir, self._tfds_tokenizer,
                                        o.max_tokens, read_prompt_texts(o.tfds_prompt_texts))

    @functools.cached_property
    def _tfds_sources(self) -> dict:
        return {}  # one source per split, so each essay is tokenised once

    def _tfds_source(self, split: str):
        from aes_jax.datasets import trm_source

        if split not in self._tfds_sources:
            self._tfds_sources[split] = trm_source.TfdsAsapSource(self.manifest, split,
                                                                  self._tfds_tokenizer)
        return self._tfds_sources[split]

    def train_iterator(self, global_batch_size: int, seed: int, process_index: int,
                       process_count: int):
        train = self.source("train")
        log.info("TRM-AES on %s: %d train essays, prompts %s, %d tokens", self.dataset_dir,
                 len(train), sorted(self.ranges), self.seq_len)
        return pipeline.train_iterator(train, global_batch_size=global_batch_size,
                                       seed=seed, process_index=process_index,
                                       process_count=process_count, map_fn=self._example)

    def eval_batches(self, batch_size: int, process_index: int, process_count: int) -> Iterator:
        return pipeline.eval_batches(self.source(self.options.eval_split), batch_size=batch_size,
                                     process_index=process_index, process_count=process_count,
                                     map_fn=self._example)

    # ------------------------------------------------------------------ model
    def init(self, rng: jax.Array) -> tuple[dict, dict]:
        return {"params": init_params(self.model_cfg, rng, pretrained_embeddings=self.embeddings)}, {}

    def logical_axes(self) -> tuple[dict, dict]:
        # A small model: replicate it; the batch is still split over data (and fsdp).
        shapes = jax.eval_shape(lambda: init_params(self.model_cfg, jax.random.PRNGKey(0)))
        return {"params": jax.tree.map(lambda _: P(), shapes)}, {}

    def loss(self, trainable, frozen, batch, rng, step):
        """The per_batch scheme's loss (no state): n_sup steps averaged."""
        return trm_supervision.per_batch_loss(self.model, trainable["params"], batch, rng,
                                              self.options.supervision)

    def init_task_state(self, global_batch_size: int) -> dict:
        """per_step: each row's essay, carry, steps and halted flag; per_batch: none."""
        if self.options.supervision.scheme != "per_step":
            return {}
        example = self._example(self.source("train")[0])
        return trm_supervision.init_rows_state(self.model, global_batch_size, self.seq_len,
                                               example)

    def loss_with_state(self, trainable, frozen, task_state, batch, rng, step):
        if self.options.supervision.scheme != "per_step":
            loss, metrics = self.loss(trainable, frozen, batch, rng, step)
            return loss, metrics, task_state
        return trm_supervision.per_step_loss(self.model, trainable["params"], task_state, batch,
                                             rng, self.options.supervision)

    def eval_step(self, trainable, frozen, batch) -> dict:
        scores, steps = predict(self.model, trainable["params"], batch["input_ids"],
                                batch["attention_mask"], use_halting=self.options.eval_halting)
        return {"pred": scores, "steps": steps, "prompt": batch["prompt"],
                "score": batch["score"], "essay_id": batch["essay_id"], "weight": batch["weight"],
                "trait_scores": batch["trait_scores"], "trait_mask": batch["target_mask"][:, 1:]}

    def predictions(self, outputs: list[dict]) -> dict[str, np.ndarray]:
        """Eval outputs -> real rows: essay_id, prompt, gold, predicted raw / rounded, and
        per trait `gold_<trait>` / `pred_raw_<trait>` (NaN where the prompt lacks it)."""
        rows = {k: np.concatenate([np.asarray(o[k]) for o in outputs]) for k in outputs[0]}
        keep = rows["weight"] > 0
        rows = {k: v[keep] for k, v in rows.items()}
        holistic = rows["pred"][:, 0]
        out = {"essay_id": rows["essay_id"], "prompt": rows["prompt"], "gold": rows["score"],
               # raw = unclipped, for RMSE; QWK rounds and clips it to the prompt's range
               "pred_raw": np.asarray(asap.denormalize(holistic, rows["prompt"], round_=False,
                                                       clip=False), np.float64),
               "pred": np.asarray(asap.denormalize(holistic, rows["prompt"]), np.int64),
               "steps": rows["steps"]}
        for k, trait in enumerate(self.traits):
            has = rows["trait_mask"][:, k].astype(bool)
            gold = np.where(has, rows["trait_scores"][:, k], np.nan)
            raw = np.full(len(has), np.nan)
            for p in np.unique(rows["prompt"][has]):
                sel = has & (rows["prompt"] == p)
                raw[sel] = asap.denormalize(rows["pred"][sel, 1 + k], int(p), trait, round_=False,
                                            clip=False)
            out[f"gold_{trait}"], out[f"pred_raw_{trait}"] = gold, raw
        return out

    def summarize(self, outputs: list[dict]) -> dict[str, float]:
        rows = self.predictions(outputs)
        report = metrics.per_prompt_report(rows["prompt"], rows["gold"], rows["pred_raw"],
                                           self.ranges)
        out = {"mean_qwk": report["mean_qwk"], "fisher_z_qwk": report["fisher_z_qwk"],
               "mean_steps": float(np.mean(rows["steps"]))}
        for p, r in report["per_prompt"].items():
            out[f"qwk_p{p}"] = r["qwk"]
            out[f"rmse_p{p}"] = r["rmse"]
        if self.traits:
            trues = {t: rows[f"gold_{t}"] for t in self.traits}
            preds = {t: np.nan_to_num(rows[f"pred_raw_{t}"]) for t in self.traits}
            ranges = {(int(p), t): asap.score_range(int(p), t) for t in self.traits
                      for p in np.unique(rows["prompt"][~np.isnan(rows[f"gold_{t}"])])}
            traits = metrics.per_trait_report(rows["prompt"], trues, preds, ranges)
            out["trait_mean_qwk"] = traits["mean_qwk"]
            for t, rep in traits["per_trait"].items():
                out[f"qwk_{metrics.trait_key(t)}"] = rep["mean_qwk"]
        return out

    # ------------------------------------------------------------------ console
    def describe(self) -> dict[str, str]:
        c, o = self.model_cfg, self.options
        halting = "halting on" if o.supervision.use_halting else "no halting"
        where = f"tfds {o.tfds_name}" if o.tfds_name else str(self.dataset_dir)
        return {"model": f"TRM hidden {c.hidden_size}, {c.num_layers} layers, H {c.h_cycles} x "
                         f"L {c.l_cycles} cycles, n_sup {c.n_sup}, {c.num_outputs} outputs",
                "supervision": f"{o.supervision.scheme}, {halting}",
                "data": f"{where}: {len(self.source('train'))} train, "
                        f"{len(self.source(o.eval_split))} {o.eval_split} essays, prompts "
                        f"{sorted(self.ranges)}, {self.seq_len} tokens"}

    def headline_metrics(self) -> tuple[str, ...]:
        return ("mean_qwk", *(f"qwk_p{p}" for p in sorted(self.ranges)), "mean_steps")

    def best_metric(self) -> tuple[str, str]:
        return "eval_mean_qwk", "max"

    # ------------------------------------------------------------------ scoring
    def read_essays(self, path: str | Path, limit: int = 0, *, strict: bool = False,
                    encoding: str = "auto") -> EssaysRead:
        """A TSV of new essays (`aes_jax.data.essays_tsv`: header with at least essay_id,
        essay_set, essay; the official ASAP layout qualifies, score columns are ignored)
        -> records, and the read's report. Essays of prompts the model was not trained on
        are skipped and counted like the file's bad rows."""
        result = essays_tsv.read_essays_file(path, strict=strict, encoding=encoding,
                                             prompts=self.ranges)
        if not result.essays:
            raise essays_tsv.EssaysFormatError(
                f"{path}: no essay to score ({result.files[0].rows} rows after the header; "
                f"skipped: {dict(result.skipped) or 'none'})")
        kept = result.essays[:limit or None]
        report = read_report.summary(result)
        if len(kept) < len(result.essays):  # so every row is scored or accounted for
            report["not_scored_beyond_limit"] = len(result.essays) - len(kept)
        return EssaysRead(self.encode_essays([(e.essay_id, e.prompt, e.text) for e in kept]),
                          report)

    def split_essays(self, split: str, limit: int = 0) -> list[dict]:
        """The records of a split of the run's dataset (gold scores known)."""
        source = self.source(split)
        return [source[i] for i in range(min(len(source), limit or len(source)))]

    def score(self, trainable, frozen, essays: Sequence[dict], *, batch_size: int,
              full_answer: bool = False) -> dict[str, np.ndarray]:
        eval_step = jax.jit(self.eval_step)
        outputs = [jax.device_get(eval_step(trainable, frozen, batch))
                   for batch in pipeline.eval_batches(list(essays), batch_size=batch_size,
                                                      map_fn=self._example)]
        rows = self.predictions(outputs)
        if not all(e.get("gold_known", True) for e in essays):
            del rows["gold"]
        return rows

    def write_scores(self, scored: Mapping[str, np.ndarray], path: Path,
                     meta: Mapping[str, Any]) -> dict[str, Any]:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_predictions_csv(scored, path)
        report = {**meta, "num_essays": len(scored["essay_id"])}
        if "gold" in scored:
            report.update(metrics.per_prompt_report(scored["prompt"], scored["gold"],
                                                    scored["pred_raw"], self.ranges))
        return report

    def write_eval_artifacts(self, outputs: list[dict], out_dir: Path, *, split: str,
                             step: int) -> list[Path]:
        """predictions_<split>.csv and one confusion-matrix PNG per prompt, titled with its
        essay count and QWK."""
        rows = self.predictions(outputs)
        written = [write_predictions_csv(rows, out_dir / f"predictions_{split}.csv")]
        for prompt in sorted(set(rows["prompt"].tolist())):
            lo, hi = self.ranges[prompt]
            sel = rows["prompt"] == prompt
            gold, pred = rows["gold"][sel], rows["pred"][sel]
            cm = metrics.confusion_matrix(gold, pred, lo, hi)
            path = out_dir / f"confusion_{split}_p{prompt}.png"
            plots.confusion_matrix_png(cm, list(range(lo, hi + 1)),
                                       f"prompt {prompt} ({split}, step {step})", path,
                                       qwk=metrics.qwk(gold, pred, lo, hi))
            written.append(path)
        return written

    def encode_essays(self, essays: list[tuple[int, int, str]]) -> list[dict]:
        """(essay_id, prompt, text) -> records like the dataset's, for scoring new essays;
        tokenised, prompt-prefixed and truncated exactly as launch.build_dataset does."""
        tok = wordpiece.load_tokenizer(self.manifest["tokenizer"]["dir"])
        prompt_texts = {int(k): v for k, v in self.manifest.get("prompt_texts", {}).items()}
        prompt_ids = {p: tok.encode_many([t])[0] for p, t in prompt_texts.items()}
        pieces = tok.encode_many([text for _, _, text in essays])
        records = []
        for (essay_id, prompt, _), ids in zip(essays, pieces):
            if prompt not in self.ranges:
                raise ValueError(f"essay {essay_id}: prompt {prompt} was not trained "
                                 f"(this model knows prompts {sorted(self.ranges)})")
            full, _ = wordpiece.assemble_ids(ids, tok.cls_id, tok.sep_id, prompt_ids.get(prompt),
                                        self.seq_len)
            lo = self.ranges[prompt][0]
            n = len(self.traits)
            records.append({"input_ids": np.asarray(full, np.int32), "prompt": prompt,
                            "target": 0.0, "score": lo, "essay_id": essay_id,
                            "trait_targets": np.zeros(n, np.float32),
                            "trait_mask": np.zeros(n, bool),
                            "trait_scores": np.full(n, -1, np.int32), "gold_known": False})
        return records

    def tokens_in_batch(self, batch) -> int:
        return int(np.asarray(batch["attention_mask"]).sum())

    def flops_per_token(self) -> float:
        """Matmul FLOPs per real token of an update: f runs h*(l+1) times per supervision
        step forward, and backward (2x forward) only through the last H-cycle's l+1 runs;
        one supervision step per update (per_step) or n_sup (per_batch)."""
        c = self.model_cfg
        per_f = c.num_layers * (4 * c.hidden_size ** 2 + 3 * c.hidden_size * c.intermediate_size)
        runs_fwd, runs_bwd = c.h_cycles * (c.l_cycles + 1), c.l_cycles + 1
        steps = 1 if self.options.supervision.scheme == "per_step" else c.n_sup
        return float(steps * (2 * per_f * runs_fwd + 4 * per_f * runs_bwd))

    # ------------------------------------------------------------------ export
    def export(self, trainable: dict, frozen: dict, out_dir: str | Path) -> list[Path]:
        """model.safetensors (flattened param names, plus the start states `h_init` and
        `l_init`) + trm_config.json; the torch reference (aes_jax.interop.torch_ref.trm)
        loads them."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        flat = {"/".join(str(k.key) for k in path): np.asarray(v)
                for path, v in jax.tree_util.tree_flatten_with_path(trainable["params"])[0]}
        # The fixed start states, as the reference's buffers are saved with its weights.
        flat["h_init"], flat["l_init"] = start_states(self.model_cfg)
        save_file(flat, out / "model.safetensors", metadata={"format": "aes_jax.trm"})
        (out / "trm_config.json").write_text(json.dumps(
            {"model": self.model_cfg.__dict__, "score_ranges": self.ranges,
             "tokenizer": self.manifest["tokenizer"]}, indent=2) + "\n")
        return [out]


def write_predictions_csv(rows: Mapping[str, np.ndarray], path: Path) -> Path:
    """essay_id, prompt, [gold,] predicted_raw, predicted; gold only when `rows` has it."""
    has_gold = "gold" in rows
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["essay_id", "prompt"] + (["gold"] if has_gold else [])
                        + ["predicted_raw", "predicted"])
        for i in range(len(rows["essay_id"])):
            gold = [int(rows["gold"][i])] if has_gold else []
            writer.writerow([int(rows["essay_id"][i]), int(rows["prompt"][i])] + gold
                            + [f"{float(rows['pred_raw'][i]):.4f}", int(rows["pred"][i])])
    return path
