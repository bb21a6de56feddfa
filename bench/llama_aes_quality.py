"""LLaMA-AES quality on real essays, next to simple baselines on the same split.

    # ELLIPSE, fold 0 as test (needs ../shared/data/ell); GPU run
    python -m bench.llama_aes_quality --data=ell --variants=ce,ce_ntl,ce_ntl_emo \
        --total_steps=250 --dtype=bfloat16
    # a small CPU slice (first N train / test essays)
    python -m bench.llama_aes_quality --data=ell --limit_train=64 --limit_test=16 \
        --total_steps=8 --batch=4 --ms=1,4 --tag=cpu_slice
    # merge the per-variant JSONs written so far into one table + PNG
    python -m bench.llama_aes_quality --report_only --tag=gpu

Baselines (fit on the train split, scored on test): a constant (the train mean per trait)
and TF-IDF (word 1-2 grams) ridge regression per trait. Each variant fine-tunes the model
with LoRA (launch.train's loop), then decodes the test essays greedily (parsed digits and
expected-score digits) and samples M answers per essay for majority / average votes at
each m in --ms. MCRMSE is on the original scale (ELLIPSE 1.0-5.0), QWK on the digit scale;
"expected" rounds the expected value to a digit, "expected_continuous" keeps it unrounded
for MCRMSE (its QWK is the rounded one). Unreadable answers and all-failed votes fall back
to the most frequent training digit.
Per-variant results land in OUT_DIR/TAG_VARIANT.json as soon as they exist, so a run cut
short keeps what it finished; --report_only rebuilds the table from them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

DATA = flags.DEFINE_enum("data", "ell", ["ell", "asap"], "ELLIPSE (5 folds) or ASAP++ traits.")
DATA_DIR = flags.DEFINE_string("data_dir", None, "A built mtl dataset dir; default: build "
                               "from ../shared/data into OUT_DIR/data_<data>.")
ASAP_PROMPTS = flags.DEFINE_string("asap_prompts", "3,4", "--data=asap: prompts sharing traits.")
VARIANTS = flags.DEFINE_list("variants", ["ce", "ce_ntl", "ce_ntl_emo"], "Loss variants.")
MODEL = flags.DEFINE_string("model", "", "'' = packaged SmolLM2-135M-Instruct; a HF dir; tiny.")
TOTAL_STEPS = flags.DEFINE_integer("total_steps", 250, "Training steps per variant.")
BATCH = flags.DEFINE_integer("batch", 16, "Global batch size.")
LR = flags.DEFINE_float("lr", 5e-4, "Peak learning rate (LoRA).")
SEQ_LEN = flags.DEFINE_integer("seq_len", 768, "Prompt + answer tokens (essays cut to fit).")
DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Compute dtype.")
LIMIT_TRAIN = flags.DEFINE_integer("limit_train", 0, "First N train essays; 0 = all.")
LIMIT_TEST = flags.DEFINE_integer("limit_test", 0, "First N test essays; 0 = all.")
MS = flags.DEFINE_list("ms", ["1", "4", "16"], "Vote sizes m; M = max(ms) samples per essay.")
TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature for votes.")
SAMPLE_ROWS = flags.DEFINE_integer("sample_rows", 256, "Sequences per sampling batch.")
OUT_DIR = flags.DEFINE_string("out_dir", str(REPO / "bench" / "results" / "llama_aes_quality"),
                              "Where runs, per-variant JSONs, the table and the PNG go.")
TAG = flags.DEFINE_string("tag", "run", "Prefix of this run's files.")
REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only merge existing JSONs.")

VARIANT_LOSSES = {  # config overrides; a negative weight selects dynamic weighting
    "ce": dict(ntl_weight=0.0, emo_weight=0.0),
    "ce_ntl": dict(ntl_weight=1.0, emo_weight=0.0),
    "ce_ntl_was": dict(ntl_weight=1.0, emo_weight=0.0, ntl_type="was"),
    "ce_ntl_emo": dict(ntl_weight=1.0, emo_weight=-1.0),  # EMO's default: the dot form
    # EMO as in the public code, 1 - <e_gold, q>, spelled out (the default since the fix)
    "ce_ntl_emo_dot": dict(ntl_weight=1.0, emo_weight=-1.0, emo_normalize=False),
    # the cosine form 1 - cos(e_gold, q), blind to p(gold) (losses/emo.py)
    "ce_ntl_emo_cos": dict(ntl_weight=1.0, emo_weight=-1.0, emo_normalize=True),
}


def build_data(out_dir: Path) -> Path:
    from aes_jax.data.mtl_dataset import build_mtl

    if DATA_DIR.value:
        return Path(DATA_DIR.value)
    target = out_dir / f"data_{DATA.value}"
    if (target / "manifest.json").is_file():
        return target
    source = SHARED / ("ell" if DATA.value == "ell" else "asap_traits")
    if not source.exists():
        raise app.UsageError(f"{source} is missing: this benchmark needs the real essays "
                             "(../shared/data, see its README) or --data_dir")
    if DATA.value == "ell":
        build_mtl(str(source), target, feedback="rubric", test_fold=0)
    else:
        build_mtl(str(source), target, feedback="rubric", prompt_set=ASAP_PROMPTS.value)
    return target


def _scores_of(example, codecs) -> list[float]:
    from aes_jax.data.answer_format import parse_scores

    if example.scores:
        return list(example.scores)
    digits, _ = parse_scores(example.output, len(codecs))
    return [c.decode(d) for c, d in zip(codecs, digits)]


def baselines(data_dir: Path) -> list[dict]:
    """Constant (train mean) and TF-IDF ridge per trait, on the same train/test split."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge

    from aes_jax.data.mtl_io import load_mtl_dir
    from aes_jax.data.score_codec import ScoreCodec

    manifest, splits = load_mtl_dir(data_dir)
    codecs = [ScoreCodec.from_dict(c) for c in manifest["codecs"]]
    train = splits["train"][:LIMIT_TRAIN.value or None]
    test = splits["test"][:LIMIT_TEST.value or None]
    y_train = np.array([_scores_of(e, codecs) for e in train])
    y_test = np.array([_scores_of(e, codecs) for e in test])
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=50000)
    x_train = vec.fit_transform([e.essay for e in train])
    ridge = Ridge(alpha=1.0).fit(x_train, y_train)
    rows = []
    for name, pred in (("constant (train mean)", np.tile(y_train.mean(0), (len(test), 1))),
                       ("tfidf ridge", ridge.predict(vec.transform([e.essay for e in test])))):
        rows.append(_row(name, manifest["traits"], codecs, y_test, pred))
    return rows


def _snap(codec, values):
    """Original-scale predictions -> the nearest digit on the codec's grid."""
    import numpy as np

    values = np.clip(values, codec.values[0], codec.values[-1])
    steps = np.floor((values - codec.values[0]) / codec.step + 0.5)
    return np.array([codec.encode(codec.values[0] + s * codec.step) for s in steps])


def _row(name: str, traits, codecs, y_true, y_pred, digits_true=None, digits_pred=None) -> dict:
    """MCRMSE (original scale) and QWK per trait (digit scale) for one method."""
    import numpy as np

    from aes_jax.eval import metrics

    qwk = {}
    for k, (trait, codec) in enumerate(zip(traits, codecs)):
        lo, hi = codec.digit_range
        dt = digits_true[:, k] if digits_true is not None else _snap(codec, y_true[:, k])
        dp = digits_pred[:, k] if digits_pred is not None else _snap(codec, y_pred[:, k])
        qwk[trait] = metrics.qwk(np.asarray(dt, int), np.asarray(dp, int), lo, hi)
    return {"method": name, "mcrmse": metrics.mcrmse(y_true, y_pred),
            "qwk_mean": float(np.mean(list(qwk.values()))), "qwk": qwk}


def run_variant(variant: str, data_dir: Path, out_dir: Path) -> dict:
    """Train one loss variant, then greedy / expected / vote scoring on the test split."""
    import jax
    import numpy as np

    from aes_jax.eval import llm_scoring
    from aes_jax.eval import self_consistency as sc
    from aes_jax.eval.generate import SamplingConfig
    from aes_jax import tasks
    from aes_jax.runs import restore_params
    from aes_jax.train import loop
    from configs.llama_aes import get_config

    config = get_config("tiny" if MODEL.value == "tiny" else None)
    if MODEL.value:
        config.model = MODEL.value
    config.data.dir = str(data_dir)
    config.data.seq_len = SEQ_LEN.value
    for key, value in VARIANT_LOSSES[variant].items():
        config[key] = value
    config.total_steps = TOTAL_STEPS.value
    config.global_batch_size = config.eval_batch_size = BATCH.value
    config.optimizer.lr = LR.value
    config.optimizer.warmup_steps = max(1, TOTAL_STEPS.value // 20)
    config.dtype = DTYPE.value
    config.log_every = max(1, TOTAL_STEPS.value // 25)
    config.eval_every = TOTAL_STEPS.value
    config.checkpoint_every = TOTAL_STEPS.value
    config.data.limit_train = LIMIT_TRAIN.value
    config.data.limit_eval = LIMIT_TEST.value  # the dev slice, as small as the test slice
    workdir = out_dir / "runs" / f"{TAG.value}_{variant}"
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    task = tasks.build(config, workdir)  # the same task trains, then scores
    start = time.perf_counter()
    last = loop.train(task, config, workdir)
    train_s = time.perf_counter() - start

    step, trainable, frozen = restore_params(workdir, config, task)
    inputs = task.split_essays("test", limit=LIMIT_TEST.value)
    fmt = task.score_format()
    cfg, params = task.inference_model(trainable, frozen)
    start = time.perf_counter()
    greedy = llm_scoring.score_inputs(cfg, params, task.tokenizer, fmt, inputs, batch_size=64,
                                      max_new_tokens=4 * len(task.traits) + 8)
    greedy_s = time.perf_counter() - start
    traits, codecs = task.traits, task.codecs

    def to_scores(digits):
        return np.stack([c.to_scores(digits[:, k]) for k, c in enumerate(codecs)], 1)

    gold = greedy["gold"]
    y_true = to_scores(gold)
    rows = [_row(f"{variant} greedy", traits, codecs, y_true, to_scores(greedy["greedy"]),
                 gold, greedy["greedy"]),
            _row(f"{variant} expected", traits, codecs, y_true, to_scores(greedy["expected"]),
                 gold, greedy["expected"]),
            # MCRMSE of the unrounded expected value; QWK of its rounded digits as above
            _row(f"{variant} expected_continuous", traits, codecs, y_true,
                 to_scores(llm_scoring.continuous_expected(fmt, greedy["expected_raw"])),
                 gold, greedy["expected"])]
    ms = sorted(int(m) for m in MS.value)
    sampling = SamplingConfig(max_new_tokens=4 * len(traits) + 8,
                              temperature=TEMPERATURE.value, stop_token_ids=fmt.stop_token_ids(),
                              pad_token_id=task.tokenizer.pad_id)
    start = time.perf_counter()
    bank = llm_scoring.sample_bank(cfg, params, task.tokenizer, fmt, inputs, ms[-1], sampling,
                                   essays_per_batch=max(1, SAMPLE_ROWS.value // ms[-1]),
                                   seed=0, keep_texts=False)
    sample_s = time.perf_counter() - start
    sc.save_bank(bank, out_dir / f"{TAG.value}_{variant}_bank.json")
    samples, _ = sc.bank_arrays(bank)
    fallbacks = list(fmt.fallback_digits)
    for method in sc.METHODS:
        for m in ms:
            votes = sc.vote(samples, m, method, fallbacks)
            rows.append(_row(f"{variant} {method}@{m}", traits, codecs, y_true,
                             to_scores(votes.astype(float)), gold, votes))
    analysis = sc.analyze(bank, ms=list(range(1, ms[-1] + 1)))  # the bank's fallbacks
    result = {"variant": variant, "step": step, "train_seconds": train_s,
              "greedy_seconds": greedy_s, "sample_seconds": sample_s,
              "samples_per_second": len(inputs) * ms[-1] / sample_s,
              "parse_failures_greedy": greedy["parse_failures"],
              "num_test": len(inputs), "last_train_metrics": last, "rows": rows,
              "qwk_vs_m": {meth: analysis["methods"][meth]["overall"] for meth in sc.METHODS},
              "device": jax.devices()[0].device_kind, "settings": _settings()}
    path = out_dir / f"{TAG.value}_{variant}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {path}", flush=True)
    return result


def _settings() -> dict:
    return {"data": DATA.value, "model": MODEL.value or "smollm2-135m-instruct",
            "total_steps": TOTAL_STEPS.value, "batch": BATCH.value, "lr": LR.value,
            "seq_len": SEQ_LEN.value, "dtype": DTYPE.value, "limit_train": LIMIT_TRAIN.value,
            "limit_test": LIMIT_TEST.value, "ms": MS.value, "temperature": TEMPERATURE.value}


def report(out_dir: Path, data_dir: Path | None) -> None:
    from aes_jax.eval import plots
    from bench.table import print_aligned

    results = [json.loads((out_dir / f"{TAG.value}_{v}.json").read_text())
               for v in VARIANTS.value if (out_dir / f"{TAG.value}_{v}.json").is_file()]
    if not results:
        raise app.UsageError(f"no {TAG.value}_*.json in {out_dir}")
    rows = baselines(data_dir) if data_dir else []
    for r in results:
        rows.extend(r["rows"])
    traits = list(rows[0]["qwk"])
    lines = [("method", "MCRMSE", "QWK mean") + tuple(t[:10] for t in traits)]
    for row in rows:
        lines.append((row["method"], f"{row['mcrmse']:.4f}", f"{row['qwk_mean']:.3f}")
                     + tuple(f"{row['qwk'][t]:.3f}" for t in traits))
    print_aligned(lines)
    llm = [r for r in rows if r["method"].split()[0] in VARIANT_LOSSES]
    ridge = next((r for r in rows if r["method"] == "tfidf ridge"), None)
    best = min(llm, key=lambda r: r["mcrmse"])
    verdict = (f"best fine-tuned LLM method: {best['method']} MCRMSE {best['mcrmse']:.4f}"
               + (f" vs TF-IDF ridge {ridge['mcrmse']:.4f}: "
                  + ("beats the ridge" if best["mcrmse"] < ridge["mcrmse"] else
                     "does NOT beat the TF-IDF ridge, so it is not yet useful")
                  if ridge else ""))
    print(verdict)
    for r in results:
        print(f"{r['variant']}: train {r['train_seconds']:.0f} s, greedy {r['greedy_seconds']:.0f} s,"
              f" sampling {r['samples_per_second']:.1f} samples/s, greedy parse failures "
              f"{r['parse_failures_greedy']}, {r['num_test']} test essays, {r['device']}")
    summary = {"tag": TAG.value, "rows": rows, "verdict": verdict,
               "runs": [{k: v for k, v in r.items() if k != "rows"} for r in results]}
    (out_dir / f"{TAG.value}_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    m_max = len(next(iter(results[0]["qwk_vs_m"].values())))
    series = {f"{r['variant']} {meth}": vals for r in results
              for meth, vals in r["qwk_vs_m"].items()}
    plots.qwk_vs_m_png(list(range(1, m_max + 1)), series, out_dir / f"{TAG.value}_qwk_vs_m.png")
    print(f"wrote {out_dir / f'{TAG.value}_summary.json'} and {TAG.value}_qwk_vs_m.png")


def main(argv):
    del argv
    from absl import logging

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_dir = Path(OUT_DIR.value)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = set(VARIANTS.value) - set(VARIANT_LOSSES)
    if unknown:
        raise app.UsageError(f"unknown variants {sorted(unknown)}; known {list(VARIANT_LOSSES)}")
    data_dir = build_data(out_dir)
    if not REPORT_ONLY.value:
        for variant in VARIANTS.value:
            run_variant(variant, data_dir, out_dir)
    report(out_dir, data_dir)


if __name__ == "__main__":
    app.run(main)
