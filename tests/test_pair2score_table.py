"""The Pair2Score results table on made-up absolute_metrics.json files (no training): the
numbers per cell, the CSV / Markdown / PNG it writes, its errors naming the run directory,
and the launcher end to end in a subprocess (absl flags stay out of this process)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import BarContainer

from aes_jax.eval import pair2score_table as p2s

REPO = Path(__file__).resolve().parents[1]

# (trait, variant, run, qwk, mae): 2 traits x 2 variants, two cells with 2 runs. The grammar
# baseline runs are 1 and 3 so a gap in the run columns is tested too.
RUNS = [
    ("grammar", "baseline", 1, 0.60, 0.50),
    ("grammar", "baseline", 3, 0.64, 0.46),
    ("grammar", "fusion", 1, 0.70, 0.40),
    ("syntax", "baseline", 1, 0.55, 0.52),
    ("syntax", "fusion", 1, 0.66, 0.42),
    ("syntax", "fusion", 2, 0.69, 0.38),
]


def _write_run(root: Path, trait: str, variant: str, run: int, qwk: float, mae: float,
               **extra) -> Path:
    run_dir = root / f"p2s_{trait}_{variant}_{extra.get('pair_mode', 'cached')}_{run}"
    run_dir.mkdir(parents=True)
    record = {"trait": trait, "variant": variant, "run": run, "qwk": qwk, "mae": mae,
              "rmse": mae + 0.1, "pair_mode": "cached", "size": "small", "n": 50.0}
    if variant != "baseline":  # only variants with a Stage 1 log these
        record.update(stage1_pair_accuracy=0.8 + 0.01 * run, anchor_qwk=qwk - 0.1)
    record.update(extra)
    (run_dir / p2s.METRICS_FILE).write_text(json.dumps(record, indent=2))
    return run_dir


@pytest.fixture
def run_dirs(tmp_path: Path) -> list[Path]:
    return [_write_run(tmp_path / "runs", *spec) for spec in RUNS]


def test_summary_means_sds_and_runs(run_dirs):
    rows = p2s.read_run_metrics(run_dirs)
    assert [r["run_dir"] for r in rows] == [str(d) for d in run_dirs]
    table = p2s.summarize(rows)
    # ELLIPSE order (syntax before grammar), then the variants' paper order.
    assert table.traits == ("syntax", "grammar") and table.variants == ("baseline", "fusion")
    cell = table.cell("grammar", "baseline")
    assert (cell.n, cell.runs, cell.values) == (2, (1, 3), (0.60, 0.64))
    assert cell.mean == pytest.approx(0.62, abs=1e-12)
    assert cell.sd == pytest.approx(np.std([0.60, 0.64], ddof=1), abs=1e-12)
    single = table.cell("grammar", "fusion")
    assert (single.n, single.mean, single.sd, single.values) == (1, 0.70, 0.0, (0.70,))
    mae = p2s.summarize(rows, "mae").cell("syntax", "fusion")
    assert mae.mean == pytest.approx(0.40) and mae.sd == pytest.approx(np.std([.42, .38], ddof=1))
    # Optional metrics: cells of runs that lack them are absent, not zero.
    anchor = p2s.summarize(rows, "anchor_qwk")
    assert anchor.cell("syntax", "baseline") is None
    assert anchor.cell("syntax", "fusion").values == pytest.approx((0.56, 0.59))


def test_in_batch_runs_are_their_own_column(tmp_path, run_dirs):
    extra = _write_run(tmp_path / "runs", "grammar", "fusion", 1, 0.75, 0.35,
                       pair_mode="in_batch")
    table = p2s.summarize(p2s.read_run_metrics([*run_dirs, extra]))
    assert table.variants == ("baseline", "fusion", "fusion+in_batch")
    assert table.cell("grammar", "fusion").values == (0.70,)
    assert table.cell("grammar", "fusion+in_batch").values == (0.75,)
    assert table.cell("syntax", "fusion+in_batch") is None


def test_written_csv_markdown_and_figure(tmp_path, run_dirs):
    rows = p2s.read_run_metrics(run_dirs)
    paths = p2s.write_table(rows, tmp_path / "out" / "table")
    assert [p.name for p in paths] == ["table.csv", "table.md", "table.png"]
    assert all(p.stat().st_size > 0 for p in paths)

    with paths[0].open() as f:
        lines = list(csv.DictReader(f))
    assert list(lines[0]) == ["trait", "variant", "metric", "mean", "sd", "n",
                              "run_1", "run_2", "run_3", "run_4", "run_5"]
    by_key = {(r["trait"], r["variant"], r["metric"]): r for r in lines}
    # 4 cells x (qwk, mae, rmse) + the 2 fusion cells x (stage1_pair_accuracy, anchor_qwk)
    assert len(lines) == 4 * 3 + 2 * 2
    assert ("syntax", "baseline", "anchor_qwk") not in by_key
    g = by_key[("grammar", "baseline", "qwk")]
    assert float(g["mean"]) == pytest.approx(0.62, abs=1e-12) and g["n"] == "2"
    assert float(g["sd"]) == pytest.approx(np.std([0.60, 0.64], ddof=1), abs=1e-12)
    assert (g["run_1"], g["run_2"], g["run_3"], g["run_4"], g["run_5"]) == \
        ("0.6", "", "0.64", "", "")
    s = by_key[("syntax", "fusion", "stage1_pair_accuracy")]
    assert [float(s["run_1"]), float(s["run_2"])] == pytest.approx([0.81, 0.82]) and s["n"] == "2"

    md = paths[1].read_text()
    assert "| trait | baseline | fusion |" in md
    assert "| grammar | 0.620 ± 0.028 (2) | 0.700 (1) |" in md  # QWK
    assert "| syntax | 0.520 (1) | 0.400 ± 0.028 (2) |" in md  # MAE
    assert md.index("QWK") < md.index("MAE")

    fig = p2s.table_figure(rows)
    ax = fig.axes[0]
    bars = [b for c in ax.containers if isinstance(c, BarContainer) for b in c]
    assert len(bars) == 4
    assert sorted(round(b.get_height(), 6) for b in bars) == [0.55, 0.62, 0.675, 0.7]
    points = [y for line in ax.lines if line.get_label() == "_runs" for y in line.get_ydata()]
    assert sorted(points) == sorted(q for *_, q, _ in RUNS)
    assert "n=1-2 runs" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["baseline", "fusion"]


def test_text_table():
    rows = [{"trait": "grammar", "variant": "stack", "run": r, "pair_mode": "cached",
             "qwk": q, "mae": 0.4, "rmse": 0.5} for r, q in ((2, 0.5), (1, 0.7))]
    lines = p2s.text_table(rows).splitlines()
    assert lines[1].split() == ["trait", "stack"]
    assert lines[3].split() == ["grammar", "0.600", "±", "0.141", "(2)"]


def test_errors_name_the_run_dir(tmp_path, run_dirs):
    empty = tmp_path / "runs" / "p2s_unfinished"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="p2s_unfinished: no absolute_metrics.json"):
        p2s.read_run_metrics([run_dirs[0], empty])
    with pytest.raises(FileNotFoundError, match="p2s_never_made: no such run directory"):
        p2s.read_run_metrics([tmp_path / "p2s_never_made"])

    copy = tmp_path / "elsewhere" / "p2s_copy"
    copy.mkdir(parents=True)
    (copy / p2s.METRICS_FILE).write_text((run_dirs[2] / p2s.METRICS_FILE).read_text())
    with pytest.raises(ValueError) as err:
        p2s.read_run_metrics([*run_dirs, copy])
    assert str(run_dirs[2]) in str(err.value) and str(copy) in str(err.value)
    assert "run 1" in str(err.value)

    for key, value, needle in (("qwk", None, "missing key 'qwk'"),
                               ("mae", "0.4", "'mae' should be a number"),
                               ("run", 7, "'run' should be an integer 1-5"),
                               ("variant", "ensemble", "'variant' should be one of")):
        bad = tmp_path / f"bad_{key}"
        bad.mkdir()
        record = json.loads((run_dirs[0] / p2s.METRICS_FILE).read_text())
        if value is None:
            del record[key]
        else:
            record[key] = value
        (bad / p2s.METRICS_FILE).write_text(json.dumps(record))
        with pytest.raises(ValueError, match=f"bad_{key}.*{needle}"):
            p2s.read_run_metrics([bad])


def test_glob_expansion_and_default_prefix(tmp_path, run_dirs):
    (tmp_path / "runs" / "p2s_notes.txt").write_text("not a run")  # files are not runs
    pattern = str(tmp_path / "runs" / "p2s_*")
    assert p2s.expand_run_dirs([pattern, str(run_dirs[0])]) == sorted(run_dirs)
    with pytest.raises(ValueError, match="nothing_\\*: matches no run directory"):
        p2s.expand_run_dirs([str(tmp_path / "nothing_*")])
    assert p2s.default_out_prefix(run_dirs) == tmp_path / "runs" / "pair2score_table"


def _launch(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "launch.pair2score_table", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def test_launcher(tmp_path, run_dirs):
    proc = _launch(f"--runs={tmp_path / 'runs' / 'p2s_*'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    prefix = tmp_path / "runs" / "pair2score_table"
    for ext in (".csv", ".md", ".png"):
        assert (prefix.parent / (prefix.name + ext)).is_file()
        assert f"wrote {prefix}{ext}" in proc.stdout
    assert "0.620 ± 0.028 (2)" in proc.stdout

    bad = _launch(f"--runs={tmp_path / 'no_such_*'}", f"--out={tmp_path / 'x'}")
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1, bad.stderr[-3000:]
    assert "--runs:" in lines[0] and "matches no run directory" in lines[0]
    assert not list(tmp_path.glob("x.*"))
