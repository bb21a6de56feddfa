"""One optimiser step (forward + backward + clipped AdamW) of the JAX engine vs transformers + PEFT.

    HF_HUB_OFFLINE=1 python -m bench.train_step --model=smollm2 --batch=4 --seq_len=128 \
        --steps=3 --warmup=2 --dtype=float32 --device=cpu --modes=lora,full \
        [--autocast] [--torch_compile=lora,full] [--torch_attn=sdpa] \
        [--noscan_layers] [--remat] [--out=bench/results/train_step.json]

Both sides load the same checkpoint (`--model` as in bench/llama_forward.py: `tiny`,
`smollm2` or an HF directory) in the same dtype (`--dtype` is the parameter *and* compute
dtype of both sides, i.e. pure bf16 with `bfloat16`, as in llama_forward; `--autocast`
instead keeps float32 parameters and optimiser state on both sides and runs the matmuls
in bfloat16: JAX param_dtype=float32, dtype=bfloat16, the engine's mixed mode; torch
under torch.autocast(bfloat16)) and train on the same random token ids with the
same loss, the mean next-token cross-entropy over ids[:, 1:] given logits[:, :-1].
One row per mode:

  lora   rank 8, alpha 16, dropout 0, on q/k/v/o_proj of every layer; base frozen.
         JAX: `Llama(cfg.replace(lora=LoraConfig(...)))`, trainable = {"lora": ...}.
         torch: peft.get_peft_model(model, peft.LoraConfig(r=8, lora_alpha=16,
         target_modules=[q,k,v,o]_proj, lora_dropout=0.0)).
  full   every parameter trained.

JAX step = `aes_jax.train.step.make_train_step(loss, optimizer, schedule)` with the
optimiser from `aes_jax.train.optim.make_optimizer` (AdamW, clip_norm 1.0, constant lr,
no weight decay), jitted with `donate_argnums=0` as `aes_jax.train.loop` does (single
device, so no shardings). torch step = zero_grad, forward, loss.backward(),
clip_grad_norm_(trainable, 1.0), torch.optim.AdamW(trainable, same lr/betas/eps, weight
decay 0; torch's default implementation: foreach on CUDA, a per-tensor loop on CPU),
attention `--torch_attn` (transformers' attn_implementation, default sdpa). For the
modes in `--torch_compile`, a second torch side, `torch.compile(model)` (forward and,
through AOTAutograd, backward; the optimiser stays eager), starts again from the same
weights after the eager one is timed, repeats the step-1/2 check against the JAX losses
and is timed the same way; its compile time is its first step's, and it is reported
next to eager (`torch_compiled` in the JSON).

Before timing, the two sides are put at the same weights (for LoRA, the JAX adapters,
A random and B = 0, are copied into PEFT's lora_A/lora_B, so the first loss equals the
base model's loss) and the first two steps are run on both: the step-1 loss must agree
within --loss_atol; the step-1 gradient norm (before clipping) and the step-2 loss (after
one identical update) are printed beside it. These two steps are not timed; then
`--warmup` untimed and `--steps` timed steps follow on each side.

MFU = tokens/s x FLOPs per token / the device's peak dense bf16 FLOP/s (the table in
`aes_jax.train.metrics_writer`; n/a on CPU and unknown devices). FLOPs per token is the
lm_lora task's 6 N + attention formula (PaLM convention), which counts the weight
gradients of every matmul even in LoRA mode, where frozen kernels get none: LoRA MFU is
"model FLOPs" utilisation, comparable with the training loop's `mfu`, not hardware
utilisation. JAX compile time is reported separately and never counted in tokens/s.
This is a benchmark, not a test.
"""

from __future__ import annotations

import gc
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl import app, flags

# The shared flags (--model, --batch, --seq_len, --steps, --warmup, --dtype, --device,
# --scan_layers, --remat, --seed, --out) are llama_forward's own flag objects: absl
# registers them when that module is imported, so redefining them here would clash.
from bench import llama_forward as lf
from bench.llama_forward import (DEVICE, DTYPE, MODEL, OUT, REMAT, SEED, SEQ_LEN, STEPS,
                                 WARMUP, Timing, fmt_bytes, load_average, log,
                                 time_steps, torch_loss, torch_sync, write_json)
from bench.table import require_same_loss
from aes_jax.interop import hf
from aes_jax.interop.torch_ref import llama as torch_llama
from aes_jax.losses.lm import masked_labels
from aes_jax.losses.reduce import masked_mean
from aes_jax.models import lora as lora_lib
from aes_jax.models.llama import LlamaConfig, flops_per_token, init_lora
from aes_jax.train.metrics_writer import peak_flops
from aes_jax.train.optim import make_optimizer
from aes_jax.train.state import TrainState
from aes_jax.train.step import make_train_step, stateless

flags.set_default(OUT, "bench/results/train_step.json")
for _name in ("model", "batch", "seq_len", "steps", "warmup", "dtype", "device", "scan_layers",
              "remat", "seed", "out"):
    flags.declare_key_flag(_name)  # list the shared flags in this module's --help
MODES = flags.DEFINE_list("modes", ["lora", "full"], "Comma-separated rows: lora, full.")
LR = flags.DEFINE_float("lr", 2e-4, "Constant learning rate of both optimisers.")
LOSS_ATOL = flags.DEFINE_float(
    "loss_atol", None, "Max allowed |jax - torch| step-1 loss difference before timing; "
    "default 1e-3 for float32, 5e-2 for bfloat16 (and --autocast).")
AUTOCAST = flags.DEFINE_bool(
    "autocast", False, "float32 params + bfloat16 matmuls on both sides (torch.autocast; JAX "
    "param_dtype=float32, dtype=bfloat16) instead of --dtype for both.")
TORCH_COMPILE = flags.DEFINE_list(
    "torch_compile", [], "Modes whose torch side is also timed under torch.compile, next to "
    "eager.")
TORCH_ATTN = flags.DEFINE_string("torch_attn", "sdpa",
                                 "transformers attn_implementation of the torch side.")

_DEFAULT_LOSS_ATOL = {"float32": 1e-3, "bfloat16": 5e-2}
_KNOWN_MODES = ("lora", "full")
LORA_RANK, LORA_ALPHA = 8, 16.0
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
CLIP_NORM, B1, B2, EPS = 1.0, 0.9, 0.999, 1e-8


def optimizer_config(lr: float) -> dict[str, Any]:
    """The engine's optimizer block (configs/lm_lora.py layout) used for the JAX side."""
    return {"name": "adamw", "lr": lr, "b1": B1, "b2": B2, "eps": EPS, "weight_decay": 0.0,
            "schedule": "constant", "warmup_steps": 0, "clip_norm": CLIP_NORM}




def torch_peak_flops(device: torch.device) -> float | None:
    """`peak_flops` of the torch device, matched on its CUDA name like a JAX device_kind."""
    if device.type != "cuda":
        return None
    return peak_flops(types.SimpleNamespace(device_kind=torch.cuda.get_device_name(device)))


# ----------------------------------------------------------------------------- JAX side


def make_loss_fn(cfg: LlamaConfig) -> Callable:
    """loss_fn(trainable, frozen, batch, rng, step) as the lm_lora task defines it: the frozen and
    trainable collections are merged, the dropout rng is passed, masked mean NLL."""

    def loss_fn(trainable, frozen, batch, rng, step):
        ids = batch["input_ids"][:, :-1]  # the states before each target
        nll = lf.jax_token_nll(cfg, {**frozen, **trainable}, ids,
                               masked_labels(batch["targets"], batch["loss_mask"]),
                               rngs={"dropout": rng})
        return masked_mean(nll, batch["loss_mask"]), {}

    return loss_fn


def jax_setup(mode: str, cfg: LlamaConfig, params: dict,
              seed: int) -> tuple[LlamaConfig, dict, dict]:
    """-> (model config, trainable, frozen) for `mode`, as CausalLM.init lays them out."""
    if mode == "lora":
        cfg = cfg.replace(lora=lora_lib.LoraConfig(rank=LORA_RANK, alpha=LORA_ALPHA, dropout=0.0,
                                                   targets=lora_lib.ATTENTION_TARGETS))
        return cfg, {"lora": init_lora(cfg, jax.random.PRNGKey(seed))}, {"params": params}
    # A copy: the step donates the state, and `params` is still needed by other modes.
    return cfg, {"params": jax.tree.map(jnp.copy, params)}, {}


class JaxTrainer:
    """make_train_step jitted with donate_argnums=0; holds the (donated, replaced) state."""

    def __init__(self, cfg: LlamaConfig, trainable: dict, frozen: dict, batch: dict,
                 total_steps: int, lr: float, seed: int):
        optimizer, schedule = make_optimizer(optimizer_config(lr), total_steps)
        self.state = TrainState.create(trainable, optimizer, seed + 1, use_ema=False)
        self.frozen, self.batch = frozen, batch
        step_fn = make_train_step(stateless(make_loss_fn(cfg)), optimizer, schedule)
        t = time.perf_counter()
        self.compiled = jax.jit(step_fn, donate_argnums=0).lower(
            self.state, frozen, batch).compile()
        self.compile_s = time.perf_counter() - t
        self.num_trainable = lora_lib.count_params(self.state.trainable)

    def step(self) -> tuple[TrainState, dict]:
        self.state, metrics = self.compiled(self.state, self.frozen, self.batch)
        return self.state, metrics


# ----------------------------------------------------------------------------- torch side


def lora_tensors(cfg: LlamaConfig, lora: dict) -> dict[str, np.ndarray]:
    """JAX adapters -> PEFT parameter names and layouts: lora_A.weight [r, in] =
    a.reshape(-1, r).T, lora_B.weight [out, r] = b.reshape(r, -1).T."""
    n = cfg.num_hidden_layers
    layers = (hf.unstack_layers(lora["layers"], n) if cfg.scan_layers
              else [lora[f"layers_{i}"] for i in range(n)])
    out = {}
    for i, layer in enumerate(layers):
        for name in LORA_TARGETS:
            ab = layer["self_attn"][name]
            a, b = np.asarray(ab["a"], np.float32), np.asarray(ab["b"], np.float32)
            r = a.shape[-1]
            prefix = f"base_model.model.model.layers.{i}.self_attn.{name}"
            out[f"{prefix}.lora_A.default.weight"] = a.reshape(-1, r).T
            out[f"{prefix}.lora_B.default.weight"] = b.reshape(r, -1).T
    return out


class TorchTrainer:
    """transformers (+ PEFT for LoRA) with clip_grad_norm_ and torch.optim.AdamW; the model
    optionally under torch.autocast(bfloat16) and/or torch.compile."""

    def __init__(self, mode: str, model_dir: Path, device: torch.device, dtype: str,
                 ids: torch.Tensor, lr: float, remat: bool,
                 lora_init: dict[str, np.ndarray] | None, autocast: bool = False,
                 attn: str = "sdpa", compile: bool = False):
        import peft

        model = torch_llama.load_hf_llama(model_dir, device=str(device), dtype=dtype)
        model.set_attn_implementation(attn)
        self.attn_implementation = model.config._attn_implementation
        if remat:  # the JAX side rematerialises each layer; do the same here
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        if mode == "lora":
            # autocast_adapter_dtype=False keeps the adapters in --dtype like the JAX side
            # (PEFT's default upcasts them to float32 on a bf16 base; no-op for float32).
            model = peft.get_peft_model(model, peft.LoraConfig(
                r=LORA_RANK, lora_alpha=LORA_ALPHA, target_modules=list(LORA_TARGETS),
                lora_dropout=0.0), autocast_adapter_dtype=False)
            self.load_lora(model, lora_init)
        model.train()
        self.model, self.ids, self.device = model, ids, device
        # Only the model is compiled: the loss and the optimiser step stay eager.
        self.forward = torch.compile(model) if compile else model
        self.autocast = autocast
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.num_trainable = sum(p.numel() for p in self.trainable)
        self.optimizer = torch.optim.AdamW(self.trainable, lr=lr, betas=(B1, B2), eps=EPS,
                                           weight_decay=0.0)

    @staticmethod
    def load_lora(model, tensors: dict[str, np.ndarray]) -> None:
        named = dict(model.named_parameters())
        lora_names = {n for n in named if ".lora_" in n}
        if set(tensors) != lora_names:
            raise AssertionError(f"PEFT adapters {sorted(lora_names - set(tensors))[:3]} / JAX "
                                 f"adapters {sorted(set(tensors) - lora_names)[:3]} unmatched")
        with torch.no_grad():
            for name, value in tensors.items():
                p = named[name]
                if tuple(p.shape) != value.shape:
                    raise AssertionError(f"{name}: PEFT {tuple(p.shape)} vs JAX {value.shape}")
                p.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(p.dtype))

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            loss = torch_loss(self.forward(input_ids=self.ids, use_cache=False).logits, self.ids)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, CLIP_NORM)
        self.optimizer.step()
        return loss.detach(), grad_norm.detach()


# ----------------------------------------------------------------------------- one mode


def check_torch_against(name: str, tt: TorchTrainer, jax_losses: dict[str, float],
                        atol: float) -> dict[str, float]:
    """Steps 1 and 2 of a second torch side (torch.compile) against the recorded JAX losses;
    the first step's seconds are its compile time."""
    sync = torch_sync(tt.device)
    out: dict[str, float] = {}
    for k in (1, 2):
        t = time.perf_counter()
        loss, gnorm = tt.step()
        sync(None)
        if k == 1:
            out["first_step_s"] = time.perf_counter() - t
        out[f"torch_loss_{k}"], out[f"torch_grad_norm_{k}"] = float(loss), float(gnorm)
        out[f"loss_{k}_abs_diff"] = abs(jax_losses[f"jax_loss_{k}"] - out[f"torch_loss_{k}"])
    log(f"{name} parity: step-1 loss jax {jax_losses['jax_loss_1']:.6f} torch "
        f"{out['torch_loss_1']:.6f} (|diff| {out['loss_1_abs_diff']:.3g}); step-2 |diff| "
        f"{out['loss_2_abs_diff']:.3g}; first step (compiles) {out['first_step_s']:.1f}s")
    require_same_loss(name, out["loss_1_abs_diff"], atol)
    return out


def check_first_steps(mode: str, jt: JaxTrainer, tt: TorchTrainer, atol: float) -> dict:
    """Steps 1 and 2 on both sides from the same weights; asserts the step-1 losses agree."""
    sync = torch_sync(tt.device)
    out: dict[str, float] = {}
    for k in (1, 2):
        _, m = jax.block_until_ready(jt.step())
        loss, gnorm = tt.step()
        sync(None)
        out[f"jax_loss_{k}"], out[f"torch_loss_{k}"] = float(m["loss"]), float(loss)
        out[f"jax_grad_norm_{k}"], out[f"torch_grad_norm_{k}"] = (float(m["grad_norm"]),
                                                                  float(gnorm))
    for key in ("loss_1", "loss_2", "grad_norm_1", "grad_norm_2"):
        out[f"{key}_abs_diff"] = abs(out[f"jax_{key}"] - out[f"torch_{key}"])
    log(f"{mode} parity: step-1 loss jax {out['jax_loss_1']:.6f} torch {out['torch_loss_1']:.6f} "
        f"(|diff| {out['loss_1_abs_diff']:.3g}); grad norm jax {out['jax_grad_norm_1']:.6g} "
        f"torch {out['torch_grad_norm_1']:.6g} (|diff| {out['grad_norm_1_abs_diff']:.3g}); "
        f"step-2 loss jax {out['jax_loss_2']:.6f} torch {out['torch_loss_2']:.6f} "
        f"(|diff| {out['loss_2_abs_diff']:.3g})")
    require_same_loss(mode, out["loss_1_abs_diff"], atol)
    return out


def bench_mode(mode: str, cfg: LlamaConfig, params: dict, model_dir: Path,
               device: torch.device, jax_ids: jax.Array, torch_ids: torch.Tensor,
               atol: float, fpt: float, peaks: dict[str, float | None]) -> dict[str, Any]:
    batch_size, seq_len = jax_ids.shape
    tokens = batch_size * seq_len
    batch = {"input_ids": jax_ids, "targets": jax_ids[:, 1:],
             "loss_mask": jnp.ones((batch_size, seq_len - 1), jnp.int32)}
    mode_cfg, trainable, frozen = jax_setup(mode, cfg, params, SEED.value)
    log(f"jax {mode}: compiling the train step")
    total = 2 + WARMUP.value + STEPS.value
    jt = JaxTrainer(mode_cfg, trainable, frozen, batch, total, LR.value, SEED.value)
    del trainable
    log(f"jax {mode}: compiled in {jt.compile_s:.1f}s; {jt.num_trainable:,} trainable params")
    log(f"torch {mode}: loading on {device}")
    # The start adapters as numpy, before the first JAX step donates them: a torch.compile
    # side built later starts from them too.
    lora_init = lora_tensors(mode_cfg, jt.state.trainable["lora"]) if mode == "lora" else None
    torch_kw = dict(mode=mode, model_dir=model_dir, device=device, dtype=torch_dtype(),
                    ids=torch_ids, lr=LR.value, remat=REMAT.value, lora_init=lora_init,
                    autocast=AUTOCAST.value, attn=TORCH_ATTN.value)
    tt = TorchTrainer(**torch_kw)
    log(f"torch {mode}: {tt.num_trainable:,} trainable params, attention "
        f"{tt.attn_implementation}")
    if jt.num_trainable != tt.num_trainable:
        raise AssertionError(f"{mode}: trainable params differ: jax {jt.num_trainable} vs "
                             f"torch {tt.num_trainable}")

    parity = check_first_steps(mode, jt, tt, atol)
    jax_t = time_steps(f"jax {mode}", jt.step, jax.block_until_ready, WARMUP.value, STEPS.value,
                       tokens)
    jax_t.compile_s = jt.compile_s
    jax_t.peak_bytes = lf.jax_peak_bytes()
    jax_t.peak_mem = fmt_bytes(jax_t.peak_bytes)
    torch_t = time_torch(f"torch {mode}", tt, tokens)
    attn_implementation = tt.attn_implementation

    row = lf.table_rows({mode: jax_t}, {mode: torch_t})[0]
    row.update(mode=mode, ratio_median_jax_over_torch=(torch_t.to_dict()["median_step_s"]
                                                       / jax_t.to_dict()["median_step_s"]),
               jax_trainable_params=jt.num_trainable,
               torch_trainable_params=tt.num_trainable, parity=parity,
               jax_mfu=mfu(jax_t, fpt, peaks["jax"]), torch_mfu=mfu(torch_t, fpt, peaks["torch"]),
               torch_attn_implementation=attn_implementation, autocast=AUTOCAST.value)
    del jt, tt
    free_torch(device)
    if mode in TORCH_COMPILE.value:
        name = f"torch.compile {mode}"
        log(f"{name}: loading on {device}")
        tc = TorchTrainer(**torch_kw, compile=True)
        compiled_parity = check_torch_against(name, tc, parity, atol)
        tc_t = time_torch(name, tc, tokens)
        tc_t.compile_s = compiled_parity["first_step_s"]
        row["torch_compiled"] = {
            "torch_tok_s": tc_t.tokens_per_s,
            "ratio_jax_over_torch": jax_t.tokens_per_s / tc_t.tokens_per_s,
            "ratio_median_jax_over_torch": (tc_t.to_dict()["median_step_s"]
                                            / jax_t.to_dict()["median_step_s"]),
            "torch": tc_t.to_dict(), "torch_mfu": mfu(tc_t, fpt, peaks["torch"]),
            "parity": compiled_parity}
        del tc
        free_torch(device)
    return row


def time_torch(name: str, tt: TorchTrainer, tokens: int) -> Timing:
    device = tt.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing = time_steps(name, tt.step, torch_sync(device), WARMUP.value, STEPS.value, tokens)
    if device.type == "cuda":
        timing.peak_bytes = torch.cuda.max_memory_allocated(device)
        timing.peak_mem = fmt_bytes(timing.peak_bytes)
    return timing


def free_torch(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def torch_dtype() -> str:
    """The torch parameters' dtype: float32 under --autocast, else --dtype."""
    return "float32" if AUTOCAST.value else DTYPE.value


def jax_dtypes() -> tuple[str, str]:
    """(param_dtype, dtype) of the JAX side."""
    return ("float32", "bfloat16") if AUTOCAST.value else (DTYPE.value, DTYPE.value)


def mfu(t: Timing, fpt: float, peak: float | None) -> float | None:
    return None if peak is None else t.tokens_per_s * fpt / peak


# ----------------------------------------------------------------------------- output


def print_table(rows: list[dict[str, Any]]) -> None:
    """Same layout as llama_forward.print_table, with this benchmark's columns. tok/s and
    jax/torch are llama_forward's (all timed steps: tokens x steps / total time); the
    "(median)" ratio is torch / jax median step time, which one slow step (another
    process on the same cores) moves less."""
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    cols = ("mode", "trainable", "jax ms/step", "torch ms/step", "jax tok/s", "torch tok/s",
            "jax/torch", "(median)", "jax MFU", "torch MFU", "jax compile s", "jax peak mem",
            "torch peak mem")
    lines = [cols]
    for r in rows:
        lines.append((r["mode"], f"{r['jax_trainable_params']:,}",
                      f"{1e3 * r['jax']['median_step_s']:.1f}",
                      f"{1e3 * r['torch']['median_step_s']:.1f}",
                      f"{r['jax_tok_s']:.0f}", f"{r['torch_tok_s']:.0f}",
                      f"{r['ratio_jax_over_torch']:.2f}",
                      f"{r['ratio_median_jax_over_torch']:.2f}",
                      pct(r["jax_mfu"]), pct(r["torch_mfu"]),
                      f"{r['jax']['compile_s']:.1f}", r["jax"]["peak_mem"], r["torch"]["peak_mem"]))
        c = r.get("torch_compiled")
        if c:  # the same JAX numbers against the torch.compile side
            lines.append((f"{r['mode']} vs torch.compile", "",
                          f"{1e3 * r['jax']['median_step_s']:.1f}",
                          f"{1e3 * c['torch']['median_step_s']:.1f}", f"{r['jax_tok_s']:.0f}",
                          f"{c['torch_tok_s']:.0f}", f"{c['ratio_jax_over_torch']:.2f}",
                          f"{c['ratio_median_jax_over_torch']:.2f}", pct(r["jax_mfu"]),
                          pct(c["torch_mfu"]), f"{r['jax']['compile_s']:.1f}",
                          r["jax"]["peak_mem"], c["torch"]["peak_mem"]))
    lf.print_aligned(lines)


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    modes = MODES.value
    unknown = [m for m in modes if m not in _KNOWN_MODES]
    if unknown or not modes:
        raise app.UsageError(f"--modes={','.join(modes)}: expected a subset of {_KNOWN_MODES}")
    if not set(TORCH_COMPILE.value) <= set(modes):
        raise app.UsageError(f"--torch_compile={','.join(TORCH_COMPILE.value)}: expected a "
                             f"subset of --modes={','.join(modes)}")
    if SEQ_LEN.value < 2:
        raise app.UsageError("--seq_len must be >= 2 (the loss predicts ids[:, 1:])")
    param_dtype, dtype = jax_dtypes()
    atol = LOSS_ATOL.value if LOSS_ATOL.value is not None else _DEFAULT_LOSS_ATOL[dtype]
    device = torch_llama.torch_device(DEVICE.value)
    jax_platform = jax.devices()[0].platform
    if (jax_platform == "cpu") != (device.type == "cpu"):
        log(f"WARNING: JAX runs on {jax_platform} but torch on {device}: "
            "the two sides are not on the same kind of device")

    import peft
    import transformers

    with tempfile.TemporaryDirectory(prefix="bench-train-step-") as tmp:
        model_dir = lf.resolve_model(MODEL.value, Path(tmp), SEED.value, SEQ_LEN.value)
        log(f"loading JAX params from {model_dir}")
        cfg, params = hf.load_llama(model_dir, param_dtype=param_dtype, dtype=dtype,
                                    scan_layers=lf.SCAN_LAYERS.value, remat=REMAT.value,
                                    attention=lf.ATTENTION.value)
        n_params = lora_lib.count_params(params)
        fpt = flops_per_token(cfg, SEQ_LEN.value)
        peaks = {"jax": peak_flops(jax.devices()[0]), "torch": torch_peak_flops(device)}
        info = lf.header(model_dir, cfg, n_params, device)
        info.update(
            modes=modes, optimizer=optimizer_config(LR.value),
            lora={"rank": LORA_RANK, "alpha": LORA_ALPHA, "dropout": 0.0,
                  "targets": list(LORA_TARGETS)},
            jax_device_kind=jax.devices()[0].device_kind,
            torch_device_kind=(torch.cuda.get_device_name(device) if device.type == "cuda"
                               else "cpu"),
            peak_flops=peaks, flops_per_token=fpt, loss_atol=atol, autocast=AUTOCAST.value,
            jax_param_dtype=param_dtype, jax_dtype=dtype, torch_param_dtype=torch_dtype(),
            torch_compile=TORCH_COMPILE.value, torch_attn=TORCH_ATTN.value,
            transformers=transformers.__version__, peft=peft.__version__,
            torch_adamw="torch.optim.AdamW defaults (foreach on CUDA, for-loop on CPU)")
        for k, v in info.items():
            print(f"  {k}: {v}")

        jax_ids, torch_ids = lf.random_ids(cfg, device)

        rows = [bench_mode(mode, cfg, params, model_dir, device, jax_ids, torch_ids, atol,
                           fpt, peaks) for mode in modes]

    print()
    print_table(rows)
    out = Path(OUT.value)
    info["loadavg_at_end"] = load_average()
    log(f"load average at end {info['loadavg_at_end']} (at start {info['loadavg_at_start']})")
    write_json(out, {"config": info, "rows": rows})
    log(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
