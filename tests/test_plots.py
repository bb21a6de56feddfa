"""What the evaluation figures say, read from their matplotlib objects (the PNG sizes are
checked in test_metrics.py)."""

import json
import types

import numpy as np
import pytest

from aes_jax.eval import metrics, plots
from aes_jax.tasks.trm_aes import TRMAesTask


def _metrics_log(tmp_path, qwks):
    log = tmp_path / "run" / "metrics.jsonl"
    log.parent.mkdir()
    lines = [{"step": s, "loss": 1.0 / s} for s in range(1, 11)]
    lines += [{"step": 2 * (k + 1), "eval_loss": 0.5, "eval_mean_qwk": q}
              for k, q in enumerate(qwks)]
    log.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return log


def test_confusion_matrix_title_counts_and_integer_scale(tmp_path):
    gold, pred = [0, 1, 1, 2, 3, 3, 3], [0, 1, 2, 2, 3, 3, 2]
    cm = metrics.confusion_matrix(gold, pred, 0, 3)
    qwk = metrics.qwk(gold, pred, 0, 3)
    fig = plots.confusion_matrix_figure(cm, [0, 1, 2, 3], "prompt 3 (test, step 300)", qwk=qwk)
    ax = fig.axes[0]
    assert ax.get_title() == f"prompt 3 (test, step 300): n=7, QWK {qwk:.3f}"
    ticks = ax.images[0].colorbar.get_ticks()
    assert len(ticks) >= 2 and np.array_equal(ticks, np.round(ticks))
    assert ax.images[0].get_clim() == (0, 2)  # the scale starts at no essays
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(int(c)) for c in cm.ravel())
    # Without a QWK the count is still there; PNGs render.
    plain = plots.confusion_matrix_figure(cm, [0, 1, 2, 3], "prompt 3")
    assert plain.axes[0].get_title() == "prompt 3: n=7"
    assert plots.confusion_matrix_png(cm, [0, 1, 2, 3], "p3", tmp_path / "cm.png",
                                      qwk=qwk).stat().st_size > 0
    with pytest.raises(ValueError, match="non-integer"):
        plots.confusion_matrix_figure(cm / 2, [0, 1, 2, 3], "halves")


def test_trm_eval_artifacts_title_the_confusion_matrices(tmp_path, monkeypatch):
    rows = {"essay_id": np.arange(6), "prompt": np.array([3, 3, 3, 3, 4, 4]),
            "gold": np.array([0, 1, 2, 3, 1, 2]), "pred": np.array([0, 1, 3, 3, 1, 1]),
            "pred_raw": np.array([0.1, 1.2, 2.6, 3.0, 1.0, 1.4]), "steps": np.ones(6)}
    task = types.SimpleNamespace(predictions=lambda outputs: rows,
                                 ranges={3: (0, 3), 4: (0, 3)})
    titles = []
    build = plots.confusion_matrix_figure

    def recording(*args, **kwargs):
        fig = build(*args, **kwargs)
        titles.append(fig.axes[0].get_title())
        return fig

    monkeypatch.setattr(plots, "confusion_matrix_figure", recording)
    TRMAesTask.write_eval_artifacts(task, [], tmp_path, split="test", step=300)
    q3 = metrics.qwk([0, 1, 2, 3], [0, 1, 3, 3], 0, 3)
    q4 = metrics.qwk([1, 2], [1, 1], 0, 3)
    assert titles == [f"prompt 3 (test, step 300): n=4, QWK {q3:.3f}",
                      f"prompt 4 (test, step 300): n=2, QWK {q4:.3f}"]
    assert (tmp_path / "confusion_test_p4.png").is_file()


def test_learning_curve_names_the_split_on_a_fixed_qwk_axis(tmp_path):
    log = _metrics_log(tmp_path, [0.2, 0.4, 0.45])
    fig = plots.learning_curve_figure(log, keys=("loss", "eval_loss"),
                                      extra_keys=("eval_mean_qwk",),
                                      labels={"eval_mean_qwk": "dev mean QWK"})
    ax, twin = fig.axes
    assert twin.get_ylim() == (0.0, 1.0)
    assert twin.get_ylabel() == "dev mean QWK"
    assert "dev mean QWK" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert plots.learning_curve_png(log, tmp_path / "curve.png",
                                    labels={"eval_mean_qwk": "dev mean QWK"}).is_file()


def test_learning_curve_qwk_axis_shows_below_chance(tmp_path):
    fig = plots.learning_curve_figure(_metrics_log(tmp_path, [-0.25, 0.1]))
    assert fig.axes[1].get_ylim() == (-0.25, 1.0)
    assert fig.axes[1].get_ylabel() == "eval_mean_qwk"  # no label given: the key
