"""Tokens/s of the JAX LLaMA (`aes_jax.models.llama.Llama`) vs transformers' LlamaForCausalLM.

    HF_HUB_OFFLINE=1 python -m bench.llama_forward --model=smollm2 --batch=4 --seq_len=256 \
        --steps=5 --warmup=2 --dtype=float32 --device=cpu [--noscan_layers] [--remat] \
        [--rows=forward,fwd+bwd] [--out=bench/results/llama_forward.json]

Both sides load the same checkpoint (`--model`: `smollm2` = the packaged
SmolLM2-135M-Instruct, `tiny` = a small random LLaMA written to a temp dir,
`llama1b_random` = a random LLaMA-3.2-1B-shaped one (bench/random_llama.py), or a path
to an HF directory) in the same dtype, and run the same random token ids. Two rows
(`--rows` picks some):

  forward      logits [B, T, V]
  fwd+bwd      mean next-token cross-entropy and its gradient w.r.t. every parameter

Before timing, the forward logits (and the loss and gradients) of the two sides are
compared (with the executables that are then timed, so each compiles once), so the
numbers below are for the same computation. JAX compile time is reported separately and
never counted in tokens/s; `--warmup` untimed calls precede `--steps` timed ones on both
sides. This is a benchmark, not a test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl import app, flags

from aes_jax.interop import assets, hf
from aes_jax.interop.torch_ref import llama as torch_llama
from aes_jax.losses import lm as lm_losses
from aes_jax.losses.blockwise import blockwise_token_nll
from aes_jax.models.llama import Llama, LlamaConfig, output_embedding
from bench.table import log, print_aligned  # noqa: F401  (the benchmarks import them from here)

MODEL = flags.DEFINE_string(
    "model", "smollm2", "'tiny', 'smollm2' (packaged SmolLM2-135M-Instruct), 'llama1b_random' "
    "(random LLaMA-3.2-1B shape) or an HF directory.")
BATCH = flags.DEFINE_integer("batch", 4, "Sequences per step.")
SEQ_LEN = flags.DEFINE_integer("seq_len", 256, "Tokens per sequence.")
STEPS = flags.DEFINE_integer("steps", 5, "Timed iterations per row and side.")
WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed iterations before timing (after compile).")
DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                          "Parameter and compute dtype of both sides.")
DEVICE = flags.DEFINE_string("device", "cpu", "torch device: cpu or cuda (JAX uses its default).")
SCAN_LAYERS = flags.DEFINE_bool("scan_layers", True, "JAX: nn.scan over the decoder layers.")
REMAT = flags.DEFINE_bool("remat", False, "JAX: rematerialise each decoder layer in backward.")
ATTENTION = flags.DEFINE_enum("attention", "auto", ["auto", "einsum", "xla", "cudnn", "chunked"],
                              "JAX attention implementation (aes_jax.models.attention).")
LOSS_BLOCK_TOKENS = flags.DEFINE_integer(
    "loss_block_tokens", 1024, "JAX fwd+bwd loss: tokens per block of the blockwise loss "
    "(the library's training default); 0 = full [B, T, V] logits.")
SEED = flags.DEFINE_integer("seed", 0, "Seed for the token ids and the tiny model.")
LOGIT_ATOL = flags.DEFINE_float(
    "logit_atol", None, "Max allowed |jax - torch| logit difference before timing; "
    "default 1e-2 for float32, 1.0 for bfloat16.")
OUT = flags.DEFINE_string("out", "bench/results/llama_forward.json", "Where to write the JSON.")
ROWS = flags.DEFINE_list("rows", ["forward", "fwd+bwd"], "Rows to time: forward, fwd+bwd.")

_DEFAULT_ATOL = {"float32": 1e-2, "bfloat16": 1.0}

# ----------------------------------------------------------------------------- small helpers


@dataclasses.dataclass
class Timing:
    """Per-step wall times of one row on one side (seconds), plus extras."""

    step_s: list[float]
    tokens_per_step: int
    compile_s: float | None = None
    peak_mem: str = "n/a"
    peak_bytes: int | None = None  # the number behind peak_mem, where the device says

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_step * len(self.step_s) / sum(self.step_s)

    def to_dict(self) -> dict[str, Any]:
        return {"tokens_per_s": self.tokens_per_s, "step_s": self.step_s,
                "median_step_s": statistics.median(self.step_s),
                "compile_s": self.compile_s, "peak_mem": self.peak_mem,
                "peak_bytes": self.peak_bytes}


def time_steps(name: str, step: Callable[[], Any], sync: Callable[[Any], None],
               warmup: int, steps: int, tokens_per_step: int) -> Timing:
    """Runs `step` `warmup` times untimed, then `steps` times timed; `sync` blocks on its output."""
    for i in range(warmup):
        t = time.perf_counter()
        sync(step())
        log(f"{name}: warm-up {i + 1}/{warmup} {time.perf_counter() - t:.3f}s")
    times = []
    for i in range(steps):
        t = time.perf_counter()
        sync(step())
        times.append(time.perf_counter() - t)
        log(f"{name}: step {i + 1}/{steps} {times[-1]:.3f}s")
    return Timing(times, tokens_per_step)


def fmt_bytes(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


# ----------------------------------------------------------------------------- model dir


def tiny_model_dir(tmp: Path, seed: int, seq_len: int) -> Path:
    """A small random LlamaForCausalLM saved as safetensors under `tmp`."""
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=max(2048, seq_len),
        rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config)
    out = tmp / "tiny-llama"
    model.save_pretrained(str(out), safe_serialization=True)
    return out


def resolve_model(name: str, tmp: Path, seed: int, seq_len: int) -> Path:
    if name == "tiny":
        return tiny_model_dir(tmp, seed, seq_len)
    if name == "smollm2":
        return assets.smollm2_dir()
    if name == "llama1b_random":
        from bench.random_llama import write_random_llama
        return write_random_llama(tmp / "llama1b-random", seed)
    path = Path(name)
    if not path.is_dir():
        raise app.UsageError(f"--model={name}: not 'tiny', 'smollm2', 'llama1b_random' or an "
                             "existing directory")
    return path


# ----------------------------------------------------------------------------- JAX side


def jax_token_nll(cfg: LlamaConfig, variables: dict, ids: jax.Array, labels: jax.Array,
                  rngs: dict | None = None) -> jax.Array:
    """[B, T] NLL of `labels` as the library's training loss computes it: blockwise from
    the hidden states (--loss_block_tokens, the default) or from full logits (0)."""
    block = LOSS_BLOCK_TOKENS.value
    out = Llama(cfg).apply(variables, ids, rngs=rngs or {}, return_hidden=True,
                           compute_logits=not block)
    if block:
        head = output_embedding(cfg, variables["params"])
        return blockwise_token_nll(out.hidden, head, labels, block)
    return lm_losses.token_nll(out.logits, labels)


def jax_loss(cfg: LlamaConfig, params: dict, ids: jax.Array) -> jax.Array:
    """Mean cross-entropy of predicting ids[:, 1:] from the states at [:, :-1], float32."""
    if LOSS_BLOCK_TOKENS.value:
        return jnp.mean(jax_token_nll(cfg, {"params": params}, ids[:, :-1], ids[:, 1:]))
    logits = Llama(cfg).apply({"params": params}, ids)[:, :-1].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    target = jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
    return -jnp.mean(target)


def jax_compile(fn: Callable, *args) -> tuple[Callable, float]:
    """jit, lower and compile `fn` for `args`; returns the executable and compile seconds."""
    t = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - t


def jax_peak_bytes() -> int | None:
    """Peak bytes in use on JAX's first device since process start, where the backend says."""
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


def jax_peak_memory() -> str:
    return fmt_bytes(jax_peak_bytes())


def jax_row_fns(cfg: LlamaConfig) -> dict[str, Callable]:
    """The function behind each row: params, ids -> logits / (loss, grads)."""
    return {"forward": lambda p, x: Llama(cfg).apply({"params": p}, x),
            "fwd+bwd": jax.value_and_grad(lambda p, x: jax_loss(cfg, p, x))}


def compile_jax(cfg: LlamaConfig, params: dict, ids: jax.Array,
                rows: list[str]) -> dict[str, tuple[Callable, float]]:
    """row -> (executable, compile seconds); the parity check and the timing share them."""
    fns, out = jax_row_fns(cfg), {}
    for row in rows:
        log(f"jax {row}: compiling")
        out[row] = jax_compile(fns[row], params, ids)
        log(f"jax {row}: compiled in {out[row][1]:.1f}s")
    return out


def bench_jax(compiled: dict[str, tuple[Callable, float]], params: dict, ids: jax.Array,
              warmup: int, steps: int) -> dict[str, Timing]:
    tokens = int(np.prod(ids.shape))
    results = {}
    for row, (fn, compile_s) in compiled.items():
        timing = time_steps(f"jax {row}", lambda c=fn: c(params, ids),
                            jax.block_until_ready, warmup, steps, tokens)
        timing.compile_s = compile_s
        timing.peak_bytes = jax_peak_bytes()
        timing.peak_mem = fmt_bytes(timing.peak_bytes)
        results[row] = timing
    return results


# ----------------------------------------------------------------------------- torch side


def torch_sync(device: torch.device) -> Callable[[Any], None]:
    if device.type == "cuda":
        return lambda _: torch.cuda.synchronize(device)
    return lambda _: None


def torch_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Same formula as `jax_loss`: mean -log p(ids[:, 1:] | logits[:, :-1]) in float32."""
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, ids[:, 1:, None]).squeeze(-1).mean()


def torch_forward(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits


def torch_fwd_bwd(model, ids: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    loss = torch_loss(model(input_ids=ids, use_cache=False).logits, ids)
    loss.backward()
    return loss.detach()


def bench_torch(model, ids: torch.Tensor, warmup: int, steps: int,
                rows: list[str]) -> dict[str, Timing]:
    device = ids.device
    sync = torch_sync(device)
    tokens = ids.numel()
    fns = {"forward": torch_forward, "fwd+bwd": torch_fwd_bwd}
    results = {}
    for row in rows:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timing = time_steps(f"torch {row}", lambda f=fns[row]: f(model, ids), sync, warmup, steps,
                            tokens)
        if device.type == "cuda":
            timing.peak_bytes = torch.cuda.max_memory_allocated(device)
            timing.peak_mem = fmt_bytes(timing.peak_bytes)
        results[row] = timing
    model.zero_grad(set_to_none=True)
    return results


# ----------------------------------------------------------------------------- parity


def check_parity(cfg: LlamaConfig, params: dict, jax_ids: jax.Array, model,
                 torch_ids: torch.Tensor, atol: float,
                 compiled: dict[str, tuple[Callable, float]]) -> dict[str, float]:
    """Asserts the two forwards agree; also reports loss and gradient differences. Uses the
    `compiled` executables where there are (the ones timed), else jits the row's function."""
    fns = {row: compiled[row][0] if row in compiled else jax.jit(fn)
           for row, fn in jax_row_fns(cfg).items()}
    log("parity: forward logits")
    jax_logits = np.asarray(fns["forward"](params, jax_ids), np.float32)
    torch_logits = torch_forward(model, torch_ids).float().cpu().numpy()
    report = torch_llama.compare_logits(torch_logits, jax_logits)
    log(f"parity: max |logit diff| {report['max_abs_diff']:.3g}, "
        f"top-1 agreement {report['top1_agreement']:.4f}, mean KL {report['mean_kl']:.3g}")
    if not report["max_abs_diff"] <= atol:
        raise AssertionError(f"JAX and torch logits differ by {report['max_abs_diff']:.3g} "
                             f"> --logit_atol={atol}: not the same computation")

    log("parity: loss and gradients")
    jax_value, jax_grads = fns["fwd+bwd"](params, jax_ids)
    torch_value = torch_fwd_bwd(model, torch_ids)
    report["jax_loss"] = float(jax_value)
    report["torch_loss"] = float(torch_value)
    report.update(compare_grads(cfg, jax_grads, model))
    model.zero_grad(set_to_none=True)
    log(f"parity: loss jax {report['jax_loss']:.6f} torch {report['torch_loss']:.6f}; "
        f"grad max |diff| {report['grad_max_abs_diff']:.3g}, "
        f"worst relative L2 {report['grad_max_rel_l2']:.3g} ({report['grad_worst_tensor']})")
    return report


def compare_grads(cfg: LlamaConfig, jax_grads: dict, model) -> dict[str, Any]:
    """JAX grads mapped to HF names/layouts vs torch .grad, tensor by tensor."""
    jax_by_name = hf.hf_tensors_from_params(cfg, jax_grads)
    max_abs, worst_rel, worst_name = 0.0, 0.0, ""
    for name, p in model.named_parameters():
        if p.grad is None or name not in jax_by_name:
            continue
        ref = p.grad.float().cpu().numpy()
        diff = np.abs(jax_by_name[name].astype(np.float32) - ref)
        max_abs = max(max_abs, float(diff.max()))
        rel = float(np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-30))
        if rel > worst_rel:
            worst_rel, worst_name = rel, name
    return {"grad_max_abs_diff": max_abs, "grad_max_rel_l2": worst_rel,
            "grad_worst_tensor": worst_name}


# ----------------------------------------------------------------------------- output


def header(model_dir: Path, cfg: LlamaConfig, n_params: int, device: torch.device) -> dict:
    return {
        "model": MODEL.value, "model_dir": str(model_dir), "params": n_params,
        "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "vocab": cfg.vocab_size,
        "batch": BATCH.value, "seq_len": SEQ_LEN.value, "steps": STEPS.value,
        "warmup": WARMUP.value, "dtype": DTYPE.value, "scan_layers": SCAN_LAYERS.value,
        "remat": REMAT.value, "jax_devices": [str(d) for d in jax.devices()],
        "torch_device": str(device), "torch_threads": torch.get_num_threads(),
        "jax": jax.__version__, "torch": torch.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "loadavg_at_start": load_average(),
    }


def load_average() -> list[float]:
    """1/5/15-minute load averages: other processes on the same cores skew CPU timings."""
    return [round(x, 2) for x in os.getloadavg()]


def table_rows(jax_t: dict[str, Timing], torch_t: dict[str, Timing]) -> list[dict[str, Any]]:
    rows = []
    for row in jax_t:
        j, t = jax_t[row], torch_t[row]
        rows.append({"row": row, "jax_tok_s": j.tokens_per_s, "torch_tok_s": t.tokens_per_s,
                     "ratio_jax_over_torch": j.tokens_per_s / t.tokens_per_s,
                     "jax": j.to_dict(), "torch": t.to_dict()})
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ("row", "jax tok/s", "torch tok/s", "jax/torch", "jax ms/step", "torch ms/step",
            "jax compile s", "jax peak mem", "torch peak mem")
    lines = [cols]
    for r in rows:
        lines.append((r["row"], f"{r['jax_tok_s']:.0f}", f"{r['torch_tok_s']:.0f}",
                      f"{r['ratio_jax_over_torch']:.2f}",
                      f"{1e3 * r['jax']['median_step_s']:.1f}",
                      f"{1e3 * r['torch']['median_step_s']:.1f}",
                      f"{r['jax']['compile_s']:.1f}", r["jax"]["peak_mem"],
                      r["torch"]["peak_mem"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(cols))]
    for k, line in enumerate(lines):
        print("  ".join(cell.rjust(w) if i else cell.ljust(w)
                        for i, (cell, w) in enumerate(zip(line, widths))))
        if k == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")


# ----------------------------------------------------------------------------- main


def random_ids(cfg: LlamaConfig, device: torch.device) -> tuple[jax.Array, torch.Tensor]:
    """The same [batch, seq_len] token ids for both sides, from --seed."""
    ids = np.random.default_rng(SEED.value).integers(
        0, cfg.vocab_size, (BATCH.value, SEQ_LEN.value), dtype=np.int32)
    return jnp.asarray(ids), torch.as_tensor(ids, dtype=torch.long, device=device)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    rows = ROWS.value
    if not rows or any(r not in ("forward", "fwd+bwd") for r in rows):
        raise app.UsageError(f"--rows={','.join(rows)}: expected some of forward, fwd+bwd")
    dtype = DTYPE.value
    atol = LOGIT_ATOL.value if LOGIT_ATOL.value is not None else _DEFAULT_ATOL[dtype]
    device = torch_llama.torch_device(DEVICE.value)
    with tempfile.TemporaryDirectory(prefix="bench-llama-") as tmp:
        model_dir = resolve_model(MODEL.value, Path(tmp), SEED.value, SEQ_LEN.value)
        log(f"loading JAX params from {model_dir}")
        cfg, params = hf.load_llama(model_dir, param_dtype=dtype, dtype=dtype,
                                    scan_layers=SCAN_LAYERS.value, remat=REMAT.value,
                                    attention=ATTENTION.value)
        log(f"loading torch model on {device}")
        model = torch_llama.load_hf_llama(model_dir, device=str(device), dtype=dtype)

    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    info = header(model_dir, cfg, n_params, device)
    info["rows"] = rows
    for k, v in info.items():
        print(f"  {k}: {v}")

    jax_ids, torch_ids = random_ids(cfg, device)

    compiled = compile_jax(cfg, params, jax_ids, rows)
    parity = check_parity(cfg, params, jax_ids, model, torch_ids, atol, compiled)
    jax_t = bench_jax(compiled, params, jax_ids, WARMUP.value, STEPS.value)
    torch_t = bench_torch(model, torch_ids, WARMUP.value, STEPS.value, rows)

    table = table_rows(jax_t, torch_t)
    print()
    print_table(table)
    out = Path(OUT.value)
    info["loadavg_at_end"] = load_average()
    log(f"load average at end {info['loadavg_at_end']} (at start {info['loadavg_at_start']})")
    write_json(out, {"config": info, "parity": parity, "rows": table})
    log(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
