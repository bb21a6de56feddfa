"""Pair2Score: pairwise Siamese LoRA ranking (Stage 1), then absolute trait scores (Stage 2).

`launch.train --config=configs/pair2score.py:...` trains it as a `StagedTask`:
  prepare_data   demo corpus / fold map / pair cache into WORKDIR/pairs unless given
  relative/      Stage 1 (tasks/pair2score_relative.py), when the variant needs it
  absolute/      Stage 2 (tasks/pair2score_absolute.py)
  finish         absolute_metrics.json: the best Stage-2 checkpoint (val QWK) on the
                 held-out fold (qwk, mae, rmse, predictions CSV), and when Stage 1 ran its
                 test-pair accuracy and the anchor scores: each held-out essay's Stage-1
                 utility placed among the Stage-2 training essays by an isotonic fit of
                 utility -> score (`eval/anchor_scoring.py`), no Stage 2 needed.
A resumed run passes over the finished stage and continues the one it was in.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np

from aes_jax.eval import anchor_scoring
from aes_jax.parts.causal_lm import CausalLM, CausalLMSpec
from aes_jax.tasks.capabilities import Stage
from aes_jax.tasks.pair2score_absolute import AbsoluteTask, score_metrics
from aes_jax.tasks.pair2score_data import PairStageData
from aes_jax.tasks.pair2score_options import Pair2ScoreOptions
from aes_jax.tasks.pair2score_relative import RelativeTask
from aes_jax.train.checkpoint import read_state_numpy
from aes_jax.train.engine_config import EngineConfig

METRICS_FILE = "absolute_metrics.json"


class Pair2ScoreTask:
    """The two stages of one (trait, variant, run), composed from their parts."""

    def __init__(self, config: Any, workdir: str | Path):
        self.options = Pair2ScoreOptions.from_config(config)
        self.workdir = Path(workdir)
        self.lm = CausalLM(CausalLMSpec.from_config(config))
        if not self.lm.uses_lora:
            raise ValueError("config.use_lora=False: Pair2Score's stages are LoRA adapters "
                             "(warm start, stack and fusion move an adapter between stages)")
        # The engine settings both stages share; each stage's block overrides some.
        self.shared = {f.name: _plain(config[f.name]) for f in dataclasses.fields(EngineConfig)
                       if f.name in config}
        self.data = PairStageData(self.options, workdir, self.lm.tokenizer)
        self.stage_seconds: dict[str, float] = {}

    @property
    def tokenizer(self):
        return self.lm.tokenizer

    def prepare_data(self) -> None:
        if jax.process_index() == 0:
            for line in self.data.prepare():
                print(line, flush=True)

    # ------------------------------------------------------------------ stages
    @functools.cached_property
    def relative(self) -> Stage:
        task = RelativeTask(self.options, self.lm, self.data)
        engine = self.options.relative.engine(self.shared, len(task.train_records()))
        return Stage("relative", task, engine)

    @functools.cached_property
    def absolute(self) -> Stage:
        stage1 = self.workdir / "relative" if self.options.needs_stage1 else None
        task = AbsoluteTask(self.options, self.lm, self.data, stage1)
        engine = self.options.absolute.engine(self.shared, len(self.data.stage2_splits["train"]))
        return Stage("absolute", task, engine)

    def stages(self) -> Iterator[Stage]:
        chosen = ("relative", "absolute") if self.options.needs_stage1 else ("absolute",)
        for name in chosen:
            start = time.perf_counter()
            yield getattr(self, name)
            self.stage_seconds[name] = time.perf_counter() - start

    def final_stage(self) -> Stage:
        return self.absolute

    # ------------------------------------------------------------------ results
    def finish(self) -> dict[str, Any]:
        """Held-out figures of the best checkpoints -> WORKDIR/absolute_metrics.json."""
        o = self.options
        result: dict[str, Any] = {"trait": o.trait, "variant": o.variant, "run": o.run,
                                  "held_out_fold": self.data.held_out, "size": o.size,
                                  "pair_mode": o.pair_mode, "qwk_binning": o.qwk_binning,
                                  "loss": o.loss}
        absolute = self.absolute.task
        step, trainable, frozen = self._restore(self.workdir / "absolute", absolute)
        rows, gold, pred = self._predict(absolute, trainable, frozen, "test")
        result.update(score_metrics(gold, pred, o.qwk_binning), stage2_step=step)
        self._write_predictions(rows, gold, pred)
        if o.needs_stage1:
            result.update(self._stage1_results())
        result["train_seconds_this_invocation"] = {k: round(v, 1)
                                                   for k, v in self.stage_seconds.items()}
        if jax.process_index() == 0:
            path = self.workdir / METRICS_FILE
            path.write_text(json.dumps(result, indent=2) + "\n")
            print(f"held-out fold {self.data.held_out} ({int(result['n'])} essays): QWK "
                  f"{result['qwk']:.4f}, MAE {result['mae']:.4f}, RMSE {result['rmse']:.4f}"
                  + (f"; anchor QWK {result['anchor_qwk']:.4f}, Stage-1 test pair accuracy "
                     f"{result['stage1_pair_accuracy']:.4f}" if o.needs_stage1 else "")
                  + f" -> {path}", flush=True)
        return result

    def _restore(self, stage_dir: Path, task: Any) -> tuple[int, Any, Any]:
        step, state = read_state_numpy(stage_dir)
        _, frozen = task.init(jax.random.PRNGKey(int(self.shared.get("seed", 0))))
        return step, jax.tree.map(jax.numpy.asarray, state["trainable"]), frozen

    def _predict(self, task: AbsoluteTask, trainable: Any, frozen: Any, split: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        predict = jax.jit(task.eval_step)
        outs = [jax.device_get(predict(trainable, frozen, b))
                for b in task.split_batches(split, self.options.absolute.eval_batch_size)]
        keep = np.concatenate([o["weight"] for o in outs]) > 0
        cat = lambda k: np.concatenate([o[k] for o in outs])[keep]  # noqa: E731
        return cat("row"), cat("score"), cat("pred")

    def _utilities(self, task: RelativeTask, trainable: Any, frozen: Any, rows: list[int]
                   ) -> np.ndarray:
        fn = jax.jit(lambda t, f, ids, mask: task.utilities(t, f, ids, mask))
        tokens, size = self.data.tokens, self.options.relative.eval_batch_size
        return np.concatenate([np.asarray(fn(trainable, frozen, tokens.ids[rows[i:i + size]],
                                             tokens.mask[rows[i:i + size]]))
                               for i in range(0, len(rows), size)])

    def _stage1_results(self) -> dict[str, Any]:
        relative = self.relative.task
        step, trainable, frozen = self._restore(self.workdir / "relative", relative)
        step_fn = jax.jit(relative.eval_step)
        size = self.options.relative.eval_batch_size
        outs = [jax.device_get(step_fn(trainable, frozen, b))
                for b in relative.pair_batches("test", size)]
        test_pairs = relative.summarize(outs)
        splits = self.data.stage2_splits
        anchors = self._utilities(relative, trainable, frozen, splits["train"])
        held = self._utilities(relative, trainable, frozen, splits["test"])
        fit = anchor_scoring.fit_isotonic(anchors, self.data.scores[splits["train"]])
        anchor = score_metrics(self.data.scores[splits["test"]],
                               anchor_scoring.predict(fit, held), self.options.qwk_binning)
        return {"stage1_step": step, "stage1_pair_accuracy": test_pairs["pair_accuracy"],
                "stage1_test_pairs": int(test_pairs["pairs"]),
                "anchor_qwk": anchor["qwk"], "anchor_mae": anchor["mae"],
                "anchor_rmse": anchor["rmse"], "anchors": len(splits["train"])}

    def _write_predictions(self, rows: np.ndarray, gold: np.ndarray, pred: np.ndarray) -> None:
        if jax.process_index():
            return
        snapped = anchor_scoring.snap(np.clip(pred, 1.0, 5.0), 1.0, 5.0, step=0.5,
                                      binning=self.options.qwk_binning)
        path = self.workdir / "absolute" / "predictions_test.csv"
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text_id", self.options.trait, "predicted_raw", "predicted"])
            for r, g, p, s in zip(rows, gold, pred, snapped):
                writer.writerow([self.data.essays[int(r)].text_id, f"{g:.1f}", f"{p:.4f}",
                                 f"{s:.1f}"])


def _plain(value: Any) -> Any:
    """ConfigDict blocks (optimizer, mesh) as plain dicts."""
    return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
