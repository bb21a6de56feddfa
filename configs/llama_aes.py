"""LLaMA-AES: LoRA fine-tuning of an instruction LLaMA to answer trait scores (+ feedback).

    # SmolLM2-135M-Instruct on the synthetic demo corpus (no download)
    python -m launch.train --config=configs/llama_aes.py --workdir=runs/llama_aes
    # tiny random LLaMA, byte tokenizer: tests and smoke runs
    python -m launch.train --config=configs/llama_aes.py:tiny --workdir=runs/llama_aes_tiny
    # real data: build once, then train on it
    python -m launch.build_dataset --format=mtl --input=PATH/ell --output_dir=data/ell_mtl
    python -m launch.train --config=configs/llama_aes.py --workdir=runs/ell \
        --config.data.dir=data/ell_mtl --config.ntl_weight=1 --config.emo_weight=-1

Loss options, as in the PyTorch CLI: `ntl_weight` (0 = no number-token loss), `ntl_type`
mse|was, `emo_weight` (0 = no EMO), a negative weight on either = dynamic weighting, `mtl`
(score + feedback vs score only), `train_ratio`. `weighting=uncertainty` learns the
balance instead. Validated once by `aes_jax.tasks.llama_aes_options.LlamaAesOptions`, whose
docstring says which weights each weighting accepts.
"""

import ml_collections

from aes_jax.models.lora import ALL_LINEAR_TARGETS
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, variant="default")
    if a.variant not in ("default", "tiny"):
        raise ValueError(f"configs/llama_aes.py:{a.variant}: expected 'default' or 'tiny'")
    tiny = a.variant == "tiny"

    c = common.engine(
        global_batch_size=4 if tiny else 16,
        eval_batch_size=4 if tiny else 16,
        total_steps=12 if tiny else 300,
        log_every=1 if tiny else 10,
        eval_every=6 if tiny else 100,
        checkpoint_every=6 if tiny else 100,
        keep_checkpoints=2,
        optimizer=dict(lr=2e-3 if tiny else 3e-4, warmup_steps=2 if tiny else 20))
    c.task = "llama_aes"
    common.add_causal_lm(c, tiny=tiny, lora_rank=16, lora_alpha=32.0,
                         lora_targets=ALL_LINEAR_TARGETS)

    c.data = ml_collections.ConfigDict()
    # A dataset dir written by `launch.build_dataset --format=mtl` ({train,dev,test}.jsonl +
    # manifest.json); "" = the synthetic demo corpus built into WORKDIR/data/mtl_demo.
    c.data.dir = ""
    # Or Hugging Face `datasets` (local, offline): a save_to_disk DatasetDict dir (`hf`), or
    # one file per split (`hf_files=train=a.parquet,dev=b.csv,test=c.jsonl`); columns as
    # in aes_jax/data/hf_inputs.py, traits/codecs from a manifest.json beside them or
    # inferred from the traits column (ELLIPSE / ASAP++).
    c.data.hf = ""
    c.data.hf_files = ""
    # Or a TFDS dataset of aes_jax.datasets (`ellipse/test_fold_0`, `asap_traits/prompt_3`)
    # built by `launch.build_dataset --format=tfds` into tfds_dir ("" = TFDS's default);
    # the examples are those --format=mtl writes from the same files, with tfds_feedback
    # (none | rubric: SYNTHETIC template feedback) and tfds_prompt_texts (JSON {prompt: text}).
    c.data.tfds_name = ""
    c.data.tfds_dir = ""
    c.data.tfds_feedback = "none"
    c.data.tfds_prompt_texts = ""
    c.data.demo_essays = 240
    c.data.eval_split = "dev"
    c.data.limit_train = 0  # only the first N train examples (quick runs); 0 = all
    c.data.limit_eval = 0  # only the first N eval_split examples; 0 = all
    # Longest prompt + answer in tokens; longer essays are shortened (counted, logged).
    c.data.seq_len = 2048 if tiny else 768  # tiny: byte tokens

    c.mtl = True  # answer = scores + feedback; False = the score line only
    c.train_ratio = 1.0  # a seeded fraction of the training examples
    c.ntl_weight = 1.0  # number-token loss on the score digits; 0 = off; negative = dynamic
    c.ntl_type = "mse"  # "mse" (expected value) or "was" (Wasserstein-1)
    c.emo_weight = -1.0  # EMO on feedback tokens; 0 = off; negative = dynamic weighting
    c.emo_type = "topk"  # "topk" or "full" (whole vocabulary, the paper's form)
    c.emo_topk = 64
    # False: 1 - <e_gold, q>, the public EMO code (its gradient is the exact EMD's). True:
    # 1 - cos(e_gold, q), which ignores p(gold) entirely (see losses/emo.py).
    c.emo_normalize = False
    # auto (dynamic iff ntl_weight or emo_weight < 0, else static) | static | dynamic | uncertainty
    c.weighting = "auto"

    # Decoding for launch.score / launch.self_consistency (the answer is short).
    c.sampling = ml_collections.ConfigDict(dict(max_new_tokens=128, batch_size=16))
    return c
