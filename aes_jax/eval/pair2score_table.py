"""The Pair2Score results table: many runs' ``absolute_metrics.json`` as traits x variants.

Each training run (``launch.train --config=configs/pair2score.py:...``) writes one
``WORKDIR/absolute_metrics.json`` for one (trait, variant, pair_mode, run). This module
reads a set of those and reports each metric per cell as mean, sd and n over the runs:

    rows = read_run_metrics(["runs/p2s_grammar_ws_1", "runs/p2s_grammar_ws_2", ...])
    print(text_table(rows))
    write_table(rows, "runs/pair2score_table")  # .csv, .md, .png

Output formats (``write_table``):
  PREFIX.csv  long form, one line per (trait, variant, metric) that has a value:
              trait, variant, metric, mean, sd, n, run_1 .. run_5 (empty where that run is
              missing), for qwk, mae, rmse and, where the runs logged them,
              stage1_pair_accuracy and anchor_qwk. Floats at full precision.
  PREFIX.md   two Markdown tables, traits x variants: QWK, then MAE, each cell
              "mean ± sd (n)" at 3 decimals ("mean (1)" for a single run, "—" for none).
  PREFIX.png  grouped bars of QWK per trait, one bar per variant, error bars = sd,
              each run's value drawn as a point on its bar (``table_figure``).

A variant whose runs paired in-batch is its own column, labelled ``VARIANT+in_batch``: its
pairs differ from the cached pair file, so averaging it with cached runs would mix two
set-ups. sd is the sample sd (ddof=1) over n > 1 runs and 0.0 for one run (no spread to
estimate; the text and Markdown cells then leave "± sd" out rather than show a fake 0).

Only numpy and matplotlib are needed (nothing from tasks/train), so the table can be built
on a machine that has only the run directories.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from aes_jax.eval import plots
from aes_jax.eval.tables import aligned

METRICS_FILE = "absolute_metrics.json"
REQUIRED_FLOATS = ("qwk", "mae", "rmse")
OPTIONAL_FLOATS = ("stage1_pair_accuracy", "anchor_qwk")
CSV_METRICS = (*REQUIRED_FLOATS, *OPTIONAL_FLOATS)
MARKDOWN_METRICS = ("qwk", "mae")
METRIC_TITLES = {"qwk": "QWK", "mae": "MAE", "rmse": "RMSE",
                 "stage1_pair_accuracy": "Stage-1 pair accuracy", "anchor_qwk": "anchor QWK"}
# Copied from tasks/pair2score_options.py and data/ell.py rather than imported: reading
# results must not pull in the training stack. The order is the paper's column order.
VARIANTS = ("baseline", "warm_start", "warm_start_frozen", "stack", "fusion")
PAIR_MODES = ("cached", "in_batch")
TRAIT_ORDER = ("cohesion", "syntax", "vocabulary", "phraseology", "grammar", "conventions")
RUNS = range(1, 6)
IN_BATCH_SUFFIX = "+in_batch"


# --------------------------------------------------------------------------- reading


def _is_number(value: Any) -> bool:
    # bool is an int subclass; a true/false in a metric slot is a writer bug, not a 1/0.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _checked(record: Any, run_dir: Path) -> dict[str, Any]:
    """One metrics record validated, with ``run_dir`` added and pair_mode defaulted."""
    where = f"{run_dir / METRICS_FILE}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in REQUIRED_FLOATS:
        if key not in record:
            raise ValueError(f"{where}: missing key {key!r}")
        if not _is_number(record[key]):
            raise ValueError(f"{where}: {key!r} should be a number, got {record[key]!r}")
    for key in OPTIONAL_FLOATS:
        if record.get(key) is not None and not _is_number(record[key]):
            raise ValueError(f"{where}: {key!r} should be a number, got {record[key]!r}")
    if "variant" not in record:
        raise ValueError(f"{where}: missing key 'variant'")
    if record["variant"] not in VARIANTS:
        raise ValueError(f"{where}: 'variant' should be one of {', '.join(VARIANTS)}, "
                         f"got {record['variant']!r}")
    if "trait" not in record:
        raise ValueError(f"{where}: missing key 'trait'")
    if not isinstance(record["trait"], str) or not record["trait"]:
        raise ValueError(f"{where}: 'trait' should be a non-empty string, "
                         f"got {record['trait']!r}")
    if "run" not in record:
        raise ValueError(f"{where}: missing key 'run'")
    if not isinstance(record["run"], int) or isinstance(record["run"], bool) \
            or record["run"] not in RUNS:
        raise ValueError(f"{where}: 'run' should be an integer 1-5, got {record['run']!r}")
    pair_mode = record.get("pair_mode")
    if pair_mode is None:
        pair_mode = "cached"  # runs written before pair_mode existed used the pair cache
    if pair_mode not in PAIR_MODES:
        raise ValueError(f"{where}: 'pair_mode' should be one of {', '.join(PAIR_MODES)}, "
                         f"got {pair_mode!r}")
    row = dict(record)
    row["pair_mode"] = pair_mode
    for key in CSV_METRICS:
        if row.get(key) is not None:
            row[key] = float(row[key])
    row["run_dir"] = str(run_dir)
    return row


def read_run_metrics(run_dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Each ``DIR/absolute_metrics.json`` as a dict (its keys, plus ``run_dir``; floats as
    float; ``pair_mode`` "cached" when absent). A missing file, unreadable JSON or a missing
    or mistyped key is an error naming the file; two runs of the same (trait, variant,
    pair_mode, run) are an error naming both directories."""
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str, int], str] = {}
    for run_dir in map(Path, run_dirs):
        path = run_dir / METRICS_FILE
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: no such run directory" if not run_dir.exists()
                                    else f"{run_dir}: not a directory")
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir}: no {METRICS_FILE} (has the run finished "
                                    f"Stage 2?)")
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from err
        row = _checked(record, run_dir)
        key = (row["trait"], row["variant"], row["pair_mode"], row["run"])
        if key in seen:
            raise ValueError(f"{seen[key]} and {run_dir} are both trait {key[0]}, variant "
                             f"{key[1]}, pair_mode {key[2]}, run {key[3]}")
        seen[key] = str(run_dir)
        rows.append(row)
    return rows


def expand_run_dirs(entries: Sequence[str]) -> list[Path]:
    """``--runs`` entries -> run directories, in the order given. An entry with glob
    characters (``runs/p2s_*``) becomes the directories it matches, sorted; matching none
    is an error naming the pattern. Plain entries are kept as given (a missing one is
    reported by ``read_run_metrics``, which says what it lacks). A directory named twice
    (overlapping patterns) is kept once."""
    out: list[Path] = []
    seen: set[str] = set()
    for entry in entries:
        if any(c in entry for c in "*?["):
            matches = sorted(p for p in glob.glob(os.path.expanduser(entry))
                             if os.path.isdir(p))
            if not matches:
                raise ValueError(f"{entry}: matches no run directory")
        else:
            matches = [entry]
        for match in matches:
            resolved = os.path.realpath(match)
            if resolved not in seen:
                seen.add(resolved)
                out.append(Path(match))
    if not out:
        raise ValueError("no run directories given")
    return out


def default_out_prefix(run_dirs: Sequence[str | Path]) -> Path:
    """``pair2score_table`` in the deepest directory holding every run directory (their
    common parent: ``runs/`` for ``runs/p2s_*``), so the table lands beside the runs it
    summarizes and not inside any one of them."""
    parents = [os.path.dirname(os.path.abspath(d)) for d in run_dirs]
    return Path(os.path.commonpath(parents)) / "pair2score_table"


# --------------------------------------------------------------------------- summarizing


def variant_label(row: Mapping[str, Any]) -> str:
    return row["variant"] + (IN_BATCH_SUFFIX if row.get("pair_mode") == "in_batch" else "")


def _trait_sort_key(trait: str) -> tuple[int, str]:
    return (TRAIT_ORDER.index(trait) if trait in TRAIT_ORDER else len(TRAIT_ORDER), trait)


def _variant_sort_key(label: str) -> tuple[int, int, str]:
    base, in_batch = label.removesuffix(IN_BATCH_SUFFIX), label.endswith(IN_BATCH_SUFFIX)
    return (VARIANTS.index(base) if base in VARIANTS else len(VARIANTS), int(in_batch), label)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (trait, variant) of one metric over its runs."""
    mean: float
    sd: float  # ddof=1 when n > 1; 0.0 for a single run
    n: int
    runs: tuple[int, ...]  # run numbers, ascending
    values: tuple[float, ...]  # the metric of each run in ``runs``


@dataclasses.dataclass(frozen=True)
class Table:
    """One metric, traits x variants. ``cells`` lacks a (trait, variant) no run covers."""
    metric: str
    traits: tuple[str, ...]
    variants: tuple[str, ...]
    cells: dict[tuple[str, str], Cell]

    def cell(self, trait: str, variant: str) -> Cell | None:
        return self.cells.get((trait, variant))


def _cell(by_run: dict[int, float]) -> Cell:
    runs = tuple(sorted(by_run))
    values = tuple(by_run[r] for r in runs)
    array = np.asarray(values, dtype=np.float64)
    sd = float(np.std(array, ddof=1)) if len(values) > 1 else 0.0
    return Cell(mean=float(np.mean(array)), sd=sd, n=len(values), runs=runs, values=values)


def summarize(rows: Sequence[Mapping[str, Any]], metric: str = "qwk") -> Table:
    """``metric`` per trait x variant label: mean, sd, n and the per-run values. Traits and
    variants are those of ``rows`` (all of them, so tables of different metrics line up),
    in the paper's order; runs lacking ``metric`` (optional ones) are left out of their
    cell, and a cell with none is absent."""
    if metric not in CSV_METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(CSV_METRICS)}")
    traits = tuple(sorted({r["trait"] for r in rows}, key=_trait_sort_key))
    variants = tuple(sorted({variant_label(r) for r in rows}, key=_variant_sort_key))
    grouped: dict[tuple[str, str], dict[int, float]] = {}
    for r in rows:
        if r.get(metric) is None:
            continue
        by_run = grouped.setdefault((r["trait"], variant_label(r)), {})
        if int(r["run"]) in by_run:
            raise ValueError(f"trait {r['trait']}, variant {variant_label(r)}: run "
                             f"{r['run']} appears twice")
        by_run[int(r["run"])] = float(r[metric])
    return Table(metric=metric, traits=traits, variants=variants,
                 cells={key: _cell(by_run) for key, by_run in grouped.items()})


# --------------------------------------------------------------------------- text outputs


def cell_text(cell: Cell | None, decimals: int = 3) -> str:
    """"mean ± sd (n)"; a single run has no sd to show, a missing cell is "—"."""
    if cell is None:
        return "—"
    if cell.n == 1:
        return f"{cell.mean:.{decimals}f} (1)"
    return f"{cell.mean:.{decimals}f} ± {cell.sd:.{decimals}f} ({cell.n})"


def _grid(table: Table) -> list[list[str]]:
    return [["trait", *table.variants],
            *[[t, *(cell_text(table.cell(t, v)) for v in table.variants)]
              for t in table.traits]]


def text_table(rows: Sequence[Mapping[str, Any]], metric: str = "qwk") -> str:
    """``metric`` as fixed-width text, traits x variants, cells "mean ± sd (n)"."""
    table = summarize(rows, metric)
    title = f"{METRIC_TITLES[metric]}: mean ± sd over runs (n runs)"
    return "\n".join([title, *aligned(_grid(table))])


def markdown_table(table: Table) -> str:
    grid = _grid(table)
    lines = ["| " + " | ".join(grid[0]) + " |",
             "|" + "|".join([" --- "] + [" ---: "] * len(table.variants)) + "|"]
    lines += ["| " + " | ".join(line) + " |" for line in grid[1:]]
    return "\n".join(lines)


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for metric in MARKDOWN_METRICS:
        parts += [f"### {METRIC_TITLES[metric]} (mean ± sd over runs, n in parentheses)", "",
                  markdown_table(summarize(rows, metric)), ""]
    return "\n".join(parts)


def _csv_number(value: float) -> str:
    return repr(float(value))  # shortest text that reads back as the same float


def csv_lines(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """The long-form CSV as rows of cells, header first."""
    out = [["trait", "variant", "metric", "mean", "sd", "n", *(f"run_{r}" for r in RUNS)]]
    tables = [summarize(rows, m) for m in CSV_METRICS]
    first = tables[0]
    for trait in first.traits:
        for variant in first.variants:
            for table in tables:
                cell = table.cell(trait, variant)
                if cell is None:
                    continue
                by_run = dict(zip(cell.runs, cell.values))
                out.append([trait, variant, table.metric, _csv_number(cell.mean),
                            _csv_number(cell.sd), str(cell.n),
                            *(_csv_number(by_run[r]) if r in by_run else "" for r in RUNS)])
    return out


# --------------------------------------------------------------------------- figure


def _runs_phrase(table: Table) -> str:
    ns = sorted({c.n for c in table.cells.values()})
    if not ns:
        return "no runs"
    if len(ns) == 1:
        return f"n={ns[0]} run{'s' if ns[0] != 1 else ''} per bar"
    return f"n={ns[0]}-{ns[-1]} runs per bar"


def table_figure(rows: Sequence[Mapping[str, Any]], metric: str = "qwk") -> Figure:
    """Grouped bars of ``metric``: one group per trait, one bar per variant (absent where no
    run covers it), height = mean, error bar = sd, and each run's value as a black point on
    its bar so a 2-run mean shows both runs. The QWK axis is fixed to 0-1
    (``plots.qwk_axis_limits``) so figures of different run sets compare by eye."""
    table = summarize(rows, metric)
    if not table.cells:
        raise ValueError(f"no run has {metric!r}; nothing to plot")
    n_t, n_v = len(table.traits), len(table.variants)
    # Inches: the axes grow with the bars; fixed margins hold the labels and the legend,
    # which sits outside the axes so it never hides a bar.
    axes_w, left_in, legend_in = max(4.0, n_t * (0.45 * n_v + 0.5)), 0.9, 2.0
    fig_w = axes_w + left_in + legend_in
    fig = plots._new_figure(fig_w, 5.0)
    ax = fig.add_subplot()
    width = 0.8 / n_v
    colours = [f"C{i % 10}" for i in range(n_v)]
    for i, variant in enumerate(table.variants):
        xs, means, sds, point_x, point_y = [], [], [], [], []
        for j, trait in enumerate(table.traits):
            cell = table.cell(trait, variant)
            if cell is None:
                continue
            x = j - 0.4 + width * (i + 0.5)
            xs.append(x)
            means.append(cell.mean)
            sds.append(cell.sd)
            point_x += [x] * cell.n
            point_y += list(cell.values)
        if not xs:
            continue
        ax.bar(xs, means, width=width * 0.92, yerr=sds, capsize=4, color=colours[i],
               label=variant, error_kw={"elinewidth": 1.2, "ecolor": "0.25"})
        # White-edged points stay visible against both the bar and the error-bar caps.
        ax.plot(point_x, point_y, linestyle="none", marker="o", markersize=4.5,
                markerfacecolor="black", markeredgecolor="white", zorder=3,
                label="_runs")  # a leading "_" keeps the points out of the legend
    ax.set_xticks(range(n_t), list(table.traits))
    ax.set_xlim(-0.6, n_t - 0.4)
    ax.set_xlabel("trait")
    ax.set_ylabel(METRIC_TITLES[metric])
    if metric in ("qwk", "anchor_qwk", "stage1_pair_accuracy"):
        values = [v for c in table.cells.values() for v in c.values]
        ax.set_ylim(*plots.qwk_axis_limits([v for v in values if math.isfinite(v)] or [0.0]))
    ax.set_title(f"Pair2Score held-out {METRIC_TITLES[metric]} by trait\n"
                 f"{_runs_phrase(table)}; error bars: sd; points: each run", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title="variant",
              title_fontsize=9)
    fig.subplots_adjust(left=left_in / fig_w, right=(left_in + axes_w) / fig_w,
                        top=0.88, bottom=0.11)
    return fig


def table_png(rows: Sequence[Mapping[str, Any]], path: str | Path,
              metric: str = "qwk") -> Path:
    """``table_figure`` written to ``path``."""
    return plots._save(table_figure(rows, metric), path)


# --------------------------------------------------------------------------- all files


def write_table(rows: Sequence[Mapping[str, Any]], out_prefix: str | Path) -> list[Path]:
    """PREFIX.csv, PREFIX.md and PREFIX.png (see the module docstring); returns their paths.
    ``out_prefix`` is a path without extension; its directory is created."""
    if not rows:
        raise ValueError("no runs to tabulate")
    prefix = Path(out_prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    csv_path = prefix.with_name(prefix.name + ".csv")
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(csv_lines(rows))
    md_path = prefix.with_name(prefix.name + ".md")
    md_path.write_text(markdown(rows))
    png_path = table_png(rows, prefix.with_name(prefix.name + ".png"))
    return [csv_path, md_path, png_path]
