"""Evaluation figures as PNG files.

Figures are built with ``matplotlib.figure.Figure`` on an Agg canvas instead of pyplot, so
nothing here touches pyplot's global backend or figure registry: it works headless, in
threads, and next to code that uses pyplot interactively. Every function writes one PNG
at ``DPI`` (no tight bounding box, so pixel sizes are predictable) and returns its path.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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


def confusion_matrix_png(cm: np.ndarray, labels: Sequence[int], title: str,
                         path: str | Path) -> Path:
    """Heat map of a confusion matrix (rows = gold, columns = predicted, as in
    metrics.confusion_matrix), with counts written in the cells when there are few labels."""
    cm = np.asarray(cm)
    n = len(labels)
    if cm.shape != (n, n):
        raise ValueError(f"confusion matrix shape {cm.shape} does not match {n} labels")
    fig = _new_figure(*confusion_figsize(n))
    ax = fig.add_subplot()
    image = ax.imshow(cm, cmap="Blues", interpolation="nearest", origin="upper")
    fig.colorbar(image, ax=ax, label="essays")
    ticks = np.arange(0, n, _tick_stride(n))
    ax.set_xticks(ticks, [str(labels[i]) for i in ticks])
    ax.set_yticks(ticks, [str(labels[i]) for i in ticks])
    ax.set_xlabel("predicted rating")
    ax.set_ylabel("gold rating")
    ax.set_title(title)
    if n <= MAX_ANNOTATED_LABELS:
        threshold = cm.max() / 2 if cm.size and cm.max() > 0 else 0
        for (i, j), count in np.ndenumerate(cm):
            ax.text(j, i, f"{count:g}", ha="center", va="center", fontsize=8,
                    color="white" if count > threshold else "black")
    return _save(fig, path)


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


def learning_curve_png(metrics_jsonl_path: str | Path, path: str | Path,
                       keys: Sequence[str] = ("loss", "eval_loss"),
                       extra_keys: Sequence[str] = ("eval_mean_qwk",)) -> Path:
    """Loss-like ``keys`` against step on the left axis, QWK-like ``extra_keys`` on a twin
    right axis (their scales differ by orders of magnitude). Keys absent from the run are
    left out; a file with no records, or with none of the keys, is an error naming it."""
    src = Path(metrics_jsonl_path)
    records = _read_metrics_jsonl(src)
    if not records:
        raise ValueError(f"{src} has no metric records; nothing to plot")
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
                           markersize=3, label=key)
    ax.set_ylabel(", ".join(k for k, *_ in left) or "loss")
    if right:
        twin = ax.twinx()
        colours = ["tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive"]
        for (key, steps, values), colour in zip(right, colours * len(right)):
            handles += twin.plot(steps, values, marker="s", markersize=3, linestyle="--",
                                 color=colour, label=key)
        twin.set_ylabel(", ".join(k for k, *_ in right))
    ax.legend(handles=handles, labels=[h.get_label() for h in handles], loc="best")
    ax.set_title(src.parent.name or src.name)
    ax.grid(alpha=0.3)
    return _save(fig, path)


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
