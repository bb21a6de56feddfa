"""TRM-AES: a Tiny Recursive Model regression scorer on ASAP / ASAP++ essays.

    # demo: builds the synthetic demo corpus into WORKDIR/data and trains for a few minutes on CPU
    python -m launch.train --config=configs/trm_aes.py:demo --workdir=runs/trm_demo
    # real data: python -m launch.build_dataset --input=training_set_rel3.tsv --output_dir=data/asap
    python -m launch.train --config=configs/trm_aes.py:paper --workdir=runs/trm \\
        --config.data.dataset_dir=data/asap

Variants: demo (seconds per step on CPU), cpu (one short-essay ASAP prompt in under 30
minutes on 2 cores), paper (hidden 768, 1024 tokens, the PyTorch original's lr 1e-5 and
dropout 0.1; about 37M params with bert-base-uncased embeddings).
"""

import ml_collections

from configs import common

_MODELS = {
    "demo": dict(hidden_size=64, num_heads=4, intermediate_size=128, h_cycles=2, l_cycles=2,
                 n_sup=2),
    "cpu": dict(hidden_size=128, num_heads=4, intermediate_size=256, h_cycles=2, l_cycles=3,
                n_sup=3),
    "paper": dict(hidden_size=768, num_heads=12, intermediate_size=2048, h_cycles=3,
                  l_cycles=6, n_sup=16),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, variant="demo")
    variant = a.variant
    if variant not in _MODELS:
        raise ValueError(f"configs/trm_aes.py:{variant}: expected one of {sorted(_MODELS)}")
    paper = variant == "paper"

    c = common.engine(
        global_batch_size={"demo": 16, "cpu": 32, "paper": 32}[variant],
        eval_batch_size=32, keep_checkpoints=3,
        # Updates: with per_step supervision one update is one supervision step, so the
        # cpu variant's 450 cost what 150 per_batch updates of n_sup=3 steps cost.
        total_steps={"demo": 300, "cpu": 450, "paper": 20000}[variant],
        log_every={"demo": 20, "cpu": 30, "paper": 100}[variant],
        eval_every={"demo": 100, "cpu": 150, "paper": 1000}[variant],
        checkpoint_every={"demo": 100, "cpu": 150, "paper": 1000}[variant],
        optimizer=dict(lr=1e-5 if paper else 1e-3, b2=0.95, weight_decay=0.01,
                       warmup_steps={"demo": 20, "cpu": 60, "paper": 500}[variant]),
        ema_decay=0.0)  # e.g. 0.999: evaluate with an EMA of the params
    c.task = "trm_aes"

    c.data = ml_collections.ConfigDict()
    # Built by launch.build_dataset; "" = build the synthetic demo corpus into WORKDIR/data.
    c.data.dataset_dir = ""
    # Or a TFDS dataset of aes_jax.datasets ("asap_aes", "asap_traits/prompt_3", ...) built
    # by launch.build_dataset --format=tfds into tfds_dir ("" = TFDS's default dir).
    c.data.tfds_name = ""
    c.data.tfds_dir = ""
    c.data.tfds_prompt_texts = ""  # JSON {prompt: text}, as build_dataset --prompt_texts
    c.data.eval_split = "dev"
    # "" = the packaged MiniLM (BERT uncased WordPiece, 384-d embeddings); or a BERT HF dir.
    c.data.embeddings_dir = ""
    c.data.max_tokens = {"demo": 128, "cpu": 256, "paper": 1024}[variant]

    c.model = ml_collections.ConfigDict(dict(
        **_MODELS[variant], num_layers=2, rms_norm_eps=1e-5, rope_theta=10000.0,
        dropout=0.1 if paper else 0.0))
    c.train_traits = True  # also regress the dataset's ASAP++ traits (outputs 1..T)
    # per_step (the paper's): every supervision step is one update, halted rows refilled;
    # per_batch: one update per batch averaging its n_sup steps (tasks/trm_supervision.py).
    c.supervision = "per_step"
    c.use_halting = True  # train the Q-head; stop training rows where it says so
    c.halt_exploration_prob = 0.1  # the reference's: a random minimum of 2..n_sup steps
    c.halt_loss_weight = 0.5  # loss = mse + 0.5 * halting BCE, as the reference
    c.eval_halting = False  # the reference runs all n_sup steps at evaluation
    c.dtype = "float32"
    return c
