"""Training steps/s of the JAX TRM-AES train step vs the PyTorch reference, same config.

    HF_HUB_OFFLINE=1 python -m bench.trm_speed --config_variant=demo[,cpu,paper] \\
        [--batch=0] [--seq_len=0] [--steps=5] [--warmup=2] [--device=cpu] \\
        [--out=bench/results/trm_speed.json]

One row per variant of configs/trm_aes.py. `--batch` / `--seq_len` 0 mean the variant's
global_batch_size / data.max_tokens. The model is the task's: vocab and embedding width of
the packaged MiniLM table (30522 x 384, random here; `--vocab_size`, `--embed_dim`), the
variant's model block, dropout forced to 0 on both sides (so the two compute the same
thing). The batch is random token ids with random real lengths between seq_len/4 and
seq_len (padding after, as in the dataset), random targets in [0, 1] and the half-point
of a 0-3 prompt. When the config trains traits (train_traits), the model has 1 +
--num_traits outputs and a target mask with a quarter of the trait golds missing, as the
task's masked MSE expects.

JAX step = `aes_jax.train.step.make_train_step(stateless(TRMAesTask.loss), ...)` with the optimiser of
`aes_jax.train.optim.make_optimizer(config.optimizer, config.total_steps)` (AdamW, the
variant's lr / betas / eps / weight decay on matrices only, warmup + cosine schedule,
clip 1.0), jitted with donate_argnums=0 as `aes_jax.train.loop` runs it (one device, so
no shardings). The loss is the task's own method, called on a stand-in that holds the
model and config (the real task needs a built dataset).

The task runs with `supervision="per_batch"` (n_sup supervision steps per update; the
default per_step scheme does one per update, so its cost per supervision step is the
same) and `halt_exploration_prob=0` (its random draws cannot be replayed in torch).

torch step = `aes_jax.interop.torch_ref.trm.TorchTRM` with the same deep-supervision loss:
n_sup forward calls with the detached carry, each adding its active rows' MSE and, with
halting, halt_loss_weight x the BCE of the halting logit against "within half a score
point"; rows whose
halting logit is > 0 drop out of the later steps; the sum / n_sup is back-propagated
once. Then clip_grad_norm_(1.0) and torch.optim.AdamW (weight decay on ndim >= 2 params
only, as optax's mask) with a LambdaLR that replays the optax schedule value by value.
TorchTRM runs the first h_cycles - 1 H-cycles under torch.no_grad(), as the JAX model
stop_gradients them.

Both sides start from the same params (`load_jax_params`); the first three steps are run
on both and not timed: the step-1 loss must agree within --loss_atol (step 1 runs at lr 0,
the warmup's first value, so step 2 sees the same params; step 3 is after one real
update). Then `--warmup` untimed and `--steps` timed steps on each side. steps/s = timed
steps / their total time; tok/s counts padded tokens (batch x seq_len). JAX compile time
is reported apart. This is a benchmark, not a test.
"""

from __future__ import annotations

import functools
import gc
import time
import types
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import torch
from absl import app, flags

# Shared flags are llama_forward's own flag objects (see bench/train_step.py).
from bench.llama_forward import (BATCH, DEVICE, OUT, SEED, SEQ_LEN, STEPS, WARMUP,
                                 fmt_bytes, jax_peak_bytes, load_average, log, print_aligned,
                                 time_steps, torch_sync, write_json)
from bench.table import require_same_loss
from aes_jax.interop.torch_ref import llama as torch_llama
from aes_jax.interop.torch_ref.trm import TorchTRM, load_jax_params
from aes_jax.models.trm import TRM, TRMConfig, init_params
from aes_jax.tasks.trm_aes import TRMAesOptions, TRMAesTask
from aes_jax.train.optim import make_optimizer
from aes_jax.train.state import TrainState
from aes_jax.train.step import make_train_step, stateless

flags.set_default(OUT, "bench/results/trm_speed.json")
flags.set_default(BATCH, 0)
flags.set_default(SEQ_LEN, 0)
for _name in ("batch", "seq_len", "steps", "warmup", "device", "seed", "out"):
    flags.declare_key_flag(_name)
VARIANTS = flags.DEFINE_list("config_variant", ["demo"], "configs/trm_aes.py variants, "
                             "comma-separated (demo, cpu, paper); one row each.")
VOCAB = flags.DEFINE_integer("vocab_size", 30522, "Embedding rows (MiniLM's vocabulary).")
EMBED_DIM = flags.DEFINE_integer("embed_dim", 384, "Embedding width (MiniLM's).")
NUM_TRAITS = flags.DEFINE_integer("num_traits", 4, "Trait outputs when the config trains "
                                  "traits (ASAP++ prompts 3-6 have 4).")
LOSS_ATOL = flags.DEFINE_float("loss_atol", 1e-4, "Max allowed |jax - torch| step-1 loss "
                               "difference before timing.")

PARITY_STEPS = 3
HALF_POINT = 0.5 / 3  # a 0-3 prompt (ASAP 3 and 4)

# ----------------------------------------------------------------------------- setup


def variant_config(variant: str):
    from configs.trm_aes import get_config

    config = get_config(variant)
    config.model.dropout = 0.0  # parity needs the same computation on both sides
    # The stateless scheme (n_sup supervision steps per update) without random halting
    # exploration, so that both sides compute the same thing from the same batch.
    config.supervision = "per_batch"
    config.halt_exploration_prob = 0.0
    return config


def num_traits(config) -> int:
    """Trait outputs the task adds (config.train_traits): --num_traits of them."""
    return NUM_TRAITS.value if config.get("train_traits", False) else 0


def model_config(config, seq_len: int) -> TRMConfig:
    """As TRMAesTask builds it, from the config and the embedding table's shape."""
    return TRMConfig(vocab_size=VOCAB.value, embed_dim=EMBED_DIM.value, max_len=seq_len,
                     num_outputs=1 + num_traits(config), dtype=config.dtype,
                     **dict(config.model))


def random_batch(batch: int, seq_len: int, vocab: int, outputs: int,
                 seed: int) -> dict[str, np.ndarray]:
    """[CLS] essay [SEP] then padding; real lengths uniform in [seq_len/4, seq_len]; targets
    for the holistic score and `outputs - 1` traits, one trait in four without gold."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(max(seq_len // 4, 3), seq_len + 1, batch)
    ids = rng.integers(1000, vocab, (batch, seq_len)).astype(np.int32)
    mask = np.arange(seq_len)[None, :] < lengths[:, None]
    ids[:, 0] = 101
    ids[np.arange(batch), lengths - 1] = 102
    ids[~mask] = 0
    return {"input_ids": ids, "attention_mask": mask.astype(np.int32),
            "target": rng.uniform(0, 1, (batch, outputs)).astype(np.float32),
            "target_mask": np.concatenate([np.ones((batch, 1), bool),
                                           rng.uniform(size=(batch, outputs - 1)) < 0.75], 1),
            "half_point": np.full(batch, HALF_POINT, np.float32)}


# ----------------------------------------------------------------------------- JAX side


class JaxTrainer:
    """The loop's train step on TRMAesTask.loss, jitted with donate_argnums=0."""

    def __init__(self, config, cfg: TRMConfig, params: dict, batch: dict, total_steps: int):
        stand_in = types.SimpleNamespace(options=TRMAesOptions.from_config(config),
                                         model=TRM(cfg), model_cfg=cfg)
        loss_fn = stateless(functools.partial(TRMAesTask.loss, stand_in))
        self.optimizer, self.schedule = make_optimizer(dict(config.optimizer), total_steps)
        self.state = TrainState.create({"params": params}, self.optimizer, SEED.value + 1,
                                       use_ema=False)
        self.batch = {k: jnp.asarray(v) for k, v in batch.items()}
        step_fn = make_train_step(loss_fn, self.optimizer, self.schedule, 1, 0.0)
        t = time.perf_counter()
        self.compiled = jax.jit(step_fn, donate_argnums=0).lower(
            self.state, {}, self.batch).compile()
        self.compile_s = time.perf_counter() - t

    def step(self):
        self.state, metrics = self.compiled(self.state, {}, self.batch)
        return self.state, metrics


# ----------------------------------------------------------------------------- torch side


def torch_weighted(per_row: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """aes_jax.losses.regression's weighting: sum(per_row * w) / max(sum(w), 1e-12)."""
    return (per_row * weight).sum() / weight.sum().clamp_min(1e-12)


def torch_masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     weight: torch.Tensor) -> torch.Tensor:
    """weighted_mse: per row, the mean squared error over the outputs it has gold for."""
    sq = (pred.float() - target) ** 2
    mask = mask.float()
    return torch_weighted((sq * mask).sum(-1) / mask.sum(-1).clamp_min(1e-12), weight)


def torch_trm_loss(model: TorchTRM, batch: dict[str, torch.Tensor], n_sup: int,
                   use_halting: bool, halt_loss_weight: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """TRMAesTask.loss in torch: (mean over supervision steps, last step's MSE)."""
    ids, mask, target = batch["input_ids"], batch["attention_mask"], batch["target"]
    carry = model.initial_carry(ids)
    active = torch.ones(ids.shape[0], device=ids.device)
    total = torch.zeros((), device=ids.device)
    mse = total
    for _ in range(n_sup):
        carry, scores, halt = model(carry, ids, mask)
        mse = torch_masked_mse(scores, target, batch["target_mask"], active)
        step_loss = mse
        if use_halting:
            error = (scores[:, 0] - target[:, 0]).abs()
            correct = (error < batch["half_point"]).float().detach()
            bce = torch.nn.functional.binary_cross_entropy_with_logits(
                halt.float(), correct, reduction="none")
            step_loss = step_loss + halt_loss_weight * torch_weighted(bce, active)
            active = active * (halt <= 0).float().detach()
        total = total + step_loss
        carry = (carry[0].detach(), carry[1].detach())  # TorchTRM already detaches
    return total / n_sup, mse.detach()


class TorchTrainer:
    def __init__(self, config, cfg: TRMConfig, params_np: dict, batch: dict,
                 device: torch.device, lrs: np.ndarray):
        self.model = load_jax_params(TorchTRM(cfg), params_np).to(device).train()
        self.config, self.cfg = config, cfg
        self.batch = {k: torch.as_tensor(v, device=device) for k, v in batch.items()}
        self.batch["input_ids"] = self.batch["input_ids"].long()
        opt = config.optimizer
        params = list(self.model.parameters())
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.params = params
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opt.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=opt.lr, betas=(opt.b1, opt.b2), eps=opt.eps)
        # LambdaLR multiplies the base lr; lrs[k] is optax's schedule(k).
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda k: float(lrs[min(k, len(lrs) - 1)]) / opt.lr)
        self.clip = opt.clip_norm

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        loss, _ = torch_trm_loss(self.model, self.batch, self.cfg.n_sup, self.config.use_halting,
                                 self.config.halt_loss_weight)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), grad_norm.detach()


# ----------------------------------------------------------------------------- one variant


def check_first_steps(variant: str, jt: JaxTrainer, tt: TorchTrainer, sync, atol: float) -> dict:
    out: dict[str, Any] = {}
    for k in range(1, PARITY_STEPS + 1):
        _, m = jax.block_until_ready(jt.step())
        loss, gnorm = tt.step()
        sync(None)
        out[f"jax_loss_{k}"], out[f"torch_loss_{k}"] = float(m["loss"]), float(loss)
        out[f"jax_grad_norm_{k}"], out[f"torch_grad_norm_{k}"] = (float(m["grad_norm"]),
                                                                  float(gnorm))
        out[f"lr_{k}"] = float(m["learning_rate"])
        out[f"loss_{k}_abs_diff"] = abs(out[f"jax_loss_{k}"] - out[f"torch_loss_{k}"])
        out[f"grad_norm_{k}_rel_diff"] = (abs(out[f"jax_grad_norm_{k}"]
                                              - out[f"torch_grad_norm_{k}"])
                                          / max(abs(out[f"torch_grad_norm_{k}"]), 1e-30))
        log(f"{variant} parity step {k} (lr {out[f'lr_{k}']:.2e}): loss jax "
            f"{out[f'jax_loss_{k}']:.7f} torch {out[f'torch_loss_{k}']:.7f} (|diff| "
            f"{out[f'loss_{k}_abs_diff']:.2g}); grad norm jax {out[f'jax_grad_norm_{k}']:.6g} "
            f"torch {out[f'torch_grad_norm_{k}']:.6g} (rel diff "
            f"{out[f'grad_norm_{k}_rel_diff']:.2g})")
    require_same_loss(variant, out["loss_1_abs_diff"], atol)
    return out


def bench_variant(variant: str, device: torch.device) -> dict[str, Any]:
    config = variant_config(variant)
    batch_size = BATCH.value or int(config.global_batch_size)
    seq_len = SEQ_LEN.value or int(config.data.max_tokens)
    cfg = model_config(config, seq_len)
    batch = random_batch(batch_size, seq_len, cfg.vocab_size, cfg.num_outputs, SEED.value)
    total_steps = max(int(config.total_steps), PARITY_STEPS + WARMUP.value + STEPS.value)
    params = init_params(cfg, jax.random.PRNGKey(SEED.value))
    params_np = jax.device_get(params)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params_np))
    real_tokens = int(batch["attention_mask"].sum())
    log(f"{variant}: batch {batch_size} x {seq_len} ({real_tokens} real tokens), "
        f"hidden {cfg.hidden_size}, h/l cycles {cfg.h_cycles}/{cfg.l_cycles}, n_sup "
        f"{cfg.n_sup}, {cfg.num_outputs} outputs, {n_params:,} params; jax compiling the "
        "train step")

    jt = JaxTrainer(config, cfg, params, batch, total_steps)
    del params
    log(f"{variant}: jax compiled in {jt.compile_s:.1f}s")
    lrs = np.asarray(jax.vmap(jt.schedule)(jnp.arange(total_steps + 1)), np.float64)
    tt = TorchTrainer(config, cfg, params_np, batch, device, lrs)
    sync = torch_sync(device)
    parity = check_first_steps(variant, jt, tt, sync, LOSS_ATOL.value)

    tokens = batch_size * seq_len
    jax_t = time_steps(f"jax {variant}", jt.step, jax.block_until_ready, WARMUP.value,
                       STEPS.value, tokens)
    jax_t.compile_s = jt.compile_s
    jax_t.peak_bytes = jax_peak_bytes()
    jax_t.peak_mem = fmt_bytes(jax_t.peak_bytes)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch_t = time_steps(f"torch {variant}", tt.step, sync, WARMUP.value, STEPS.value, tokens)
    if device.type == "cuda":
        torch_t.peak_bytes = torch.cuda.max_memory_allocated(device)
        torch_t.peak_mem = fmt_bytes(torch_t.peak_bytes)
    j, t = jax_t.to_dict(), torch_t.to_dict()
    row = {"variant": variant, "batch": batch_size, "seq_len": seq_len,
           "real_tokens_per_step": real_tokens, "params": n_params,
           "model": dict(config.model), "optimizer": dict(config.optimizer),
           "use_halting": config.use_halting, "num_outputs": cfg.num_outputs,
           "jax_steps_per_s": len(jax_t.step_s) / sum(jax_t.step_s),
           "torch_steps_per_s": len(torch_t.step_s) / sum(torch_t.step_s),
           "jax": j, "torch": t, "parity": parity}
    row["ratio_jax_over_torch"] = row["jax_steps_per_s"] / row["torch_steps_per_s"]
    row["ratio_median_jax_over_torch"] = t["median_step_s"] / j["median_step_s"]
    del jt, tt
    gc.collect()
    return row


# ----------------------------------------------------------------------------- output


def print_table(rows: list[dict[str, Any]]) -> None:
    """steps/s over all timed steps; "(median)" = torch / jax median step time."""
    cols = ("variant", "batch x seq", "params", "jax steps/s", "torch steps/s", "jax/torch",
            "(median)", "jax ms/step", "torch ms/step", "jax tok/s", "torch tok/s",
            "jax compile s", "step-1 loss |diff|")
    lines = [cols]
    for r in rows:
        lines.append((r["variant"], f"{r['batch']} x {r['seq_len']}", f"{r['params']:,}",
                      f"{r['jax_steps_per_s']:.3f}", f"{r['torch_steps_per_s']:.3f}",
                      f"{r['ratio_jax_over_torch']:.2f}",
                      f"{r['ratio_median_jax_over_torch']:.2f}",
                      f"{1e3 * r['jax']['median_step_s']:.0f}",
                      f"{1e3 * r['torch']['median_step_s']:.0f}",
                      f"{r['jax']['tokens_per_s']:.0f}", f"{r['torch']['tokens_per_s']:.0f}",
                      f"{r['jax']['compile_s']:.1f}", f"{r['parity']['loss_1_abs_diff']:.1g}"))
    print_aligned(lines)


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from configs.trm_aes import _MODELS

    variants = VARIANTS.value
    unknown = [v for v in variants if v not in _MODELS]
    if unknown or not variants:
        raise app.UsageError(f"--config_variant={','.join(variants)}: expected some of "
                             f"{sorted(_MODELS)}")
    if flags.FLAGS["dtype"].value != "float32":
        raise app.UsageError("bench.trm_speed runs float32 only (the configs' dtype)")
    device = torch_llama.torch_device(DEVICE.value)
    jax_platform = jax.devices()[0].platform
    if (jax_platform == "cpu") != (device.type == "cpu"):
        log(f"WARNING: JAX runs on {jax_platform} but torch on {device}: "
            "the two sides are not on the same kind of device")
    info = {"variants": variants, "batch_flag": BATCH.value, "seq_len_flag": SEQ_LEN.value,
            "steps": STEPS.value, "warmup": WARMUP.value, "parity_steps": PARITY_STEPS,
            "vocab_size": VOCAB.value, "embed_dim": EMBED_DIM.value, "dropout": 0.0,
            "jax_devices": [str(d) for d in jax.devices()], "torch_device": str(device),
            "torch_threads": torch.get_num_threads(), "jax": jax.__version__,
            "torch": torch.__version__, "loadavg_at_start": load_average(),
            "torch_adamw": "torch.optim.AdamW defaults (foreach on CUDA, for-loop on CPU)"}
    for k, v in info.items():
        print(f"  {k}: {v}", flush=True)

    rows = [bench_variant(v, device) for v in variants]
    print()
    print_table(rows)
    info["loadavg_at_end"] = load_average()
    log(f"load average at end {info['loadavg_at_end']} (at start {info['loadavg_at_start']})")
    out = Path(OUT.value)
    write_json(out, {"config": info, "rows": rows})
    log(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
