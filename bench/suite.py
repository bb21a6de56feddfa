"""Every speed benchmark in one run, JAX and torch on the same device, as one table.

    python -m bench.suite --device=cpu|cuda [--quick | --smoke] [--only=forward,train,...] \
        [--out=bench/results/<device>-<YYYY-MM-DD>.json]

Each benchmark runs as its own subprocess (`python -m bench.<name> ... --out=<json>`, from
the repository root, this environment plus HF_HUB_OFFLINE=1, XLA_PYTHON_CLIENT_PREALLOCATE
=false so JAX leaves GPU memory to torch, and JAX_PLATFORMS=<device> so both sides run
where --device says), its output in `<out stem>-logs/<run>.log` and its JSON beside it.
Every benchmark checks parity before it times (and fails if the sides disagree); the
JSONs are turned into the common rows of bench/suite_rows.py, written to --out with a
Markdown table next to it (same stem, .md), which is also printed. A benchmark that
fails becomes rows with an "error" and the suite goes on; the exit code is 1 if any run
failed or any row's parity check failed.

Jobs (`--only` takes these names):
  forward   bench.llama_forward: forward and forward+backward tokens/s per model and seq
  train     bench.train_step: LoRA and full fine-tuning steps vs transformers + PEFT (sdpa;
            torch eager and, for the modes in the profile, torch.compile; MFU both sides)
  sampling  bench.sampling_speed: self-consistency sampling vs transformers generate
  trm       bench.trm_speed: TRM train steps/s vs the torch reference, per config variant
  compile   bench.llama_forward --rows=fwd+bwd, layers scanned and --noscan_layers: the
            XLA compile seconds of the 30-layer SmolLM2 forward+backward

Sizes (PROFILES below; every row's config says what was run):
  --smoke        the tiny random LLaMA, seq 64, one timed step, a 2 x 2 x 4 sampling run,
                 the TRM demo variant at 4 x 32; seconds per benchmark, plumbing only
  --quick (cpu)  SmolLM2-135M, seq 1024, batch 1, one or two timed steps, torch.compile
                 for LoRA only, sampling 4 essays x 4 samples x 16 tokens, TRM demo + cpu,
                 compile rows at seq 256 (compile time hardly depends on it); sized for
                 10 minutes on 2 quiet CPU cores (a loaded machine takes longer)
  cpu (full)     seq 1024 and 2048, torch.compile for both modes, sampling 64 x 16 x 48
                 (the issue's workload; slow on CPU), TRM demo, cpu and paper
  cuda           SmolLM2-135M and a random LLaMA-3.2-1B-shaped model (bench/random_llama.py,
                 built once per suite run), bf16 (train: float32 params + bf16 autocast on
                 both sides), 8192 tokens per forward and 4096 per train step, sampling 64 x
                 16 x 48; --quick: seq 1024 only and fewer steps
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from absl import app, flags

from bench import suite_rows as sr
from bench.table import log

JOB_NAMES = ("forward", "train", "sampling", "trm", "compile")
DEVICE = flags.DEFINE_enum("device", None, ["cpu", "cuda"], "Where both sides run.")
QUICK = flags.DEFINE_bool("quick", False, "The reduced sizes (~10 min on 2 CPU cores).")
SMOKE = flags.DEFINE_bool("smoke", False, "Seconds-long plumbing run with the tiny model.")
OUT = flags.DEFINE_string("out", "", "JSON path; default bench/results/<device>-<date>.json.")
ONLY = flags.DEFINE_list("only", [], "Jobs to run (default all): " + ", ".join(JOB_NAMES))
flags.mark_flag_as_required("device")

LLAMA1B = "llama3.2-1b-shape"  # the label of the random 1B model in row names


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    models: tuple[str, ...]  # "tiny", "smollm2" or LLAMA1B
    seq_lens: tuple[int, ...]
    forward_tokens: int  # tokens per step: batch = max(1, tokens // seq_len)
    train_tokens: int
    dtype: str  # forward, sampling and compile rows
    autocast: bool  # train rows: float32 params + bf16 matmuls instead of `dtype`
    forward_steps: tuple[int, int]  # (timed, warm-up)
    train_steps: tuple[int, int]
    torch_compile: tuple[str, ...]  # train modes also timed under torch.compile
    sampling: dict[str, int]  # bench.sampling_speed flags
    trm_variants: tuple[str, ...]
    trm_steps: tuple[int, int]
    trm_shape: tuple[int, int] = (0, 0)  # (batch, seq_len); 0 = the variant's own
    compile_seq_len: int = 1024


_ISSUE_SAMPLING = {"essays": 64, "samples": 16, "max_new_tokens": 48}
PROFILES = {
    "smoke": Profile(
        "smoke", ("tiny",), (64,), 64, 64, "float32", False, (1, 0), (1, 0), (),
        {"essays": 2, "samples": 2, "max_new_tokens": 4, "repeats": 1, "prompt_tokens": 32},
        ("demo",), (1, 0), (4, 32), compile_seq_len=64),
    "cpu-quick": Profile(
        "quick", ("smollm2",), (1024,), 1024, 1024, "float32", False, (2, 1), (2, 1), ("lora",),
        {"essays": 4, "samples": 4, "max_new_tokens": 16, "repeats": 1},
        ("demo", "cpu"), (3, 1), compile_seq_len=256),
    "cpu-full": Profile(
        "full", ("smollm2",), (1024, 2048), 1024, 1024, "float32", False, (3, 1), (3, 1),
        ("lora", "full"), {**_ISSUE_SAMPLING, "repeats": 2}, ("demo", "cpu", "paper"), (5, 2)),
    "cuda-quick": Profile(
        "quick", ("smollm2", LLAMA1B), (1024,), 8192, 4096, "bfloat16", True, (5, 1), (5, 1),
        ("lora", "full"), {**_ISSUE_SAMPLING, "repeats": 1}, ("demo", "cpu", "paper"), (5, 1)),
    "cuda-full": Profile(
        "full", ("smollm2", LLAMA1B), (1024, 2048), 8192, 4096, "bfloat16", True, (10, 3),
        (10, 3), ("lora", "full"), {**_ISSUE_SAMPLING, "repeats": 3}, ("demo", "cpu", "paper"),
        (10, 3)),
}


def pick_profile(device: str, quick: bool, smoke: bool) -> Profile:
    if smoke:
        smoke_profile = PROFILES["smoke"]
        if device == "cuda":  # the GPU's dtypes, still the tiny model
            return dataclasses.replace(smoke_profile, dtype="bfloat16", autocast=True)
        return smoke_profile
    return PROFILES[f"{device}-{'quick' if quick else 'full'}"]


@dataclasses.dataclass
class Run:
    """One benchmark subprocess and how its JSON becomes rows: `to_rows(json)`, or for the
    second run of a pair (the compile rows), compile_rows(json of `pair`, json)."""

    job: str
    key: str  # file stem of its log and JSON
    module: str
    flags: list[str]
    to_rows: Callable[[dict], list[dict[str, Any]]] | None
    expected: list[str]  # row names, for the error rows if it fails (once per pair)
    model: str | None = None
    pair: str | None = None


def _batch(tokens: int, seq_len: int) -> int:
    return max(1, tokens // seq_len)


def plan(p: Profile, device: str, jobs: list[str], model_flag: dict[str, str]) -> list[Run]:
    """The runs of `jobs` for profile `p`; `model_flag` maps a model label to --model=."""
    runs: list[Run] = []
    if "forward" in jobs:
        for m in p.models:
            for t in p.seq_lens:
                steps, warmup = p.forward_steps
                runs.append(Run(
                    "forward", f"forward-{m}-T{t}", "bench.llama_forward",
                    [f"--model={model_flag[m]}", f"--seq_len={t}",
                     f"--batch={_batch(p.forward_tokens, t)}", f"--dtype={p.dtype}",
                     f"--device={device}", f"--steps={steps}", f"--warmup={warmup}"],
                    lambda d, m=m: sr.forward_rows(d, m),
                    [f"llama_forward/{m}/T{t}", f"llama_fwd_bwd/{m}/T{t}"], m))
    if "train" in jobs:
        for m in p.models:
            for t in p.seq_lens:
                steps, warmup = p.train_steps
                extra = ["--autocast"] if p.autocast else []
                if p.torch_compile:
                    extra.append(f"--torch_compile={','.join(p.torch_compile)}")
                expected = [f"train_{mode}/{m}/T{t}/{kind}" for mode in ("lora", "full")
                            for kind in ("eager", "torch_compile")
                            if kind == "eager" or mode in p.torch_compile]
                runs.append(Run(
                    "train", f"train-{m}-T{t}", "bench.train_step",
                    [f"--model={model_flag[m]}", f"--seq_len={t}",
                     f"--batch={_batch(p.train_tokens, t)}", f"--dtype={p.dtype}",
                     f"--device={device}", f"--steps={steps}", f"--warmup={warmup}",
                     "--modes=lora,full", "--torch_attn=sdpa", *extra],
                    lambda d, m=m: sr.train_rows(d, m), expected, m))
    if "sampling" in jobs:
        m = p.models[0]  # SmolLM2 (tiny in --smoke): the self-consistency scorer's model
        runs.append(Run(
            "sampling", f"sampling-{m}", "bench.sampling_speed",
            [f"--model={model_flag[m]}", f"--dtype={p.dtype}", f"--device={device}",
             *[f"--{k}={v}" for k, v in p.sampling.items()]],
            lambda d, m=m: sr.sampling_rows(d, m), [f"sampling/{m}"], m))
    if "trm" in jobs:
        steps, warmup = p.trm_steps
        batch, seq_len = p.trm_shape
        runs.append(Run(
            "trm", "trm", "bench.trm_speed",
            [f"--config_variant={','.join(p.trm_variants)}", f"--device={device}",
             f"--steps={steps}", f"--warmup={warmup}", f"--batch={batch}",
             f"--seq_len={seq_len}"],
            sr.trm_rows, [f"trm_train/{v}" for v in p.trm_variants]))
    if "compile" in jobs:
        m, t = p.models[0], p.compile_seq_len
        common = [f"--model={model_flag[m]}", f"--seq_len={t}",
                  f"--batch={_batch(p.forward_tokens, p.seq_lens[0])}", f"--dtype={p.dtype}",
                  f"--device={device}", "--rows=fwd+bwd", "--steps=1", "--warmup=0"]
        names = [f"compile_fwd_bwd/{m}/scan", f"compile_fwd_bwd/{m}/noscan"]
        runs.append(Run("compile", f"compile-{m}-scan", "bench.llama_forward", common, None,
                        [], m))
        runs.append(Run("compile", f"compile-{m}-noscan", "bench.llama_forward",
                        [*common, "--noscan_layers"], None, names, m, pair=f"compile-{m}-scan"))
    return runs


# ----------------------------------------------------------------------------- running


def subprocess_env(device: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # torch shares the GPU
    env["JAX_PLATFORMS"] = device  # JAX on the device torch uses, or a loud failure
    return env


def run_command(cmd: list[str], log_path: Path, env: dict[str, str]) -> tuple[int, float]:
    """Runs `cmd` from the repository root, stdout and stderr into `log_path`."""
    start = time.perf_counter()
    with log_path.open("w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, cwd=sr.REPO_ROOT, env=env, stdout=f,
                            stderr=subprocess.STDOUT).returncode
    return rc, time.perf_counter() - start


def log_tail(path: Path, lines: int = 1) -> str:
    """The last lines of a log: for a Python failure, the last one is the exception."""
    text = path.read_text(errors="replace").strip().splitlines()
    return " / ".join(line.strip() for line in text[-lines:])


def execute(runs: list[Run], logs: Path, env: dict[str, str],
            blocked: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """Runs every benchmark, -> (rows, run records). `blocked`: model label -> why its
    runs cannot start (e.g. the random 1B model could not be written)."""
    rows: list[dict] = []
    records: list[dict] = []
    payloads: dict[str, dict] = {}
    for run in runs:
        json_path, log_path = logs / f"{run.key}.json", logs / f"{run.key}.log"
        cmd = [sys.executable, "-m", run.module, *run.flags, f"--out={json_path}"]
        record = {"key": run.key, "job": run.job, "command": " ".join(cmd[1:]),
                  "log": str(log_path), "json": str(json_path)}
        error = blocked.get(run.model or "")
        if error is None:
            log(f"run {run.key}: {' '.join(cmd[1:])}")
            json_path.unlink(missing_ok=True)
            rc, seconds = run_command(cmd, log_path, env)
            record.update(rc=rc, seconds=round(seconds, 1))
            if rc != 0 or not json_path.is_file():
                error = f"exit code {rc}: {log_tail(log_path)}"
                record["log_tail"] = log_tail(log_path, 8)
        new_rows: list[dict] = []
        if error is None:
            try:
                payloads[run.key] = json.loads(json_path.read_text())
                if run.pair is not None:
                    if run.pair not in payloads:
                        raise RuntimeError(f"the run it pairs with, {run.pair}, failed")
                    new_rows = sr.compile_rows(payloads[run.pair], payloads[run.key], run.model)
                elif run.to_rows is not None:
                    new_rows = run.to_rows(payloads[run.key])
            except Exception as e:  # a JSON the converter does not understand is a failure too
                error = f"converting {json_path.name}: {type(e).__name__}: {e}"
        if error is not None:
            record["error"] = error
            log(f"run {run.key}: FAILED: {error}")
            new_rows = [sr.error_row(n, error, {"run": run.key}, str(log_path))
                        for n in run.expected]
        else:
            log(f"run {run.key}: done in {record.get('seconds')}s, {len(new_rows)} rows")
        rows.extend(new_rows)
        records.append(record)
    return rows, records


def prepare_models(p: Profile, jobs: list[str], tmp: Path, logs: Path,
                   env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """-> (model label -> --model value, model label -> error). Writes the random 1B model
    once, for every run that needs it."""
    model_flag = {"tiny": "tiny", "smollm2": "smollm2"}
    blocked: dict[str, str] = {}
    if LLAMA1B in p.models and {"forward", "train"} & set(jobs):
        out = tmp / "llama1b"
        log_path = logs / "random_llama1b.log"
        log(f"writing the random {LLAMA1B} model to {out}")
        rc, seconds = run_command([sys.executable, "-m", "bench.random_llama", str(out)],
                                  log_path, env)
        if rc != 0:
            blocked[LLAMA1B] = f"bench.random_llama exit code {rc}: {log_tail(log_path)}"
        log(f"random model: exit code {rc} after {seconds:.0f}s")
        model_flag[LLAMA1B] = str(out)
    return model_flag, blocked


# ----------------------------------------------------------------------------- main


def write_outputs(out: Path, payload: dict[str, Any], title: str) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    table = sr.markdown_table(payload["rows"])
    md = (f"# {title}\n\n{table}\n"
          "jax / torch are speeds in `unit` (compile rows: seconds, no torch side); "
          "jax/torch > 1 means JAX is faster. Peak memory where the device reports it.\n")
    sr.markdown_path(out).write_text(md)
    return md


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if QUICK.value and SMOKE.value:
        raise app.UsageError("--quick and --smoke: pick one")
    jobs = ONLY.value or list(JOB_NAMES)
    unknown = [j for j in jobs if j not in JOB_NAMES]
    if unknown:
        raise app.UsageError(f"--only: unknown {unknown}; jobs are {list(JOB_NAMES)}")
    device = DEVICE.value
    p = pick_profile(device, QUICK.value, SMOKE.value)
    started = datetime.datetime.now()
    # Absolute: the benchmarks run from the repository root, whatever the cwd here.
    out = (Path(OUT.value) if OUT.value else sr.default_out_path(device, started.date())).resolve()
    logs = out.parent / f"{out.stem}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = subprocess_env(device)
    log(f"suite: device {device}, profile {p.name}, jobs {jobs}, logs in {logs}")
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-suite-"))
    try:
        model_flag, blocked = prepare_models(p, jobs, tmp, logs, env)
        runs = plan(p, device, jobs, model_flag)
        rows, records = execute(runs, logs, env, blocked)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [r["key"] for r in records if "error" in r]
    bad_parity = [r["name"] for r in rows if "error" not in r
                  and not r.get("parity", {"ok": True}).get("ok")]
    payload = sr.suite_payload(device, rows, suite={
        "profile": p.name, "jobs": jobs, "profile_sizes": dataclasses.asdict(p),
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - t0, 1), "runs": records, "failed_runs": failed,
        "parity_failed_rows": bad_parity, "python": platform.python_version(),
        "cpu_count": os.cpu_count(), "host": platform.node()})
    md = write_outputs(out, payload, f"Speed suite: {device}, {p.name}, "
                                     f"{started.date().isoformat()}")
    print()
    print(md, flush=True)
    log(f"wrote {out} and {sr.markdown_path(out)} in {payload['suite']['wall_s']}s")
    if failed or bad_parity:
        log(f"FAILED runs: {failed}; parity failed: {bad_parity}")
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
