"""Evaluation figures as PNG files.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas instead of pyplot, so
nothing here touches pyplot's global backend or figure registry: it works headless, in
threads, and next to code that uses pyplot interactively. Every ``*_png`` function writes
one PNG at ``DPI`` (no tight bounding box, so pixel sizes are predictable) and returns its
path; ``*_figure`` builds the same figure without writing it (tests read its parts).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100
MAX_ANNOTATED_LABELS = 20  # beyond this, per-cell counts are unreadable


def _new_figure(width_in: float, height_in: float) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=DPI)
    return path


def _tick_stride(n: int, max_ticks: int = 20) -> int:
    return max(1, math.ceil(n / max_ticks))


# --------------------------------------------------------------------------- confusion matrix


def confusion_figsize(n_labels: int) -> tuple[float, float]:
    """6 x 5 inches up to 12 labels, then growing so cells stay visible (capped at 14 x 12):
    ASAP prompt 8 has 61 ratings."""
    extra = max(0, n_labels - 12) * 0.25
    return min(6.0 + extra, 14.0), min(5.0 + extra, 12.0)


def confusion_title(title: str, n: int, qwk: float | None = None) -> str:
    """``title`` followed by what the reader needs to judge the figure: how many essays it
    counts and, when given, their QWK (e.g. "prompt 3 (test, step 300): n=150, QWK 0.712")."""
    return f"{title}: n={n}" + ("" if qwk is None else f", QWK {qwk:.3f}")


def _integer_counts(cm: np.ndarray) -> np.ndarray:
    if cm.size and not np.array_equal(cm, np.round(cm)):
        raise ValueError("confusion matrix holds non-integer counts")
    return cm.astype(np.int64)


def confusion_matrix_figure(cm: np.ndarray, labels: Sequence[int], title: str,
                            qwk: float | None = None) -> Figure:
    """Heat map of a confusion matrix (rows = gold, columns = predicted, as in
    metrics.confusion_matrix) titled by ``confusion_title``, with an integer colour scale
    from 0 and counts written in the cells when there are few labels."""
    cm = np.asarray(cm)
    n = len(labels)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} labels")
    cm = _integer_counts(cm)
    fig = _new_figure(*confusion_figsize(n))
    ax = fig.add_subplot()
    # vmax >= 1 so an all-zero matrix still gets a scale; counts are essays, so the colour
    # bar only ticks whole numbers.
    image = ax.imshow(cm, cmap="Blues", interpolation="nearest", origin="upper", vmin=0,
                      vmax=max(int(cm.max(initial=0)), 1))
    fig.colorbar(image, ax=ax, label="essays", ticks=MaxNLocator(integer=True))
    ticks = np.arange(0, n, _tick_stride(n))
    ax.set_xticks(ticks, [str(labels[i]) for i in ticks])
    ax.set_yticks(ticks, [str(labels[i]) for i in ticks])
    ax.set_xlabel("predicted rating")
    ax.set_ylabel("gold rating")
    ax.set_title(confusion_title(title, int(cm.sum()), qwk))
    if n <= MAX_ANNOTATED_LABELS:
        threshold = cm.max() / 2 if cm.size and cm.max() > 0 else 0
        for (i, j), count in np.ndenumerate(cm):
            ax.text(j, i, str(int(count)), ha="center", va="center", fontsize=8,
                    color="white" if count > threshold else "black")
    return fig


def confusion_matrix_png(cm: np.ndarray, labels: Sequence[int], title: str,
                         path: str | Path, qwk: float | None = None) -> Path:
    """``confusion_matrix_figure`` written to ``path``."""
    return _save(confusion_matrix_figure(cm, labels, title, qwk), path)


# --------------------------------------------------------------------------- learning curve


def _read_metrics_jsonl(path: Path) -> list[dict]:
    """Records sorted by step; a step logged twice (a resumed run re-logs steps after its
    last checkpoint) keeps its last record."""
    by_step: dict[int, dict] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: not a JSON object ({err.msg})") from err
        if not isinstance(record, dict) or "step" not in record:
            raise ValueError(f"{path}:{lineno}: record has no 'step' key")
        by_step[int(record["step"])] = record
    return [by_step[s] for s in sorted(by_step)]


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) where `key` was logged with a finite number (eval keys are sparse)."""
    steps, values = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            steps.append(int(r["step"]))
            values.append(float(v))
    return steps, values


def qwk_axis_limits(values: Sequence[float]) -> tuple[float, float]:
    """A fixed 0-1 range, so curves of different runs compare by eye; widened only when a
    value falls outside it (a QWK below chance)."""
    return min(0.0, *values), max(1.0, *values)


def learning_curve_figure(metrics_jsonl_path: str | Path,
                          keys: Sequence[str] = ("loss", "eval_loss"),
                          extra_keys: Sequence[str] = ("eval_mean_qwk",),
                          labels: Mapping[str, str] | None = None) -> Figure:
    """Loss-like ``keys`` against step on the left axis, QWK-like ``extra_keys`` on a twin
    right axis (their scales differ by orders of magnitude) fixed to ``qwk_axis_limits``.
    ``labels`` names keys in the legend and axis labels (e.g. eval_mean_qwk -> "dev mean
    QWK (eval_mean_qwk)": the log's keys do not say which split "eval" was). Keys absent
    from the run are left out; a file with no records, or with none of the keys, is an
    error naming it."""
    src = Path(metrics_jsonl_path)
    records = _read_metrics_jsonl(src)
    if not records:
        raise ValueError(f"{src} has no metric records; nothing to plot")
    name = {k: (labels or {}).get(k, k) for k in (*keys, *extra_keys)}
    left = [(k, *_series(records, k)) for k in keys]
    right = [(k, *_series(records, k)) for k in extra_keys]
    left, right = [s for s in left if s[1]], [s for s in right if s[1]]
    if not left and not right:
        raise ValueError(f"{src} has none of the keys {list(keys) + list(extra_keys)} "
                         f"(found {sorted({k for r in records for k in r} - {'step'})})")
    fig = _new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    ax.set_xlabel("step")
    handles = []
    for key, steps, values in left:
        handles += ax.plot(steps, values, marker="o" if len(steps) < 50 else None,
                           markersize=3, label=name[key])
    ax.set_ylabel(", ".join(name[k] for k, *_ in left) or "loss")
    if right:
        twin = ax.twinx()
        colours = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
        for (key, steps, values), colour in zip(right, colours * len(right)):
            handles += twin.plot(steps, values, marker="s", markersize=3, linestyle="--",
                                 color=colour, label=name[key])
        twin.set_ylabel(", ".join(name[k] for k, *_ in right))
        twin.set_ylim(*qwk_axis_limits([v for _, _, vs in right for v in vs]))
    ax.legend(handles=handles, labels=[h.get_label() for h in handles], loc="best")
    ax.set_title(src.parent.name or src.name)
    ax.grid(alpha=0.3)
    return fig


def learning_curve_png(metrics_jsonl_path: str | Path, path: str | Path,
                       keys: Sequence[str] = ("loss", "eval_loss"),
                       extra_keys: Sequence[str] = ("eval_mean_qwk",),
                       labels: Mapping[str, str] | None = None) -> Path:
    """``learning_curve_figure`` written to ``path``."""
    return _save(learning_curve_figure(metrics_jsonl_path, keys, extra_keys, labels), path)


# --------------------------------------------------------------------------- self-consistency


def qwk_vs_m_png(ms: Sequence[int], qwks: Mapping[str, Sequence[float]],
                 path: str | Path) -> Path:
    """QWK against the number of sampled generations m (self-consistency), one line per
    method or prompt in ``qwks``. The x axis is log2 when m spans powers of two, as it
    usually does (1, 2, 4, ... 32)."""
    ms = [int(m) for m in ms]
    if not ms or not qwks:
        raise ValueError("qwk_vs_m_png needs at least one m and one series")
    for name, values in qwks.items():
        if len(values) != len(ms):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(ms)} m's")
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    for name, values in qwks.items():
        ax.plot(ms, [float(v) for v in values], marker="o", label=str(name))
    if min(ms) > 0 and max(ms) / min(ms) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(ms, [str(m) for m in ms])
    ax.set_xlabel("m (sampled generations)")
    ax.set_ylabel("QWK")
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


# --------------------------------------------------------------------------- lengths


def length_histogram_png(lengths_by_prompt: Mapping[int, Sequence[int]], limit: int | None,
                         path: str | Path) -> Path:
    """Token-length histogram per prompt (step outlines so prompts stay distinguishable),
    with the truncation ``limit`` drawn and the share of essays beyond it in the legend:
    the figure answers "how much does truncation cut?" at a glance. The ASAP length report
    (``launch.build_dataset --analyze_lengths``) draws its histogram with this."""
    series = {p: np.asarray(v, dtype=np.float64) for p, v in lengths_by_prompt.items()}
    series = {p: v for p, v in series.items() if v.size}
    if not series:
        raise ValueError("length_histogram_png got no lengths")
    everything = np.concatenate(list(series.values()))
    top = max(everything.max(), limit or 0)
    bins = np.linspace(0, top * 1.02 + 1, 41)
    fig = _new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    for prompt, lengths in sorted(series.items(), key=lambda kv: str(kv[0])):
        label = f"prompt {prompt} (n={lengths.size})"
        if limit is not None:
            label += f", {np.mean(lengths > limit):.0%} > limit"
        ax.hist(lengths, bins=bins, histtype="step", linewidth=1.5, label=label)
    if limit is not None:
        ax.axvline(limit, color="black", linestyle="--",
                   label=f"limit {limit} ({np.mean(everything > limit):.1%} of all essays over)")
    ax.set_xlabel("length (tokens)")
    ax.set_ylabel("essays")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


# --------------------------------------------------------------------------- RL reward curve


def reward_curve_figure(metrics_jsonl_path: str | Path) -> Figure:
    """An RL run's metrics.jsonl: rollout reward (mean, +- 1 sd band) and the held-out
    greedy reward per iteration on the left axis; KL to the reference on the right."""
    records = _read_metrics_jsonl(Path(metrics_jsonl_path))
    fig = _new_figure(7.0, 4.5)
    ax = fig.add_subplot()
    steps, mean = _series(records, "reward_mean")
    _, sd = _series(records, "reward_std")
    if steps:
        ax.plot(steps, mean, marker="o", markersize=3, label="rollout reward")
        if len(sd) == len(mean):
            ax.fill_between(steps, np.subtract(mean, sd), np.add(mean, sd), alpha=0.2)
    eval_steps, eval_mean = _series(records, "eval_reward_mean")
    if eval_steps:
        ax.plot(eval_steps, eval_mean, marker="s", label="held-out reward (greedy)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("reward")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    kl_steps, kl = _series(records, "kl")
    if kl_steps:
        right = ax.twinx()
        right.plot(kl_steps, kl, color="tab:red", linestyle="--", label="KL to reference")
        right.set_ylabel("KL (nats per completion)")
        right.legend(loc="lower right")
    ax.legend(loc="upper left")
    ax.set_title(f"{Path(metrics_jsonl_path).parent.name}: reward per iteration")
    return fig


def reward_curve_png(metrics_jsonl_path: str | Path, path: str | Path) -> Path:
    """``reward_curve_figure`` written to ``path``."""
    return _save(reward_curve_figure(metrics_jsonl_path), path)
