"""The tables, verdicts and chart of bench/pair2score_quality.py, from its results dict
(defines no flags)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bench.table import print_aligned
from bench.trm_quality_report import bar_chart

METHODS = {"constant": "constant (train mean)", "tfidf_ridge": "TF-IDF ridge",
           "baseline": "baseline", "warm_start": "warm_start", "warm_start_frozen":
           "warm_start_frozen", "stack": "stack", "fusion": "fusion",
           "in_batch": "in-batch S1 + warm_start"}


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _ci(diff: dict[str, Any] | None) -> str:
    if not diff:
        return "-"
    lo, hi = diff["ci95"]
    return f"{diff['observed']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _seconds(result: dict[str, Any], stage: str, shared: bool) -> str:
    seconds = result.get("train_seconds_this_invocation", {}).get(stage)
    if seconds is None:
        return "-"
    return "shared" if shared and stage == "relative" else f"{seconds:.0f}"


def trait_rows(block: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = [("method", "QWK", "MAE", "RMSE", "QWK - baseline [95% CI]", "S1 pair acc",
             "anchor QWK", "S1 s", "S2 s", "S1 tok/s", "S2 tok/s", "S1 MFU", "S2 MFU")]
    for name, m in block["baselines"].items():
        rows.append((METHODS[name], _f(m["qwk"]), _f(m["mae"]), _f(m["rmse"])) + ("-",) * 9)
    first_stage1 = next((n for n in block["runs"] if n not in ("baseline", "in_batch")), None)
    for name, r in block["runs"].items():
        speed = r.get("speed", {})
        s1, s2 = speed.get("relative", {}), speed.get("absolute", {})
        shared = name not in ("baseline", "in_batch") and name != first_stage1
        rows.append((METHODS.get(name, name), _f(r["qwk"]), _f(r["mae"]), _f(r["rmse"]),
                     _ci(block["vs_baseline"].get(name)), _f(r.get("stage1_pair_accuracy")),
                     _f(r.get("anchor_qwk")), _seconds(r, "relative", shared),
                     _seconds(r, "absolute", False), _f(s1.get("tokens_per_s"), 0),
                     _f(s2.get("tokens_per_s"), 0), _f(s1.get("mfu"), 4),
                     _f(s2.get("mfu"), 4)))
    return rows


def verdicts(results: dict[str, Any]) -> list[str]:
    """Where transfer beats the baseline, and plainly where it does not."""
    lines = []
    for trait, block in results["traits"].items():
        for name, diff in block["vs_baseline"].items():
            lo, hi = diff["ci95"]
            if diff["observed"] <= 0:
                what = "does NOT beat the baseline"
            elif lo > 0:
                what = "beats the baseline (interval above 0)"
            else:
                what = "is above the baseline, but the interval includes 0 (not solid)"
            lines.append(f"{trait}: {METHODS.get(name, name)} {what}: QWK {_ci(diff)}")
        tfidf = block["baselines"].get("tfidf_ridge", {}).get("qwk")
        best = max(block["runs"].items(), key=lambda kv: kv[1]["qwk"])
        if tfidf is not None and best[1]["qwk"] <= tfidf:
            lines.append(f"{trait}: no Pair2Score run beats the TF-IDF ridge ({_f(tfidf)}; best "
                         f"{METHODS.get(best[0], best[0])} {_f(best[1]['qwk'])})")
    return lines


def in_batch_rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """Cached pairs vs in-batch all pairs: Stage-1 throughput and what Stage 2 reaches."""
    batch = results["settings"]["batch"]
    rows = [("trait", "Stage 1", "essays/step", "pairs/step", "pairs/s", "essays/s", "S1 s",
             "S1 pair acc", "S2 QWK (warm_start)")]
    for trait, block in results["traits"].items():
        runs = block["runs"]
        if "in_batch" not in runs or "warm_start" not in runs:
            continue
        for label, r in (("cached pairs", runs["warm_start"]), ("in-batch", runs["in_batch"])):
            s1 = r.get("speed", {}).get("relative", {})
            steps, pairs = s1.get("steps_per_s"), s1.get("pairs_in_batch")
            essays = 2 * batch
            rows.append((trait, label, str(essays), _f(pairs, 1),
                         _f(steps * pairs if steps and pairs else None, 2),
                         _f(steps * essays if steps else None, 2),
                         _seconds(r, "relative", False), _f(r.get("stage1_pair_accuracy")),
                         _f(r["qwk"])))
    return rows if len(rows) > 1 else []


def _markdown(rows: list[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return out + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def write_report(results: dict[str, Any], out: Path) -> list[Path]:
    s = results["settings"]
    head = (f"Pair2Score, run {s['run']} (held-out fold E), {s['model']}; "
            f"{s['essays_per_fold'] or 'all'} essays per fold, seq_len {s['seq_len']}, "
            f"Stage 1 {s['stage1_steps']} steps x {s['batch']} pairs, Stage 2 "
            f"{s['stage2_steps']} steps x {s['batch']} essays, lr {s['stage1_lr']:g} / "
            f"{s['stage2_lr']:g}, head bias {s['head_bias']}, pair cache {s['size']}")
    md = [f"# {head}", ""]
    print(head)
    for trait, block in results["traits"].items():
        rows = trait_rows(block)
        base, best = results["reference"].get(trait, (None, None))
        n = next(iter(block["runs"].values()))["n"]
        title = (f"{trait} ({int(n)} held-out essays); the original's means (LLaMA-3.2-1B, "
                 f"5 runs): baseline {_f(base)}, best transfer {_f(best)}")
        print(f"\n{title}")
        print_aligned(rows)
        md += [f"## {title}", ""] + _markdown(rows) + [""]
    lines = verdicts(results)
    print("\n" + "\n".join(lines))
    md += ["## Verdicts", ""] + [f"- {line}" for line in lines] + [""]
    ib = in_batch_rows(results)
    if ib:
        print("\ncached pairs vs in-batch all pairs (Stage 1), same steps and essays per step:")
        print_aligned(ib)
        md += ["## Cached pairs vs in-batch all pairs (Stage 1)", ""] + _markdown(ib) + [""]
    paths = [out / "report.md"]
    paths[0].write_text("\n".join(md))
    traits = list(results["traits"])
    chart = []
    for name in ("constant", "tfidf_ridge", "baseline", "warm_start", "fusion", "in_batch"):
        blocks = [results["traits"][t] for t in traits]
        values = [b["baselines"].get(name) or b["runs"].get(name) for b in blocks]
        if all(values):
            row = {"method": METHODS[name], "qwk": {}, "rmse": {}}
            for t, v in zip(traits, values):
                row["qwk"][t], row["rmse"][t] = v["qwk"], v["rmse"]
            row["mean_qwk"] = sum(row["qwk"].values()) / len(traits)
            row["mean_rmse"] = sum(row["rmse"].values()) / len(traits)
            chart.append(row)
    png = out / "pair2score_quality.png"
    short = (f"Pair2Score run {s['run']}, {s['model']}, held-out fold E\n"
             f"{s['essays_per_fold'] or 'all'} essays/fold, seq_len {s['seq_len']}, S1 "
             f"{s['stage1_steps']} / S2 {s['stage2_steps']} steps x {s['batch']}")
    bar_chart(chart, traits, short, png, group_label=str)
    return paths + [png, out / "results.json"]
