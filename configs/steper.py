"""StepER: a student learns a teacher's stepwise retrieval reasoning (init, expansion and
aggregation steps in one batch stream), the step types' losses balanced by learned
uncertainties (difficulty-aware) or fixed weights.

    # SmolLM2-135M-Instruct + LoRA on the demo records (built first into WORKDIR/data:
    # the project-written multi-hop corpus, oracle teacher)
    python -m launch.train --config=configs/steper.py --workdir=runs/steper_demo
    # fixed weights (1, 1, 1) instead of the learned ones
    python -m launch.train --config=configs/steper.py:weighting=fixed --workdir=runs/steper_fixed
    # records from launch.build_stepwise (e.g. HotpotQA with a LLaMA teacher)
    python -m launch.train --config=configs/steper.py --workdir=runs/steper_hotpot \
        --config.data.records_dir=data/steper_hotpot --config.data.eval_split=hotpot_dev
    # the paper's optimiser (lr 5e-6, cosine with warmup; 2 epochs of the demo records at
    # batch 16 ~ 600 steps: set total_steps for other data), full fine-tuning
    python -m launch.train --config=configs/steper.py:paper --workdir=runs/steper_paper
    # tests: tiny random LLaMA, byte tokens, 40 demo questions per split
    python -m launch.train --config=configs/steper.py:tiny --workdir=runs/steper_tiny

The fields are `aes_jax.tasks.steper.SteperOptions`.
"""

import ml_collections

from aes_jax.models.lora import ALL_LINEAR_TARGETS
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, tiny=False, paper=False, weighting="uncertainty")
    tiny, paper = a.tiny, a.paper
    c = common.engine(
        global_batch_size=8 if tiny else 16, eval_batch_size=16,
        total_steps=8 if tiny else (600 if paper else 400),
        log_every=1 if tiny else 10, eval_every=4 if tiny else 100,
        checkpoint_every=4 if tiny else 100, keep_checkpoints=2,
        optimizer=dict(lr=2e-3 if tiny else (5e-6 if paper else 2e-4),
                       warmup_steps=1 if tiny else (30 if paper else 20), schedule="cosine",
                       min_lr_ratio=0.0 if paper else 0.1))
    c.task = "steper"
    common.add_causal_lm(c, tiny=tiny, lora_rank=8 if tiny else 16,
                         lora_alpha=16.0 if tiny else 32.0, lora_targets=ALL_LINEAR_TARGETS)
    c.use_lora = not paper

    c.data = ml_collections.ConfigDict()
    c.data.records_dir = ""  # "" = demo records built into WORKDIR/data
    c.data.train_split = "train"
    c.data.eval_split = "dev"
    c.data.demo_limit = 40 if tiny else 0
    c.data.k = 4
    # tiny: byte tokens, so a prompt keeps its last 384 bytes (the question and the end)
    c.data.max_prompt_tokens = 384 if tiny else 640
    c.data.max_completion_tokens = 48
    c.data.chat_template = True

    c.steper = ml_collections.ConfigDict()
    c.steper.weighting = a.weighting  # uncertainty | fixed
    c.steper.fixed_weights = (1.0, 1.0, 1.0)  # init, exp, agg (weighting=fixed)
    return c
