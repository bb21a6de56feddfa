"""Causal-LM fine-tuning with LoRA on a text file (one document per line).

    python -m launch.train --config=configs/lm_lora.py --workdir=runs/lm        # SmolLM2-135M
    python -m launch.train --config=configs/lm_lora.py:tiny --workdir=runs/tiny # tiny random LLaMA

Any field can be overridden, e.g. --config.total_steps=200 --config.mesh.fsdp=4
--config.data.train_file=my.txt --config.model=/path/to/hf_llama_dir.
"""

import ml_collections

from aes_jax.models.lora import ATTENTION_TARGETS
from aes_jax.train.sharding import DEFAULT_RULES


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "tiny"):
        raise ValueError(f"configs/lm_lora.py:{variant}: expected 'default' or 'tiny'")
    c = ml_collections.ConfigDict()
    c.task = "lm_lora"
    c.seed = 0
    # "" = the packaged SmolLM2-135M-Instruct; "tiny" = a tiny random LLaMA (byte tokenizer);
    # otherwise a local HF LLaMA directory or .gguf file.
    c.model = "tiny" if variant == "tiny" else ""
    c.tiny_model = ml_collections.ConfigDict(dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16))

    c.data = ml_collections.ConfigDict()
    c.data.train_file = ""  # "" = synthetic demo corpus written into WORKDIR/data/
    c.data.eval_file = ""  # "" = hold out the last eval_fraction of the train lines
    c.data.eval_fraction = 0.1
    c.data.seq_len = 64 if variant == "tiny" else 256

    c.global_batch_size = 8
    c.grad_accum_steps = 1
    c.total_steps = 20 if variant == "tiny" else 200
    c.log_every = 1 if variant == "tiny" else 10
    c.eval_every = 10 if variant == "tiny" else 100
    c.eval_batch_size = 8
    c.checkpoint_every = 5 if variant == "tiny" else 100
    c.keep_checkpoints = 3
    c.async_checkpointing = True

    c.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", lr=1e-3 if variant == "tiny" else 2e-4, b1=0.9, b2=0.999, eps=1e-8,
        weight_decay=0.0, schedule="cosine", warmup_steps=2 if variant == "tiny" else 10,
        min_lr_ratio=0.1, clip_norm=1.0))

    c.use_lora = True  # False = full fine-tuning of every parameter
    c.lora = ml_collections.ConfigDict(dict(
        rank=8, alpha=16.0, dropout=0.05, targets=ATTENTION_TARGETS, use_rslora=False))

    c.dtype = "float32"  # compute dtype; "bfloat16" keeps float32 master weights
    c.param_dtype = "float32"
    c.scan_layers = True
    c.remat = False
    c.ema_decay = 0.0  # > 0 keeps an EMA of the trainable params

    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
    c.sharding_rules = [list(rule) for rule in DEFAULT_RULES]
    # Peak FLOP/s of one device for MFU; 0 = look it up from the device kind.
    c.peak_flops_per_device = 0.0
    # Sleep after every step: lets tests interrupt a run at a known point; 0 in real runs.
    c.sleep_per_step_s = 0.0
    return c
