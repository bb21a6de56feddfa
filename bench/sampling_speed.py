"""Self-consistency sampling throughput: JAX `aes_jax.eval.generate` vs transformers `generate`.

    # CPU smoke tests (a random tiny LLaMA; then the real model, briefly)
    python -m bench.sampling_speed --model=tiny --essays=2 --samples=4 --max_new_tokens=8 \
        --repeats=1
    python -m bench.sampling_speed --model=smollm2 --essays=1 --samples=2 --max_new_tokens=4 \
        --repeats=1

    # the real measurement, on a CUDA GPU (jax[cuda] and a CUDA torch installed)
    HF_HUB_OFFLINE=1 python -m bench.sampling_speed --model=smollm2 --dtype=bfloat16 \
        --essays=8 --samples=16 --max_new_tokens=48 --repeats=2 \
        [--temperature=1.0 --top_k=50 --top_p=1.0] [--prompt_tokens=0] [--device=auto] \
        [--out=bench/results/sampling_speed.json]

Self-consistency scoring draws m samples per essay and votes. This measures how many
(essay, sample) pairs per second each implementation produces, on the same checkpoint
(`--model`: `smollm2` = the packaged SmolLM2-135M-Instruct, `tiny` = a small random
LLaMA written to a temp dir, or an HF directory), dtype, device kind and sampling
settings, in the same process:

  jax    `generate(cfg, params, ids, mask, rng, SamplingConfig(...), num_samples=m)` on
         the essays x P left-padded prompts: each prompt prefilled once, its KV cache
         copied m times, then ONE decode batch of essays x m rows (rows of an essay
         adjacent). KV cache sized prompt + max_new_tokens, the whole decode loop jitted
         (lax.while_loop).
  torch  `model.generate(ids, attention_mask, do_sample=True, num_return_sequences=m,
         temperature, top_k, top_p, max_new_tokens, pad_token_id, eos_token_id)` on the
         essays x P left-padded prompts (transformers expands them to essays x m rows);
         its default dynamic KV cache, eager mode (no torch.compile / static cache).

Equal work: both sides generate exactly `--max_new_tokens` tokens for every sample.
transformers gets `min_new_tokens=max_new_tokens` (EOS is masked until then), and the
timed JAX runs use `stop_token_ids=()` (EOS is sampled like any token and decoding goes
on), so neither side stops early. A real scoring run stops at EOS; how many JAX samples
drew EOS (and where) is reported so the difference can be judged.

Prompts: if `<repo>/../shared/data/ell/fold_0.csv` exists, the first `--essays` essays
(`content_text`) each wrapped in a one-message chat ("Score this essay ...") with the
tokenizer's chat template and generation prompt, essays truncated so a prompt is at most
512 tokens. Otherwise, or with `--prompt_tokens=N > 0`, random token ids of length N
(256 when the data is absent and N = 0). The tiny model has no tokenizer: the SmolLM2
tokenizer is used and ids are folded into its vocabulary (id mod vocab), which keeps
the real prompt lengths and padding but not the text.

Before timing, both sides compute the next-token logits after every (left-padded)
prompt, the distribution the first sample of each essay is drawn from (JAX: positions
counted over real tokens, as generate does; transformers: position_ids = cumsum(mask) - 1,
as its generate does); they must agree within `--logit_atol` (default 1e-2 for float32,
1.0 for bfloat16, as llama_forward), and their difference is reported as `parity`.

Each side runs one untimed warm-up call (for JAX it is the call that compiles; its time
is reported, and compile ~= warm-up - median timed run), then `--repeats` timed calls,
synchronised with block_until_ready / torch.cuda.synchronize. samples/s = essays x m x
repeats / total timed seconds; generated tok/s = that x max_new_tokens. Peak memory:
torch.cuda.max_memory_allocated of the torch runs (reset before them); JAX's device
`memory_stats()["peak_bytes_in_use"]` since process start (n/a on CPU). JAX's GPU
preallocation is switched off (XLA_PYTHON_CLIENT_PREALLOCATE=false unless already set)
so the two libraries can share one GPU. This is a benchmark, not a test.
"""

from __future__ import annotations

import os

# Before JAX initialises a backend: do not grab 75% of the GPU, torch needs it too.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import csv  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from absl import app, flags  # noqa: E402

# --model, --dtype, --device, --seed, --scan_layers and --out are llama_forward's own flag
# objects (absl registers them when that module is imported; redefining them would clash).
from bench import llama_forward as lf  # noqa: E402
from bench.llama_forward import (DEVICE, DTYPE, LOGIT_ATOL, MODEL, OUT, SEED, Timing,  # noqa: E402
                                 fmt_bytes, jax_peak_bytes, load_average, log, time_steps,
                                 torch_sync, write_json)
from aes_jax.eval.generate import SamplingConfig, generate, left_pad  # noqa: E402
from aes_jax.interop import assets, hf  # noqa: E402
from aes_jax.interop.torch_ref import llama as torch_llama  # noqa: E402
from aes_jax.models.llama import Llama  # noqa: E402

flags.set_default(OUT, "bench/results/sampling_speed.json")
flags.set_default(DEVICE, "auto")
for _name in ("model", "dtype", "device", "seed", "scan_layers", "logit_atol", "out"):
    flags.declare_key_flag(_name)  # list the shared flags in this module's --help
ESSAYS = flags.DEFINE_integer("essays", 8, "Essays (prompts) per call.")
SAMPLES = flags.DEFINE_integer("samples", 16, "Samples per essay (m of self-consistency).")
MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 48, "Tokens generated per sample.")
TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling temperature (0 = greedy).")
TOP_K = flags.DEFINE_integer("top_k", 50, "Top-k filter (0 = off).")
TOP_P = flags.DEFINE_float("top_p", 1.0, "Nucleus filter (1.0 = off).")
PROMPT_TOKENS = flags.DEFINE_integer(
    "prompt_tokens", 0, "0 = real ELL essay prompts (synthetic 256 tokens if the data is "
    "absent); N > 0 = random prompts of N tokens.")
REPEATS = flags.DEFINE_integer("repeats", 2, "Timed calls per side (after one warm-up).")

MAX_PROMPT_TOKENS = 512
SYNTHETIC_DEFAULT = 256
INSTRUCTION = ("Score this essay, written by an English language learner, for overall "
               "language proficiency on a scale from 1.0 to 5.0 in steps of 0.5. "
               "Reply with the score only.\n\nEssay:\n")
DATA_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ell" / "fold_0.csv"


# ----------------------------------------------------------------------------- prompts


def load_tokenizer(model_dir: Path):
    """The model's own tokenizer, or SmolLM2's for a directory without one (the tiny model)."""
    from transformers import AutoTokenizer

    own = any((model_dir / f).is_file() for f in ("tokenizer.json", "tokenizer.model"))
    source = model_dir if own else assets.smollm2_dir()
    return AutoTokenizer.from_pretrained(str(source), local_files_only=True), own


def read_essays(path: Path, n: int) -> list[str]:
    csv.field_size_limit(sys.maxsize)
    with path.open(newline="", encoding="utf-8") as f:
        essays = [row["content_text"] for _, row in zip(range(n), csv.DictReader(f))]
    if len(essays) < n:
        raise app.UsageError(f"--essays={n}: {path} has only {len(essays)} essays")
    return essays


def chat_ids(tokenizer, essay: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": INSTRUCTION + essay}],
                                         add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def essay_prompt(tokenizer, essay: str, max_tokens: int) -> list[int]:
    """The chat prompt for `essay`, the essay cut (in tokens) so the prompt fits max_tokens."""
    ids = chat_ids(tokenizer, essay)
    if len(ids) <= max_tokens:
        return ids
    essay_ids = tokenizer(essay, add_special_tokens=False)["input_ids"]
    budget = max_tokens - len(chat_ids(tokenizer, ""))
    while budget > 0:
        ids = chat_ids(tokenizer, tokenizer.decode(essay_ids[:budget]).rstrip() + " ...")
        if len(ids) <= max_tokens:
            return ids
        budget -= len(ids) - max_tokens  # decode/re-encode can merge or split tokens
    raise app.UsageError(f"the chat template alone exceeds {max_tokens} tokens")


def make_prompts(tokenizer, vocab_size: int, seed: int) -> tuple[list[list[int]], str]:
    """-> (token ids per essay, a line saying where they came from)."""
    n = ESSAYS.value
    length = PROMPT_TOKENS.value
    if length == 0 and DATA_FILE.is_file():
        prompts = [essay_prompt(tokenizer, e, MAX_PROMPT_TOKENS)
                   for e in read_essays(DATA_FILE, n)]
        source = (f"first {n} essays of {DATA_FILE} in the chat template, "
                  f"<= {MAX_PROMPT_TOKENS} tokens")
        if len(tokenizer) > vocab_size:
            prompts = [[t % vocab_size for t in p] for p in prompts]
            source += f" (ids folded mod {vocab_size}: model vocab < tokenizer's)"
        return prompts, source
    if length == 0:
        log(f"NOTE: {DATA_FILE} not found: using synthetic prompts of "
            f"{SYNTHETIC_DEFAULT} tokens")
        length = SYNTHETIC_DEFAULT
        source = f"synthetic: {DATA_FILE} not found; random ids, {length} tokens"
    else:
        source = f"synthetic: random ids, {length} tokens (--prompt_tokens)"
    low = 100 if vocab_size > 1000 else 1  # keep clear of the special tokens at the bottom
    rng = np.random.default_rng(seed)
    return [rng.integers(low, vocab_size, length).tolist() for _ in range(n)], source


# ----------------------------------------------------------------------------- parity


def check_prompt_logits(cfg, params, model, ids: np.ndarray, mask: np.ndarray,
                        device: torch.device, atol: float) -> dict[str, float]:
    """Both sides' next-token logits after each prompt (where every sample starts); asserts
    they agree, so the two samplers draw from the same distributions."""
    log("parity: next-token logits after each prompt")
    jax_logits = jax.jit(lambda p, x, m: Llama(cfg).apply(
        {"params": p}, x, attention_mask=m, last_logits_only=True))(
            params, jnp.asarray(ids), jnp.asarray(mask))
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    with torch.inference_mode():
        out = model(input_ids=torch.as_tensor(ids, dtype=torch.long, device=device),
                    attention_mask=torch.as_tensor(mask.astype(np.int64), device=device),
                    position_ids=torch.as_tensor(positions, device=device), logits_to_keep=1,
                    use_cache=False)
    report = torch_llama.compare_logits(out.logits[:, -1].float().cpu().numpy(),
                                        np.asarray(jax_logits[:, -1], np.float32))
    log(f"parity: max |logit diff| {report['max_abs_diff']:.3g}, top-1 agreement "
        f"{report['top1_agreement']:.4f}, mean KL {report['mean_kl']:.3g}")
    if not report["max_abs_diff"] <= atol:
        raise AssertionError(f"JAX and torch next-token logits differ by "
                             f"{report['max_abs_diff']:.3g} > --logit_atol={atol}: "
                             "not the same model")
    report["logit_atol"] = atol
    return report


# ----------------------------------------------------------------------------- the two sides


def bench_jax(cfg, params, ids: np.ndarray, mask: np.ndarray, m: int,
              pad: int) -> tuple[Timing, dict[str, Any], np.ndarray]:
    """Timing, warm-up/compile seconds, and the tokens [essays*m, N] of the last timed run."""
    n_new = MAX_NEW_TOKENS.value
    rows = ids.shape[0] * m
    jax_ids, jax_mask = jnp.asarray(ids), jnp.asarray(mask)
    # stop_token_ids=(): no early stop, so every row generates n_new tokens like HF's side.
    sampling = SamplingConfig(max_new_tokens=n_new, temperature=TEMPERATURE.value,
                              top_k=TOP_K.value, top_p=TOP_P.value, stop_token_ids=(),
                              pad_token_id=pad)
    calls = iter(range(1_000_000))
    last: list[Any] = [None]

    def step():
        out = generate(cfg, params, jax_ids, jax_mask, rng=jax.random.key(SEED.value + next(calls)),
                       sampling=sampling, num_samples=m)
        last[0] = out
        return out

    log(f"jax: warm-up call (compiles) on {rows} rows x {n_new} new tokens")
    t = time.perf_counter()
    jax.block_until_ready(step())
    warmup_s = time.perf_counter() - t
    log(f"jax: warm-up {warmup_s:.2f}s")
    timing = time_steps("jax", step, jax.block_until_ready, 0, REPEATS.value, rows * n_new)
    timing.peak_bytes = jax_peak_bytes()
    timing.peak_mem = fmt_bytes(timing.peak_bytes)
    timing.compile_s = max(0.0, warmup_s - statistics.median(timing.step_s))
    tokens = np.asarray(last[0].tokens)
    lengths = np.asarray(last[0].lengths)
    if tokens.shape != (rows, n_new) or not np.all(lengths == n_new):
        raise AssertionError(f"jax generated {tokens.shape}, lengths {np.unique(lengths)}; "
                             f"expected ({rows}, {n_new}) everywhere")
    return timing, {"warmup_s": warmup_s, "compile_s_est": timing.compile_s}, tokens


def bench_torch(model, ids: np.ndarray, mask: np.ndarray, m: int, pad: int, eos: int,
                device: torch.device) -> tuple[Timing, dict[str, Any], np.ndarray]:
    n_new = MAX_NEW_TOKENS.value
    rows = ids.shape[0] * m
    greedy = TEMPERATURE.value == 0.0
    if greedy:  # transformers refuses num_return_sequences > 1 without sampling or beams
        ids, mask, per_prompt = np.repeat(ids, m, axis=0), np.repeat(mask, m, axis=0), 1
    else:
        per_prompt = m
    t_ids = torch.as_tensor(ids, dtype=torch.long, device=device)
    t_mask = torch.as_tensor(mask.astype(np.int64), device=device)
    kwargs: dict[str, Any] = dict(
        do_sample=not greedy, max_new_tokens=n_new, min_new_tokens=n_new,
        num_return_sequences=per_prompt, pad_token_id=pad, eos_token_id=eos)
    if not greedy:
        kwargs.update(temperature=TEMPERATURE.value, top_k=TOP_K.value, top_p=TOP_P.value)
    sync = torch_sync(device)
    calls = iter(range(1_000_000))
    last: list[Any] = [None]

    def step():
        torch.manual_seed(SEED.value + next(calls))
        with torch.inference_mode():
            out = model.generate(input_ids=t_ids, attention_mask=t_mask, **kwargs)
        last[0] = out
        return out

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    log(f"torch: warm-up call on {ids.shape[0]} prompts x {per_prompt} return sequences")
    t = time.perf_counter()
    sync(step())
    warmup_s = time.perf_counter() - t
    log(f"torch: warm-up {warmup_s:.2f}s")
    timing = time_steps("torch", step, sync, 0, REPEATS.value, rows * n_new)
    if device.type == "cuda":
        timing.peak_bytes = torch.cuda.max_memory_allocated(device)
        timing.peak_mem = fmt_bytes(timing.peak_bytes)
    out = last[0].cpu().numpy()
    if out.shape != (rows, ids.shape[1] + n_new):
        raise AssertionError(f"torch generated {out.shape}, expected "
                             f"({rows}, {ids.shape[1] + n_new})")
    return timing, {"warmup_s": warmup_s}, out[:, ids.shape[1]:]


# ----------------------------------------------------------------------------- output


def eos_stats(tokens: np.ndarray, eos: int) -> dict[str, Any]:
    """How the JAX samples (generated without stopping) would have ended with EOS as a stop."""
    hit = tokens == eos
    any_hit = hit.any(axis=1)
    natural = np.where(any_hit, hit.argmax(axis=1) + 1, tokens.shape[1])
    return {"rows_with_eos": int(any_hit.sum()), "rows": int(tokens.shape[0]),
            "mean_len_to_first_eos_capped": float(natural.mean()),
            "max_len_to_first_eos_capped": int(natural.max())}


def side_row(name: str, t: Timing, extra: dict[str, Any], samples: int,
             ref: Timing | None) -> dict[str, Any]:
    samples_per_s = samples * len(t.step_s) / sum(t.step_s)
    row = {"side": name, "samples_per_s": samples_per_s, "gen_tok_per_s": t.tokens_per_s,
           "median_run_s": statistics.median(t.step_s), "run_s": t.step_s,
           "peak_mem": t.peak_mem, "peak_bytes": t.peak_bytes, **extra}
    if ref is not None:
        row["ratio_jax_over_torch"] = t.tokens_per_s / ref.tokens_per_s
        row["ratio_median_jax_over_torch"] = statistics.median(ref.step_s) / row["median_run_s"]
    return row


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ("side", "median s/run", "samples/s", "gen tok/s", "jax/torch", "(median)",
            "warm-up s", "compile s (est.)", "peak mem")
    lines = [cols]
    for r in rows:
        ratio = r.get("ratio_jax_over_torch")
        med = r.get("ratio_median_jax_over_torch")
        compile_s = r.get("compile_s_est")
        lines.append((r["side"], f"{r['median_run_s']:.3f}", f"{r['samples_per_s']:.1f}",
                      f"{r['gen_tok_per_s']:.0f}", "" if ratio is None else f"{ratio:.2f}",
                      "" if med is None else f"{med:.2f}", f"{r['warmup_s']:.2f}",
                      "" if compile_s is None else f"{compile_s:.1f}", r["peak_mem"]))
    lf.print_aligned(lines)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch_llama.torch_device(name)


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    for flag in (ESSAYS, SAMPLES, MAX_NEW_TOKENS, REPEATS):
        if flag.value < 1:
            raise app.UsageError(f"--{flag.name} must be >= 1")
    if PROMPT_TOKENS.value < 0:
        raise app.UsageError("--prompt_tokens must be >= 0")
    dtype = DTYPE.value
    m, n_new = SAMPLES.value, MAX_NEW_TOKENS.value
    device = resolve_device(DEVICE.value)
    jax_platform = jax.devices()[0].platform
    if (jax_platform == "cpu") != (device.type == "cpu"):
        log(f"WARNING: JAX runs on {jax_platform} but torch on {device}: "
            "the two sides are not on the same kind of device")

    import transformers

    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as tmp:
        model_dir = lf.resolve_model(MODEL.value, Path(tmp), SEED.value, MAX_PROMPT_TOKENS + n_new)
        log(f"loading JAX params from {model_dir}")
        cfg, params = hf.load_llama(model_dir, param_dtype=dtype, dtype=dtype,
                                    scan_layers=lf.SCAN_LAYERS.value,
                                    attention=lf.ATTENTION.value)
        log(f"loading torch model on {device}")
        model = torch_llama.load_hf_llama(model_dir, device=str(device), dtype=dtype)
        tokenizer, own_tokenizer = load_tokenizer(model_dir)

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if max(eos, pad) >= cfg.vocab_size:
        raise app.UsageError(f"eos {eos} / pad {pad} outside the model vocabulary")
    prompts, prompt_source = make_prompts(tokenizer, cfg.vocab_size, SEED.value)
    ids, mask = left_pad(prompts, pad)
    lengths = [len(p) for p in prompts]
    samples = ESSAYS.value * m

    info = {
        "model": MODEL.value, "model_dir": str(model_dir),
        "params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)),
        "layers": cfg.num_hidden_layers, "hidden": cfg.hidden_size, "vocab": cfg.vocab_size,
        "essays": ESSAYS.value, "samples_per_essay": m, "rows": samples,
        "max_new_tokens": n_new, "temperature": TEMPERATURE.value, "top_k": TOP_K.value,
        "top_p": TOP_P.value, "repeats": REPEATS.value, "dtype": dtype,
        "scan_layers": lf.SCAN_LAYERS.value, "prompts": prompt_source,
        "prompt_tokens_min_mean_max": [min(lengths), round(float(np.mean(lengths)), 1),
                                       max(lengths)],
        "padded_prompt_len": int(ids.shape[1]), "eos_token_id": eos, "pad_token_id": pad,
        "jax_devices": [str(d) for d in jax.devices()], "torch_device": str(device),
        "torch_device_kind": (torch.cuda.get_device_name(device) if device.type == "cuda"
                              else "cpu"),
        "torch_threads": torch.get_num_threads(),
        "xla_python_client_preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE"),
        "jax": jax.__version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "loadavg_at_start": load_average(),
    }
    for k, v in info.items():
        print(f"  {k}: {v}")

    atol = LOGIT_ATOL.value if LOGIT_ATOL.value is not None else lf._DEFAULT_ATOL[dtype]
    parity = check_prompt_logits(cfg, params, model, ids, mask, device, atol)
    jax_t, jax_extra, jax_tokens = bench_jax(cfg, params, ids, mask, m, pad)
    torch_t, torch_extra, torch_tokens = bench_torch(model, ids, mask, m, pad, eos, device)

    eos_info = eos_stats(jax_tokens, eos)
    rows = [side_row("jax", jax_t, jax_extra, samples, torch_t),
            side_row("torch", torch_t, torch_extra, samples, None)]
    notes = [
        f"{ESSAYS.value} essays x {m} samples = {samples} sequences per call, "
        f"{n_new} new tokens each ({samples * n_new} generated tokens per call); "
        f"prompts {info['prompt_tokens_min_mean_max']} tokens (min/mean/max), "
        f"left-padded to {ids.shape[1]}.",
        f"Equal work: transformers runs with min_new_tokens=max_new_tokens={n_new} (EOS masked "
        "until then) and the timed JAX runs with stop_token_ids=() (no early stop), so both "
        "generate every token; a real scoring run would stop at EOS.",
        f"JAX samples that drew EOS (id {eos}) within {n_new} tokens: "
        f"{eos_info['rows_with_eos']}/{eos_info['rows']}; mean length to the first EOS "
        f"(capped at {n_new}) {eos_info['mean_len_to_first_eos_capped']:.1f}, longest "
        f"{eos_info['max_len_to_first_eos_capped']} (a batch stops only when its longest "
        "sample does, on both sides).",
        "jax: one jitted generate(num_samples=m) call (one prefill per essay, m decode rows); compile excluded "
        "from timing (compile ~= warm-up - median run). torch: model.generate("
        f"num_return_sequences={m}), default dynamic cache, eager, torch.inference_mode.",
        f"Same weights, dtype {dtype}, temperature {TEMPERATURE.value}, top_k {TOP_K.value}, "
        f"top_p {TOP_P.value}; the random streams differ, so the sampled texts differ.",
        "samples/s = essays x m x repeats / total timed s; jax/torch = ratio of those "
        "rates; (median) = torch median s/run / jax median s/run.",
        f"JAX on {jax.devices()[0]} (peak since process start), torch on {device}.",
    ]
    if jax_platform == "cpu" and device.type == "cpu":
        notes.append(f"CPU: torch uses {torch.get_num_threads()} threads, XLA its own pool, on "
                     f"{os.cpu_count()} cores; load average at start {info['loadavg_at_start']}.")
    samples_text = {}
    if own_tokenizer:
        samples_text = {"jax": tokenizer.decode(jax_tokens[0], skip_special_tokens=False),
                        "torch": tokenizer.decode(torch_tokens[0], skip_special_tokens=False)}

    print()
    print_table(rows)
    print()
    for note in notes:
        print(f"  - {note}")
    for side, text in samples_text.items():
        print(f"  {side} sample 0: {text[:200]!r}")
    sys.stdout.flush()
    info["loadavg_at_end"] = load_average()
    log(f"load average at end {info['loadavg_at_end']} (at start {info['loadavg_at_start']})")
    out = Path(OUT.value)
    write_json(out, {"config": info, "parity": parity, "rows": rows, "jax_eos_stats": eos_info,
                     "notes": notes,
                     "first_sample_text": samples_text})
    log(f"wrote {out}")


if __name__ == "__main__":
    app.run(main)
