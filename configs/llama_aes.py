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
mse|was, `emo_weight` (0 = no EMO; negative = dynamic weighting), `mtl` (score + feedback
vs score only), `train_ratio`. `weighting=uncertainty` learns the balance instead.
"""

import ml_collections

from aes_jax.models.lora import ALL_LINEAR_TARGETS
from aes_jax.train.sharding import DEFAULT_RULES


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "tiny"):
        raise ValueError(f"configs/llama_aes.py:{variant}: expected 'default' or 'tiny'")
    tiny = variant == "tiny"
    c = ml_collections.ConfigDict()
    c.task = "llama_aes"
    c.seed = 0
    # "" = the packaged SmolLM2-135M-Instruct; "tiny" = a tiny random LLaMA (byte tokenizer);
    # otherwise a local HF LLaMA directory or .gguf file.
    c.model = "tiny" if tiny else ""
    c.tiny_model = ml_collections.ConfigDict(dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16))

    c.data = ml_collections.ConfigDict()
    # A dataset dir written by `launch.build_dataset --format=mtl` ({train,dev,test}.jsonl +
    # manifest.json); "" = the synthetic demo corpus built into WORKDIR/data/mtl_demo.
    c.data.dir = ""
    c.data.demo_essays = 240
    c.data.eval_split = "dev"
    c.data.limit_train = 0  # only the first N train examples (quick runs); 0 = all
    c.data.limit_eval = 0  # only the first N eval_split examples; 0 = all
    # Longest prompt + answer in tokens; longer essays are shortened (counted, logged).
    c.data.seq_len = 2048 if tiny else 768  # tiny: byte tokens

    c.mtl = True  # answer = scores + feedback; False = the score line only
    c.train_ratio = 1.0  # a seeded fraction of the training examples
    c.ntl_weight = 1.0  # number-token loss on the score digits; 0 = off
    c.ntl_type = "mse"  # "mse" (expected value) or "was" (Wasserstein-1)
    c.emo_weight = -1.0  # EMO on feedback tokens; 0 = off; negative = dynamic weighting
    c.emo_type = "topk"  # "topk" or "full" (whole vocabulary, the paper's form)
    c.emo_topk = 64
    # True: 1 - cos(e_gold, q) with q normalised (the form); False: 1 - <e_gold, q>,
    # the public EMO code, whose gradient vanishes as p(gold) -> 1 (see losses/emo.py).
    c.emo_normalize = True
    c.weighting = "auto"  # auto (dynamic iff emo_weight < 0, else static) | static | dynamic | uncertainty

    c.global_batch_size = 4 if tiny else 16
    c.grad_accum_steps = 1
    c.total_steps = 12 if tiny else 300
    c.log_every = 1 if tiny else 10
    c.eval_every = 6 if tiny else 100
    c.eval_batch_size = 4 if tiny else 16
    c.checkpoint_every = 6 if tiny else 100
    c.keep_checkpoints = 2
    c.async_checkpointing = True

    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=2e-3 if tiny else 3e-4, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
        schedule="cosine", warmup_steps=2 if tiny else 20, min_lr_ratio=0.1, clip_norm=1.0))

    c.use_lora = True
    c.lora = ml_collections.ConfigDict(dict(
        rank=16, alpha=32.0, dropout=0.05, targets=ALL_LINEAR_TARGETS, use_rslora=False))

    # Decoding for launch.score / launch.self_consistency (the answer is short).
    c.sampling = ml_collections.ConfigDict(dict(max_new_tokens=128, batch_size=16))

    c.dtype = "float32"  # compute dtype; "bfloat16" keeps float32 master weights
    c.param_dtype = "float32"
    c.scan_layers = True
    c.remat = False
    c.ema_decay = 0.0

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.sharding_rules = [list(rule) for rule in DEFAULT_RULES]
    c.peak_flops_per_device = 0.0
    c.sleep_per_step_s = 0.0
    return c
