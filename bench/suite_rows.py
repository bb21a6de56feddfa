"""The speed suite's common rows, built from each benchmark's own JSON (pure functions: no
absl flags, no JAX or torch, so tests import this module freely).

Every row has the keys of `REQUIRED`:

  name              what was timed, e.g. "llama_fwd_bwd/smollm2/T1024"
  config            what was actually run (model, seq_len, batch, dtype, steps, ...,
                    mfu_jax / mfu_torch, torch_compile, compile seconds)
  unit              "tokens/s", "samples/s", "steps/s" (higher is better) or "s" (compile)
  jax, torch        the two speeds in `unit`; torch is null where there is no torch side
  ratio             jax / torch for speeds, so > 1 means JAX is faster; null when a side is
                    missing or the parity check below failed
  jax_peak_bytes,   peak device memory of each side where the device reports it (CUDA;
  torch_peak_bytes  null on CPU)

and a `parity` dict: the check that both sides computed the same thing, `ok` only when the
difference is within `tol`. Training rows compare the step-1 loss, as do the LLaMA forward
rows (the loss of the same run's forward+backward; the benchmark has already asserted its
logits agree); sampling rows compare the next-token logits after each prompt, the
distributions the samples are drawn from (the samples themselves are random on both sides).
A row whose check fails keeps its speeds and gets ratio null. A benchmark that failed
becomes `error_row`s: required keys null and an `error` with the log file.

Compile rows: "compile_fwd_bwd/<model>/scan" and ".../noscan" hold the seconds XLA takes to
compile the SmolLM2 forward+backward (value_and_grad of the mean next-token loss, as timed
by bench.llama_forward) with the decoder layers under nn.scan and unrolled. torch has no
counterpart of this compile (eager transformers compiles nothing; torch.compile's time
belongs to a different graph, the train step, and is in the train rows' config as
torch_compile_s), so these rows have torch and ratio null; `config.noscan_over_scan` is
the unrolled / scanned compile time (> 1: scan compiles faster).
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

REQUIRED = ("name", "config", "unit", "jax", "torch", "ratio", "jax_peak_bytes",
            "torch_peak_bytes")
REPO_ROOT = Path(__file__).resolve().parents[1]
# The suite's own step-1 loss tolerance for the LLaMA rows, by compute dtype (the train
# benchmark's defaults, which it records; the forward benchmark asserts logits only).
LOSS_TOL = {"float32": 1e-3, "bfloat16": 5e-2}
TRM_LOSS_TOL = 1e-4  # bench.trm_speed's --loss_atol default


def default_out_path(device: str, day: datetime.date | None = None,
                     root: Path = REPO_ROOT) -> Path:
    """bench/results/<device>-<YYYY-MM-DD>.json under the repository root."""
    day = day or datetime.date.today()
    return root / "bench" / "results" / f"{device}-{day.isoformat()}.json"


def markdown_path(json_path: Path) -> Path:
    return Path(json_path).with_suffix(".md")


# ----------------------------------------------------------------------------- building rows


def make_row(name: str, config: dict[str, Any], unit: str, jax: float | None,
             torch: float | None, parity: dict[str, Any] | None = None,
             jax_peak_bytes: int | None = None, torch_peak_bytes: int | None = None,
             ratio: float | None = None, compute_ratio: bool = True) -> dict[str, Any]:
    """One row; `ratio` = jax / torch unless given, and null if the parity check failed."""
    if ratio is None and compute_ratio and jax is not None and torch:
        ratio = jax / torch
    if parity is not None and not parity.get("ok", False):
        ratio = None
    row = {"name": name, "config": config, "unit": unit, "jax": jax, "torch": torch,
           "ratio": ratio, "jax_peak_bytes": jax_peak_bytes, "torch_peak_bytes": torch_peak_bytes}
    if parity is not None:
        row["parity"] = parity
    return row


def error_row(name: str, error: str, config: dict[str, Any] | None = None,
              log: str | None = None) -> dict[str, Any]:
    """The row of a benchmark that failed: required keys null, what went wrong beside them."""
    row = make_row(name, dict(config or {}), "", None, None)
    row["error"] = error
    if log:
        row["log"] = log
    return row


def loss_parity(jax_loss: float, torch_loss: float, tol: float,
                what: str = "step-1 loss") -> dict[str, Any]:
    diff = abs(jax_loss - torch_loss)
    return {"check": what, "jax": jax_loss, "torch": torch_loss, "abs_diff": diff, "tol": tol,
            "ok": diff <= tol}


def _model_name(config: dict[str, Any], model: str | None) -> str:
    return model or str(config.get("model", "?"))


def _llama_config(c: dict[str, Any], model: str) -> dict[str, Any]:
    return {"model": model, "params": c.get("params"), "layers": c.get("layers"),
            "seq_len": c.get("seq_len"), "batch": c.get("batch"), "dtype": c.get("dtype"),
            "steps": c.get("steps"), "warmup": c.get("warmup"),
            "scan_layers": c.get("scan_layers"), "remat": c.get("remat"),
            "torch_device": c.get("torch_device"), "jax_devices": c.get("jax_devices")}


# ----------------------------------------------------------------------------- per benchmark


def forward_rows(payload: dict[str, Any], model: str | None = None) -> list[dict[str, Any]]:
    """bench.llama_forward's JSON -> "llama_forward/..." and "llama_fwd_bwd/..." rows."""
    c, p = payload["config"], payload["parity"]
    model = _model_name(c, model)
    parity = loss_parity(p["jax_loss"], p["torch_loss"], LOSS_TOL.get(c.get("dtype"), 1e-3),
                         "loss of the forward+backward (same weights and ids)")
    parity.update(max_abs_logit_diff=p.get("max_abs_diff"), top1_agreement=p.get("top1_agreement"),
                  grad_max_rel_l2=p.get("grad_max_rel_l2"))
    rows = []
    for r in payload["rows"]:
        kind = {"forward": "llama_forward", "fwd+bwd": "llama_fwd_bwd"}[r["row"]]
        config = {**_llama_config(c, model), "jax_compile_s": r["jax"].get("compile_s")}
        rows.append(make_row(f"{kind}/{model}/T{c['seq_len']}", config, "tokens/s",
                             r["jax_tok_s"], r["torch_tok_s"], parity,
                             r["jax"].get("peak_bytes"), r["torch"].get("peak_bytes")))
    return rows


def train_rows(payload: dict[str, Any], model: str | None = None) -> list[dict[str, Any]]:
    """bench.train_step's JSON -> "train_<mode>/<model>/T<seq>/eager" rows, plus
    ".../torch_compile" rows where the torch side was also run under torch.compile."""
    c = payload["config"]
    model = _model_name(c, model)
    tol = c.get("loss_atol", LOSS_TOL.get(c.get("dtype"), 1e-3))
    base = {**_llama_config(c, model), "autocast": c.get("autocast", False),
            "torch_attn": c.get("torch_attn"), "flops_per_token": c.get("flops_per_token"),
            "lora": c.get("lora")}
    if base["autocast"]:  # --dtype is ignored then: float32 params, bfloat16 matmuls
        base.update(dtype=c.get("jax_dtype", "bfloat16"),
                    param_dtype=c.get("jax_param_dtype", "float32"))
    rows = []
    for r in payload["rows"]:
        mode = r["mode"]
        name = f"train_{mode}/{model}/T{c['seq_len']}"
        config = {**base, "mode": mode, "trainable_params": r.get("jax_trainable_params"),
                  "torch_attn": r.get("torch_attn_implementation", base["torch_attn"]),
                  "jax_compile_s": r["jax"].get("compile_s"), "mfu_jax": r.get("jax_mfu")}
        if mode != "lora":
            config.pop("lora")
        par = r["parity"]
        rows.append(make_row(
            f"{name}/eager", {**config, "torch_compile": False, "mfu_torch": r.get("torch_mfu")},
            "tokens/s", r["jax_tok_s"], r["torch_tok_s"],
            loss_parity(par["jax_loss_1"], par["torch_loss_1"], tol),
            r["jax"].get("peak_bytes"), r["torch"].get("peak_bytes")))
        tc = r.get("torch_compiled")
        if tc:
            cpar = tc["parity"]
            rows.append(make_row(
                f"{name}/torch_compile",
                {**config, "torch_compile": True, "mfu_torch": tc.get("torch_mfu"),
                 "torch_compile_s": tc["torch"].get("compile_s")},
                "tokens/s", r["jax_tok_s"], tc["torch_tok_s"],
                loss_parity(par["jax_loss_1"], cpar["torch_loss_1"], tol),
                r["jax"].get("peak_bytes"), tc["torch"].get("peak_bytes")))
    return rows


def sampling_rows(payload: dict[str, Any], model: str | None = None) -> list[dict[str, Any]]:
    """bench.sampling_speed's JSON -> one "sampling/<model>" row in (essay, sample) pairs/s."""
    c, p = payload["config"], payload.get("parity")
    model = _model_name(c, model)
    sides = {r["side"]: r for r in payload["rows"]}
    j, t = sides["jax"], sides["torch"]
    parity = None
    if p is not None:  # the next-token logits check (absent from JSON of older versions)
        parity = {"check": "next-token logits after each prompt, max |diff|",
                  "abs_diff": p["max_abs_diff"], "tol": p.get("logit_atol"),
                  "top1_agreement": p.get("top1_agreement"),
                  "ok": p.get("logit_atol") is not None and p["max_abs_diff"] <= p["logit_atol"]}
    config = {"model": model, "essays": c.get("essays"), "samples_per_essay":
              c.get("samples_per_essay"), "max_new_tokens": c.get("max_new_tokens"),
              "dtype": c.get("dtype"), "repeats": c.get("repeats"),
              "temperature": c.get("temperature"), "top_k": c.get("top_k"),
              "prompts": c.get("prompts"), "padded_prompt_len": c.get("padded_prompt_len"),
              "gen_tok_per_s_jax": j.get("gen_tok_per_s"),
              "gen_tok_per_s_torch": t.get("gen_tok_per_s"),
              "jax_compile_s_est": j.get("compile_s_est"), "torch_device": c.get("torch_device")}
    return [make_row(f"sampling/{model}", config, "samples/s", j["samples_per_s"],
                     t["samples_per_s"], parity, j.get("peak_bytes"), t.get("peak_bytes"))]


def trm_rows(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """bench.trm_speed's JSON -> one "trm_train/<variant>" row per config variant."""
    c = payload["config"]
    rows = []
    for r in payload["rows"]:
        par = r["parity"]
        config = {"variant": r["variant"], "batch": r["batch"], "seq_len": r["seq_len"],
                  "params": r.get("params"), "model": r.get("model"),
                  "use_halting": r.get("use_halting"), "steps": c.get("steps"),
                  "warmup": c.get("warmup"), "jax_compile_s": r["jax"].get("compile_s"),
                  "tokens_per_step": r["batch"] * r["seq_len"],
                  "torch_device": c.get("torch_device")}
        rows.append(make_row(f"trm_train/{r['variant']}", config, "steps/s",
                             r["jax_steps_per_s"], r["torch_steps_per_s"],
                             loss_parity(par["jax_loss_1"], par["torch_loss_1"], TRM_LOSS_TOL),
                             r["jax"].get("peak_bytes"), r["torch"].get("peak_bytes")))
    return rows


def compile_rows(scan: dict[str, Any], noscan: dict[str, Any],
                 model: str | None = None) -> list[dict[str, Any]]:
    """Two bench.llama_forward JSONs (layers scanned / unrolled) -> two compile-time rows of
    the forward+backward, in seconds, torch and ratio null (see the module docstring)."""
    seconds = {}
    for key, payload in (("scan", scan), ("noscan", noscan)):
        fwd_bwd = next(r for r in payload["rows"] if r["row"] == "fwd+bwd")
        seconds[key] = fwd_bwd["jax"]["compile_s"]
    rows = []
    for key, payload in (("scan", scan), ("noscan", noscan)):
        c, p = payload["config"], payload["parity"]
        name_model = _model_name(c, model)
        config = {**_llama_config(c, name_model), "what": "XLA compile of forward+backward",
                  "noscan_over_scan": seconds["noscan"] / seconds["scan"],
                  "jax_loss": p["jax_loss"]}
        parity = loss_parity(p["jax_loss"], p["torch_loss"], LOSS_TOL.get(c.get("dtype"), 1e-3),
                             "loss of the forward+backward (same weights and ids)")
        rows.append(make_row(f"compile_fwd_bwd/{name_model}/{key}", config, "s", seconds[key],
                             None, parity, compute_ratio=False))
    return rows


# ----------------------------------------------------------------------------- output


def suite_payload(device: str, rows: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {"device": device, "rows": rows, **meta}


def _num(x: float | None) -> str:
    if x is None:
        return "n/a"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.2f}" if abs(x) >= 1 else f"{x:.3g}"


def _mib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f}"


def _status(row: dict[str, Any]) -> str:
    if "error" in row:
        return "ERROR: " + " ".join(str(row["error"]).split())[:120]
    parity = row.get("parity")
    if not parity:
        return "no check"
    word = "ok" if parity.get("ok") else "PARITY FAILED"
    diff, tol = parity.get("abs_diff"), parity.get("tol")
    return f"{word} (diff {_num(diff)}, tol {'n/a' if tol is None else f'{tol:g}'})"


_SUMMARY_KEYS = (("batch", "B"), ("seq_len", "T"), ("dtype", ""), ("essays", "essays"),
                 ("samples_per_essay", "m"), ("max_new_tokens", "new"), ("steps", "steps"))


def config_summary(config: dict[str, Any]) -> str:
    """A few of the config's facts, for the table's last column."""
    parts = [f"{label}={config[key]}" if label else str(config[key])
             for key, label in _SUMMARY_KEYS if config.get(key) is not None]
    if config.get("autocast"):
        parts.append("bf16 autocast")
    for key, label in (("mfu_jax", "MFU jax"), ("mfu_torch", "torch")):
        if config.get(key) is not None:
            parts.append(f"{label} {100 * config[key]:.1f}%")
    if config.get("torch_compile_s") is not None:
        parts.append(f"torch.compile {config['torch_compile_s']:.1f}s")
    if config.get("jax_compile_s") is not None:
        parts.append(f"jax compile {config['jax_compile_s']:.1f}s")
    if config.get("noscan_over_scan") is not None:
        parts.append(f"noscan/scan {config['noscan_over_scan']:.2f}")
    return ", ".join(parts)


MARKDOWN_HEADER = ("| name | unit | jax | torch | jax/torch | jax peak MiB | torch peak MiB "
                   "| check | config |")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as one Markdown table (ratio > 1: JAX faster; compile rows in seconds)."""
    lines = [MARKDOWN_HEADER, "|" + "---|" * 9]
    for r in rows:
        cells = (r["name"], r["unit"] or "", _num(r["jax"]), _num(r["torch"]), _num(r["ratio"]),
                 _mib(r["jax_peak_bytes"]), _mib(r["torch_peak_bytes"]), _status(r),
                 config_summary(r.get("config") or {}))
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"
