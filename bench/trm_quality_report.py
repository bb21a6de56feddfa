"""bench/trm_quality.py's output: the method table, the comparison table (the TRM's test
QWK per prompt beside every baseline's, the margin TRM - best baseline with its 95% paired
bootstrap interval, and a verdict), the bootstrap itself and the bar chart. Defines no flags:
the functions take everything they need as arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bench.table import log, print_aligned
from bench.trm_baselines import METHOD_LABELS

# ----------------------------------------------------------------------------- bootstrap


def read_predictions_csv(path: Path) -> dict[int, dict[int, tuple[int, float]]]:
    """evaluate_run's predictions CSV -> {prompt: {essay_id: (gold, predicted_raw)}}."""
    import csv

    out: dict[int, dict[int, tuple[int, float]]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out.setdefault(int(row["prompt"]), {})[int(row["essay_id"])] = (
                int(row["gold"]), float(row["predicted_raw"]))
    return out


def paired_bootstrap(trm: dict[int, dict[int, tuple[int, float]]],
                     base: dict[int, dict[int, float]], prompts: list[int], resamples: int,
                     seed: int = 0) -> dict[str, Any]:
    """Test mean QWK(TRM) - QWK(baseline) with a 95% interval from resampling each
    prompt's test essays with replacement (the same essays for both sides)."""
    from aes_jax.data import asap
    from aes_jax.eval import metrics

    rng = np.random.default_rng(seed)
    observed, diffs = 0.0, np.zeros(resamples)
    for p in prompts:
        if set(trm[p]) != set(base[p]):
            raise AssertionError(f"prompt {p}: the TRM and baseline test essays differ")
        ids = sorted(trm[p])
        lo, hi = asap.score_range(p)
        gold = np.asarray([trm[p][i][0] for i in ids])
        a = metrics.round_and_clip([trm[p][i][1] for i in ids], lo, hi)
        b = metrics.round_and_clip([base[p][i] for i in ids], lo, hi)
        observed += (metrics.qwk(gold, a, lo, hi) - metrics.qwk(gold, b, lo, hi)) / len(prompts)
        for k in range(resamples):
            idx = rng.integers(0, len(ids), len(ids))
            diffs[k] += (metrics.qwk(gold[idx], a[idx], lo, hi)
                         - metrics.qwk(gold[idx], b[idx], lo, hi)) / len(prompts)
    return {"observed": observed, "ci95": [float(np.percentile(diffs, 2.5)),
                                           float(np.percentile(diffs, 97.5))],
            "share_not_better": float(np.mean(diffs <= 0)), "resamples": resamples}


# ----------------------------------------------------------------------------- output


def table(prompts: list[int], baselines: dict, trm: dict | None,
          baseline_s: float) -> list[dict[str, Any]]:
    rows = []
    for m, label in METHOD_LABELS.items():
        b = baselines[m]
        rows.append({"method": label, "key": m,
                     "qwk": {p: b["per_prompt"][p]["test"]["qwk"] for p in prompts},
                     "rmse": {p: b["per_prompt"][p]["test"]["rmse"] for p in prompts},
                     "mean_qwk": b["test_mean_qwk"], "mean_rmse": b["test_mean_rmse"],
                     "dev_mean_qwk": b["dev_mean_qwk"], "wall_s": None})
    rows[-1]["wall_s"] = baseline_s  # all the baselines together
    if trm is not None:
        for key, res, label in (("trm_best", trm["test_best"], f"TRM (best dev, step "
                                 f"{trm['best_step']})"),
                                ("trm_last", trm["test_last"], f"TRM (last, step "
                                 f"{trm['checkpoints'][-1]}; reference)")):
            if key == "trm_last" and trm["best_step"] == trm["checkpoints"][-1]:
                continue  # the same checkpoint as the row above
            rows.append({"method": label, "key": key,
                         "qwk": {p: res["per_prompt"][p]["qwk"] for p in prompts},
                         "rmse": {p: res["per_prompt"][p]["rmse"] for p in prompts},
                         "mean_qwk": res["mean_qwk"], "mean_rmse": res["mean_rmse"],
                         "dev_mean_qwk": trm["dev"][res["step"]]["mean_qwk"],
                         "wall_s": trm["wall_s"] if key == "trm_best" else None})
    return rows


def print_table(rows: list[dict[str, Any]], prompts: list[int]) -> None:
    multi = len(prompts) > 1
    cols = (["method"] + [f"QWK p{p}" for p in prompts] + (["mean QWK"] if multi else [])
            + [f"RMSE p{p}" for p in prompts] + (["mean RMSE"] if multi else [])
            + ["dev QWK", "wall s"])
    lines = [cols]
    for r in rows:
        lines.append([r["method"]] + [f"{r['qwk'][p]:.4f}" for p in prompts]
                     + ([f"{r['mean_qwk']:.4f}"] if multi else [])
                     + [f"{r['rmse'][p]:.4f}" for p in prompts]
                     + ([f"{r['mean_rmse']:.4f}"] if multi else [])
                     + [f"{r['dev_mean_qwk']:.4f}",
                        "" if r["wall_s"] is None else f"{r['wall_s']:.0f}"])
    print_aligned(lines)


def trm_by_prompt(trm: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """run_trm's result (or a saved JSON's "trm") -> {prompt: test QWK of the best-on-dev
    and of the last checkpoint, with their steps}."""
    best, last = trm["test_best"], trm["test_last"]
    return {int(p): {"best": best["per_prompt"][p]["qwk"], "best_step": best["step"],
                     "last": last["per_prompt"][p]["qwk"], "last_step": last["step"]}
            for p in best["per_prompt"]}


def baseline_qwks(baselines: dict[str, Any], prompts: list[int]) -> dict[str, dict[int, float]]:
    return {m: {p: baselines[m]["per_prompt"][p]["test"]["qwk"] for p in prompts}
            for m in METHOD_LABELS}


def verdict_line(margin: float, ci95: list[float] | None) -> str:
    """Says first which side of the best baseline the TRM is on, so a loss reads as one."""
    side = "above" if margin > 0 else "below" if margin < 0 else "level with"
    if ci95 is None:
        return f"TRM {side} best baseline (no interval)"
    sure = ci95[0] > 0 or ci95[1] < 0
    return f"TRM {side} best baseline; interval {'excludes' if sure else 'includes'} 0"


def comparison(prompts: list[int], trm: dict[int, dict[str, Any]],
               base_qwk: dict[str, dict[int, float]],
               trm_preds: dict[int, dict[int, tuple[int, float]]] | None,
               base_preds: dict[str, dict[int, dict[int, float]]],
               resamples: int) -> list[dict[str, Any]]:
    """One row per prompt, plus a mean row for several: the TRM's test QWK beside every
    baseline's, and TRM - best baseline (the highest test QWK: the hardest to beat) with
    its paired bootstrap interval when the TRM's test predictions are at hand."""
    groups = [[p] for p in prompts] + ([prompts] if len(prompts) > 1 else [])
    rows = []
    for group in groups:
        def mean(values: dict[int, float]) -> float:
            return float(np.mean([values[p] for p in group]))

        base = {m: mean(q) for m, q in base_qwk.items()}
        best = max(base, key=base.get)
        trm_q = {k: mean({p: trm[p][k] for p in group}) for k in ("best", "last")}
        steps = {k: sorted({trm[p][f"{k}_step"] for p in group}) for k in ("best", "last")}
        boot = None
        if trm_preds is not None and resamples:
            boot = paired_bootstrap(trm_preds, base_preds[best], group, resamples)
            if abs(boot["observed"] - (trm_q["best"] - base[best])) > 1e-6:
                log(f"WARNING: prompts {group}: the TRM's test predictions give a margin of "
                    f"{boot['observed']:+.4f}, its saved QWKs {trm_q['best'] - base[best]:+.4f}")
        margin = trm_q["best"] - base[best]
        ci95 = boot["ci95"] if boot else None
        rows.append({"prompt": group[0] if len(group) == 1 else "mean", "prompts": group,
                     "n_test": sum(len(base_preds["constant"][p]) for p in group),
                     "trm_best": trm_q["best"], "trm_best_steps": steps["best"],
                     "trm_last": trm_q["last"], "trm_last_steps": steps["last"],
                     "baselines": base, "best_baseline": best, "margin": margin,
                     "ci95": ci95, "bootstrap": boot, "verdict": verdict_line(margin, ci95)})
    return rows


def print_comparison(rows: list[dict[str, Any]], resamples: int) -> None:
    print(f"\nTest QWK per prompt, TRM beside every baseline; best = the baseline with the "
          f"highest test QWK; interval: 95% paired bootstrap of the test essays "
          f"({resamples or 'no'} resamples)")

    def at(q: float, steps: list[int]) -> str:
        return f"{q:.4f}" + (f" @{steps[0]}" if len(steps) == 1 else "")

    lines = [["prompt", "n test", "TRM best-dev", "TRM last", *METHOD_LABELS,
              "best baseline", "TRM - best [95% CI]", "verdict"]]
    for r in rows:
        ci = "" if r["ci95"] is None else f" [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]"
        lines.append([str(r["prompt"]), str(r["n_test"]), at(r["trm_best"], r["trm_best_steps"]),
                      at(r["trm_last"], r["trm_last_steps"]),
                      *(f"{r['baselines'][m]:.4f}" for m in METHOD_LABELS), r["best_baseline"],
                      f"{r['margin']:+.4f}{ci}", r["verdict"]])
    print_aligned(lines)


def bar_chart(rows: list[dict[str, Any]], prompts: list[Any], title: str, path: Path,
              group_label: Any = "p{}".format) -> None:
    """QWK and RMSE bars per method (rows) for each group (prompts; Pair2Score: traits)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = [group_label(p) for p in prompts] + (["mean"] if len(prompts) > 1 else [])
    fig = Figure(figsize=(max(7.0, 1.6 * len(groups) * len(rows) / 2), 4.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    width = 0.8 / len(rows)
    x = np.arange(len(groups))
    for ax, metric in zip(axes, ("qwk", "rmse")):
        for k, r in enumerate(rows):
            vals = [r[metric][p] for p in prompts] + (
                [r[f"mean_{metric}"]] if len(prompts) > 1 else [])
            bars = ax.bar(x + (k - (len(rows) - 1) / 2) * width, vals, width, label=r["method"])
            for b, v in zip(bars, vals):
                ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, v), ha="center",
                            va="bottom", fontsize=6)
        ax.set_xticks(x, groups)
        what = "QWK (higher is better)" if metric == "qwk" else "RMSE (lower is better)"
        ax.set_title(f"test {what}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(3, len(rows)), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.05 + 0.05 * ((len(rows) + 2) // 3), 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
