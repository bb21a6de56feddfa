"""Optional task capabilities, declared as protocols that launchers and `aes_jax.runs`
check with `isinstance` (never `hasattr`). The loop's own contract is `train/task.py`."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from aes_jax.data.score_format import ScoreFormat


@runtime_checkable
class PreparesData(Protocol):
    """A task whose config may name no dataset: `launch.train` calls `prepare_data` before
    training, which builds the default (synthetic demo) dataset directory with its
    manifest. The task itself only reads that directory, lazily."""

    def prepare_data(self) -> None: ...


@runtime_checkable
class Exporter(Protocol):
    """Writes what was learned in torch-world formats (`launch.export --run`)."""

    def export(self, trainable: Any, frozen: Any, out_dir: str | Path) -> list[Path]: ...


@dataclasses.dataclass
class EssaysRead:
    """What `Scorer.read_essays` returns: the essays to score, in the scorer's own form,
    and a JSON-able account of the read (`aes_jax.data.read_report.summary`: per file its
    rows, essays and decoding, rows skipped per reason with `file:line: detail` examples,
    notes), which `launch.score` prints and puts into its report."""

    essays: list[Any]
    report: dict[str, Any]

    def __len__(self) -> int:
        return len(self.essays)


@runtime_checkable
class Scorer(Protocol):
    """Scores essays with trained params (`launch.score`): new essays from a file in the
    scorer's input format, or a split of the run's dataset (with gold scores)."""

    def read_essays(self, path: str | Path, limit: int = 0, *, strict: bool = False,
                    encoding: str = "auto") -> EssaysRead:
        """The file's essays (the first `limit`; 0 = all). A bad row is skipped and
        counted in the report, or with `strict` raises a `ValueError` naming file:line;
        `encoding` is "auto" (UTF-8, cp1252 for bytes that are not UTF-8) or a codec."""

    def split_essays(self, split: str, limit: int = 0) -> list[Any]: ...

    def score(self, trainable: Any, frozen: Any, essays: Sequence[Any], *, batch_size: int,
              full_answer: bool = False) -> Mapping[str, Any]:
        """Rows of scores for `essays` (full_answer: generative scorers also write the
        feedback after the score line)."""

    def write_scores(self, scored: Mapping[str, Any], path: Path,
                     meta: Mapping[str, Any]) -> dict[str, Any]:
        """Writes the scores CSV (and metrics beside it where gold is known); returns a
        JSON-able report that starts with `meta` (run, step)."""


@runtime_checkable
class GenerativeScorer(Scorer, Protocol):
    """A scorer that answers with generated text in a `ScoreFormat`, so its answers can be
    sampled many times (`launch.self_consistency`)."""

    tokenizer: Any

    def score_format(self) -> ScoreFormat: ...

    def inference_model(self, trainable: Any, frozen: Any) -> tuple[Any, dict]:
        """(LlamaConfig, params) that the sampler runs (LoRA merged in)."""


@runtime_checkable
class EvalArtifactWriter(Protocol):
    """Writes task-specific evaluation files (predictions CSV, confusion matrices) next to
    the metrics JSON that `aes_jax.runs.evaluate_run` writes for every task."""

    def write_eval_artifacts(self, outputs: list[dict[str, np.ndarray]], out_dir: Path, *,
                             split: str, step: int) -> list[Path]: ...


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage of a `StagedTask`: a loop `Task`, the engine settings it trains
    with (a mapping `EngineConfig.from_config` reads) and the subdirectory of the run it
    writes (checkpoints, metrics.jsonl, TensorBoard)."""

    name: str
    task: Any
    engine: Mapping[str, Any]


@runtime_checkable
class StagedTask(Protocol):
    """A system trained in stages (Pair2Score: relative pairs, then absolute scores).
    `launch.train` trains each stage with the one loop in WORKDIR/<stage.name>, in order;
    a resumed run passes over finished stages (the loop reports them) and continues the
    stage it was in. `stages` is a generator so a stage is built only after the earlier
    ones have trained (it may read their checkpoints)."""

    def stages(self) -> Iterator[Stage]: ...

    def final_stage(self) -> Stage:
        """The stage whose checkpoints `launch.evaluate` / `launch.export` read."""

    def finish(self) -> dict[str, Any]:
        """After the last stage: the run's own results (e.g. held-out metrics JSON)."""
