"""Self-consistency for generated trait scores: sample a bank, then analyse it.

    python -m launch.self_consistency run --run=WORKDIR [--split=test] [--num_samples=16]
        [--temperature=1.0] [--top_k=0] [--top_p=1.0] [--max_new_tokens=64]
        [--batch_size=64] [--seed=0] [--limit=0] [--bank=PATH] [--step=best|last|N]
    python -m launch.self_consistency analyze --bank=PATH [--ms=1,4,16]
        [--methods=majority,average] [--out_dir=DIR] [--fallbacks=content=3,language=4]

`run` samples --num_samples answers per essay and writes a sample bank (format in
aes_jax/eval/self_consistency.py); `analyze` votes over the first m samples for each m and
writes analysis.json, analysis.txt and qwk_vs_m.png (default <bank stem>_analysis/ next to
the bank). The two are separate so the costly sampling runs once and any m or voting rule
is analysed afterwards without a model. An (essay, trait) whose samples all failed to
parse gets the trait's most frequent training digit, which `run` records in the bank (the
fallback `launch.score` uses too); --fallbacks overrides it per trait.
"""

from pathlib import Path

from absl import app, flags

from launch import cli

SUBCOMMANDS = ("analyze", "run")

# Shared: the bank `run` writes and `analyze` reads.
BANK = flags.DEFINE_string("bank", None, "Sample bank JSON. analyze: the input (required). "
                           "run: the output; default RUN/eval/sample_bank_<split>.json.")

# analyze
MS = flags.DEFINE_list("ms", None, "analyze: numbers of samples m to vote over, e.g. 1,4,16; "
                       "default 1, 2, 4, ... up to the samples per essay, plus that count.")
METHODS = flags.DEFINE_list("methods", ["majority", "average"], "analyze: vote methods.")
OUT_DIR = flags.DEFINE_string("out_dir", None, "analyze: output directory; default "
                              "<bank stem>_analysis/ next to the bank.")
FALLBACKS = flags.DEFINE_list("fallbacks", None, "analyze: trait=digit pairs for all-failed "
                              "votes, over the bank's recorded training-mode digits (needed "
                              "for every trait of a bank that records none).")

# run
RUN_DIR = flags.DEFINE_string("run", None, "run: training run directory (config.json, "
                              "checkpoints/).")
SPLIT = flags.DEFINE_string("split", "test", "run: dataset split to sample.")
NUM_SAMPLES = flags.DEFINE_integer("num_samples", 16, "run: samples per essay.", lower_bound=1)
TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "run: sampling temperature.")
TOP_K = flags.DEFINE_integer("top_k", 0, "run: top-k filter; 0 = off.", lower_bound=0)
TOP_P = flags.DEFINE_float("top_p", 1.0, "run: nucleus (top-p) filter; 1.0 = off.")
MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "run: most tokens per sample "
                                      "(sampling stops at the end of the score line).",
                                      lower_bound=1)
BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "run: sequences per generation batch "
                                  "(essays per batch = batch_size // num_samples, at least 1).",
                                  lower_bound=1)
SEED = flags.DEFINE_integer("seed", 0, "run: sampling seed.")
STEP = cli.define_step_flag()
LIMIT = flags.DEFINE_integer("limit", 0, "run: sample only the first N essays; 0 = all.",
                             lower_bound=0)


def default_bank_path(run_dir: str | Path, split: str) -> Path:
    """Where `run` writes its bank unless --bank says otherwise."""
    return Path(run_dir) / "eval" / f"sample_bank_{split}.json"


def default_out_dir(bank: str | Path) -> Path:
    """<bank stem>_analysis/ beside the bank, so analyses of several banks never collide."""
    bank = Path(bank)
    return bank.with_name(f"{bank.stem}_analysis")


def parse_ms(values: list[str] | None) -> list[int] | None:
    """--ms strings -> positive ints (None stays None: analyze picks its default)."""
    if values is None:
        return None
    try:
        ms = [int(v) for v in values]
    except ValueError as err:
        raise app.UsageError(f"--ms must be comma-separated integers, got {values}") from err
    if not ms or min(ms) < 1:
        raise app.UsageError(f"--ms must be positive integers, got {values}")
    return ms


def parse_fallbacks(values: list[str] | None) -> dict[str, int] | None:
    """--fallbacks strings "trait=digit" -> {trait: digit} (None stays None)."""
    if values is None:
        return None
    out = {}
    for value in values:
        trait, sep, digit = value.rpartition("=")
        if not sep or not trait or not digit.strip().lstrip("-").isdigit():
            raise app.UsageError(f"--fallbacks takes trait=digit pairs, got {value!r}")
        out[trait] = int(digit)
    return out


def analyze_bank() -> None:
    from aes_jax.eval import self_consistency as sc

    if not BANK.value:
        raise app.UsageError("analyze: give --bank=PATH (a sample bank JSON)")
    try:
        bank = sc.load_bank(BANK.value)
        result = sc.analyze(bank, ms=parse_ms(MS.value), methods=METHODS.value,
                            fallbacks=parse_fallbacks(FALLBACKS.value))
    except (OSError, ValueError) as err:  # a bad bank or --ms: the message says it all
        raise app.UsageError(f"analyze: {err}") from err
    paths = sc.write_analysis(result, OUT_DIR.value or default_out_dir(BANK.value))
    print(sc.format_table(result), end="")
    print()
    for path in paths:
        print(f"wrote {path}")


def run_sampling() -> Path:
    """Samples --num_samples answers per essay of --split with the checkpoint --step names
    (default the run's best, else its last)."""
    import jax

    from aes_jax.eval import llm_scoring
    from aes_jax.eval import self_consistency as sc
    from aes_jax.eval.generate import SamplingConfig
    from aes_jax.runs import load_run, restore_params
    from aes_jax.tasks.capabilities import GenerativeScorer

    if not RUN_DIR.value:
        raise app.UsageError("run: give --run=WORKDIR (a LLaMA-AES training run)")
    if not (Path(RUN_DIR.value) / "config.json").is_file():
        raise app.UsageError(f"run: {RUN_DIR.value} has no config.json; --run must be a "
                             "training run directory")
    config, task = load_run(RUN_DIR.value)
    if not isinstance(task, GenerativeScorer):
        raise app.UsageError(f"run: {RUN_DIR.value} is a {config.task!r} run; self-consistency "
                             "needs a generative scorer (llama_aes)")
    step, trainable, frozen = restore_params(RUN_DIR.value, config, task,
                                             cli.chosen_step(RUN_DIR.value, STEP.value))
    inputs = task.split_essays(SPLIT.value, limit=LIMIT.value)
    fmt = task.score_format()
    sampling = SamplingConfig(max_new_tokens=MAX_NEW_TOKENS.value,
                              temperature=TEMPERATURE.value, top_k=TOP_K.value,
                              top_p=TOP_P.value, stop_token_ids=fmt.stop_token_ids(),
                              pad_token_id=task.tokenizer.pad_id)
    cfg, params = task.inference_model(trainable, frozen)
    bank = llm_scoring.sample_bank(
        cfg, params, task.tokenizer, fmt, inputs, NUM_SAMPLES.value, sampling,
        essays_per_batch=max(1, BATCH_SIZE.value // NUM_SAMPLES.value), seed=SEED.value,
        meta={"run": str(RUN_DIR.value), "step": step, "split": SPLIT.value,
              "device": jax.devices()[0].device_kind})
    return sc.save_bank(bank, BANK.value or default_bank_path(RUN_DIR.value, SPLIT.value))


def main(argv):
    if len(argv) != 2 or argv[1] not in SUBCOMMANDS:
        raise app.UsageError(f"give one subcommand, one of {list(SUBCOMMANDS)}; got "
                             f"{argv[1:]}")
    if argv[1] == "analyze":
        analyze_bank()
    else:
        path = run_sampling()
        print(f"wrote {path}")


if __name__ == "__main__":
    cli.run(main)
