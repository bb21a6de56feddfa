"""Causal-LM fine-tuning with LoRA on a text file (one document per line).

    python -m launch.train --config=configs/lm_lora.py --workdir=runs/lm        # SmolLM2-135M
    python -m launch.train --config=configs/lm_lora.py:tiny --workdir=runs/tiny # tiny random LLaMA

Any field can be overridden, e.g. --config.total_steps=200 --config.mesh.fsdp=4
--config.data.train_file=my.txt --config.model=/path/to/hf_llama_dir.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, variant="default")
    if a.variant not in ("default", "tiny"):
        raise ValueError(f"configs/lm_lora.py:{a.variant}: expected 'default' or 'tiny'")
    tiny = a.variant == "tiny"

    c = common.engine(
        global_batch_size=8, eval_batch_size=8, keep_checkpoints=3,
        total_steps=20 if tiny else 200,
        log_every=1 if tiny else 10,
        eval_every=10 if tiny else 100,
        checkpoint_every=5 if tiny else 100,
        optimizer=dict(lr=1e-3 if tiny else 2e-4, warmup_steps=2 if tiny else 10))
    c.task = "lm_lora"
    common.add_causal_lm(c, tiny=tiny, lora_rank=8, lora_alpha=16.0)

    c.data = ml_collections.ConfigDict()
    c.data.train_file = ""  # "" = synthetic demo corpus written into WORKDIR/data/
    c.data.eval_file = ""  # "" = hold out the last eval_fraction of the train lines
    c.data.eval_fraction = 0.1
    c.data.seq_len = 64 if tiny else 256
    return c
