"""bench/suite_rows.py: each benchmark's JSON -> the suite's common rows, the Markdown
table, the default output path. The payloads are cut-down copies of what the benchmarks
wrote in a `python -m bench.suite --device=cpu --smoke` run (same keys and nesting, fewer
of them). No subprocess run of the suite here: its smoke run takes over a minute on 2 cores.
"""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest

from bench import suite_rows as sr


def timing(tok_s: float, compile_s: float | None = None, peak: int | None = None) -> dict:
    return {"tokens_per_s": tok_s, "step_s": [64 / tok_s], "median_step_s": 64 / tok_s,
            "compile_s": compile_s, "peak_mem": "n/a", "peak_bytes": peak}


def llama_config(**kw) -> dict:
    base = {"model": "tiny", "params": 4999424, "layers": 4, "batch": 1, "seq_len": 64,
            "steps": 1, "warmup": 0, "dtype": "float32", "scan_layers": True, "remat": False,
            "jax_devices": ["cpu:0"], "torch_device": "cpu", "rows": ["forward", "fwd+bwd"]}
    return {**base, **kw}


def forward_payload(compile_s: float = 2.6, **config) -> dict:
    return {"config": llama_config(**config),
            "parity": {"positions": 64, "max_abs_diff": 1.25e-06, "mean_kl": 1.8e-14,
                       "top1_agreement": 1.0, "jax_loss": 8.326173, "torch_loss": 8.326172,
                       "grad_max_abs_diff": 1.6e-07, "grad_max_rel_l2": 1.3e-06,
                       "grad_worst_tensor": "model.layers.3.self_attn.k_proj.weight"},
            "rows": [{"row": "forward", "jax_tok_s": 8000.0, "torch_tok_s": 2000.0,
                      "ratio_jax_over_torch": 4.0, "jax": timing(8000.0, 0.5, 3 * 2**20),
                      "torch": timing(2000.0, None, 2**20)},
                     {"row": "fwd+bwd", "jax_tok_s": 1800.0, "torch_tok_s": 900.0,
                      "ratio_jax_over_torch": 2.0, "jax": timing(1800.0, compile_s),
                      "torch": timing(900.0)}]}


def train_row(mode: str, jax_loss: float, torch_loss: float, compiled: bool) -> dict:
    row = {"row": mode, "mode": mode, "jax_tok_s": 1380.0, "torch_tok_s": 115.0,
           "ratio_jax_over_torch": 12.0, "ratio_median_jax_over_torch": 12.0,
           "jax": timing(1380.0, 3.3), "torch": timing(115.0),
           "jax_trainable_params": 57344, "torch_trainable_params": 57344,
           "parity": {"jax_loss_1": jax_loss, "torch_loss_1": torch_loss,
                      "jax_grad_norm_1": 0.88, "torch_grad_norm_1": 0.88,
                      "jax_loss_2": 8.31, "torch_loss_2": 8.31,
                      "loss_1_abs_diff": abs(jax_loss - torch_loss), "loss_2_abs_diff": 2e-4},
           "jax_mfu": 0.31, "torch_mfu": 0.25, "torch_attn_implementation": "sdpa",
           "autocast": True}
    if compiled:
        row["torch_compiled"] = {
            "torch_tok_s": 230.0, "ratio_jax_over_torch": 6.0, "ratio_median_jax_over_torch": 6.0,
            "torch": timing(230.0, 43.2), "torch_mfu": 0.5,
            "parity": {"first_step_s": 43.2, "torch_loss_1": 8.32601, "torch_grad_norm_1": 0.88,
                       "loss_1_abs_diff": 3.3e-4, "torch_loss_2": 8.3123,
                       "loss_2_abs_diff": 3.5e-4}}
    return row


def train_payload() -> dict:
    config = llama_config(loss_atol=0.05, autocast=True, jax_param_dtype="float32",
                          jax_dtype="bfloat16", torch_compile=["lora"], torch_attn="sdpa",
                          flops_per_token=24477696.0, modes=["lora", "full"],
                          lora={"rank": 8, "alpha": 16.0, "dropout": 0.0,
                                "targets": ["q_proj", "k_proj", "v_proj", "o_proj"]})
    return {"config": config, "rows": [train_row("lora", 8.325676, 8.32593, True),
                                       train_row("full", 8.325676, 8.5, False)]}


def sampling_payload() -> dict:
    config = {"model": "tiny", "essays": 2, "samples_per_essay": 2, "rows": 4,
              "max_new_tokens": 4, "temperature": 1.0, "top_k": 50, "top_p": 1.0,
              "repeats": 1, "dtype": "float32", "prompts": "synthetic: random ids, 32 tokens",
              "padded_prompt_len": 32, "torch_device": "cpu"}
    return {"config": config,
            "parity": {"positions": 2, "max_abs_diff": 7.7e-07, "mean_kl": 1.7e-14,
                       "max_kl": 1.7e-14, "top1_agreement": 1.0, "logit_atol": 0.01},
            "rows": [{"side": "jax", "samples_per_s": 140.0, "gen_tok_per_s": 560.0,
                      "median_run_s": 0.03, "run_s": [0.03], "peak_mem": "n/a",
                      "peak_bytes": None, "warmup_s": 2.1, "compile_s_est": 1.8,
                      "ratio_jax_over_torch": 28.0, "ratio_median_jax_over_torch": 28.0},
                     {"side": "torch", "samples_per_s": 5.0, "gen_tok_per_s": 20.0,
                      "median_run_s": 0.8, "run_s": [0.8], "peak_mem": "n/a",
                      "peak_bytes": 123 * 2**20, "warmup_s": 1.7}],
            "jax_eos_stats": {"rows_with_eos": 0, "rows": 4}, "notes": []}


def trm_payload() -> dict:
    row = {"variant": "demo", "batch": 4, "seq_len": 32, "real_tokens_per_step": 86,
           "params": 11827334, "model": {"hidden_size": 64, "n_sup": 2}, "use_halting": True,
           "num_outputs": 5, "jax_steps_per_s": 13.5, "torch_steps_per_s": 0.33,
           "jax": timing(1700.0, 4.0), "torch": timing(42.0),
           "parity": {"jax_loss_1": 1.6356006, "torch_loss_1": 1.6356010,
                      "loss_1_abs_diff": 4.8e-07, "lr_1": 0.0},
           "ratio_jax_over_torch": 13.5 / 0.33, "ratio_median_jax_over_torch": 40.0}
    return {"config": {"variants": ["demo"], "steps": 1, "warmup": 0, "torch_device": "cpu"},
            "rows": [row]}


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {r["name"]: r for r in rows}


def assert_required(rows: list[dict]) -> None:
    for r in rows:
        assert set(sr.REQUIRED) <= set(r), r["name"]


def test_forward_rows():
    rows = by_name(sr.forward_rows(forward_payload()))
    assert list(rows) == ["llama_forward/tiny/T64", "llama_fwd_bwd/tiny/T64"]
    assert_required(rows.values())
    fwd = rows["llama_forward/tiny/T64"]
    assert fwd["unit"] == "tokens/s"
    assert (fwd["jax"], fwd["torch"]) == (8000.0, 2000.0)
    assert fwd["ratio"] == pytest.approx(4.0)
    assert (fwd["jax_peak_bytes"], fwd["torch_peak_bytes"]) == (3 * 2**20, 2**20)
    assert fwd["parity"]["ok"] and fwd["parity"]["tol"] == sr.LOSS_TOL["float32"]
    assert fwd["config"]["seq_len"] == 64 and fwd["config"]["batch"] == 1
    assert rows["llama_fwd_bwd/tiny/T64"]["config"]["jax_compile_s"] == 2.6
    # A label given by the suite (the random 1B model's directory is a temp path).
    named = sr.forward_rows(forward_payload(model="/tmp/x/llama1b"), "llama3.2-1b-shape")
    assert named[0]["name"] == "llama_forward/llama3.2-1b-shape/T64"


def test_train_rows_eager_and_torch_compile():
    rows = by_name(sr.train_rows(train_payload()))
    assert list(rows) == ["train_lora/tiny/T64/eager", "train_lora/tiny/T64/torch_compile",
                          "train_full/tiny/T64/eager"]
    assert_required(rows.values())
    eager, compiled = rows["train_lora/tiny/T64/eager"], rows["train_lora/tiny/T64/torch_compile"]
    assert eager["ratio"] == pytest.approx(1380.0 / 115.0)
    assert compiled["ratio"] == pytest.approx(1380.0 / 230.0)
    assert eager["config"]["torch_compile"] is False and compiled["config"]["torch_compile"]
    assert (eager["config"]["mfu_jax"], eager["config"]["mfu_torch"]) == (0.31, 0.25)
    assert compiled["config"]["mfu_torch"] == 0.5
    assert compiled["config"]["torch_compile_s"] == 43.2
    assert eager["config"]["autocast"] and eager["config"]["torch_attn"] == "sdpa"
    assert eager["parity"]["tol"] == 0.05 and eager["parity"]["ok"]
    # full: step-1 losses 0.17 apart > loss_atol 0.05 -> the speeds stay, the ratio goes.
    full = rows["train_full/tiny/T64/eager"]
    assert not full["parity"]["ok"] and full["ratio"] is None and full["jax"] == 1380.0
    assert "lora" not in full["config"]


def test_sampling_and_trm_rows():
    (samp,) = sr.sampling_rows(sampling_payload())
    assert samp["name"] == "sampling/tiny" and samp["unit"] == "samples/s"
    assert samp["ratio"] == pytest.approx(140.0 / 5.0)
    assert samp["parity"]["ok"] and samp["torch_peak_bytes"] == 123 * 2**20
    assert samp["config"]["essays"] == 2 and samp["config"]["samples_per_essay"] == 2
    (trm,) = sr.trm_rows(trm_payload())
    assert trm["name"] == "trm_train/demo" and trm["unit"] == "steps/s"
    assert trm["ratio"] == pytest.approx(13.5 / 0.33)
    assert trm["parity"]["tol"] == sr.TRM_LOSS_TOL and trm["parity"]["ok"]
    assert_required([samp, trm])


def test_compile_rows_have_no_torch_side():
    rows = sr.compile_rows(forward_payload(2.0), forward_payload(5.0, scan_layers=False),
                           "smollm2")
    assert [r["name"] for r in rows] == ["compile_fwd_bwd/smollm2/scan",
                                         "compile_fwd_bwd/smollm2/noscan"]
    assert_required(rows)
    assert [r["jax"] for r in rows] == [2.0, 5.0]
    assert all(r["unit"] == "s" and r["torch"] is None and r["ratio"] is None for r in rows)
    assert rows[0]["config"]["noscan_over_scan"] == pytest.approx(2.5)
    assert rows[1]["config"]["scan_layers"] is False


def test_error_row_and_ratio_rules():
    row = sr.error_row("trm_train/paper", "exit code 1: boom", {"run": "trm"}, "/tmp/trm.log")
    assert_required([row])
    assert row["error"] == "exit code 1: boom" and row["log"] == "/tmp/trm.log"
    assert all(row[k] is None for k in ("jax", "torch", "ratio"))
    assert sr.make_row("x", {}, "steps/s", 2.0, None)["ratio"] is None
    assert sr.make_row("x", {}, "steps/s", 2.0, 4.0)["ratio"] == 0.5


def test_markdown_table():
    rows = [*sr.forward_rows(forward_payload()),
            sr.error_row("sampling/tiny", "exit code 1: no\nmodel")]
    table = sr.markdown_table(rows).splitlines()
    assert table[0] == sr.MARKDOWN_HEADER
    assert table[0].startswith("| name | unit | jax | torch | jax/torch |")
    assert table[1] == "|---|---|---|---|---|---|---|---|---|"
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[:7] == ["llama_forward/tiny/T64", "tokens/s", "8000", "2000", "4.00", "3", "1"]
    assert cells[7].startswith("ok")
    assert "B=1" in cells[8] and "T=64" in cells[8]
    assert "ERROR: exit code 1: no model" in table[-1]
    assert len(table) == 2 + len(rows)


def test_default_paths():
    path = sr.default_out_path("cuda", datetime.date(2025, 3, 9), Path("/repo"))
    assert path == Path("/repo/bench/results/cuda-2025-03-09.json")
    assert sr.markdown_path(path) == Path("/repo/bench/results/cuda-2025-03-09.md")
    assert sr.default_out_path("cpu").parent == sr.REPO_ROOT / "bench" / "results"


def test_suite_rows_imports_no_flags_jax_or_torch():
    code = ("import sys, bench.suite_rows; "
            "print(sorted(m for m in ('absl.flags', 'jax', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=sr.REPO_ROOT, check=True).stdout.strip()
    assert out == "[]"
