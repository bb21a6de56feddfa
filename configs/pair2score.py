"""Pair2Score: a Siamese LLaMA + LoRA ranks essay pairs on one ELLIPSE trait (Stage 1,
relative), then the backbone is adapted to the trait's absolute score (Stage 2).

    # SmolLM2-135M-Instruct on the synthetic ELLIPSE-layout demo corpus (no download)
    python -m launch.train --config=configs/pair2score.py:trait=grammar,variant=fusion \
        --workdir=runs/p2s_demo
    # the real corpus (Kaggle train.csv or the fold_k.csv folder) with the original's files
    python -m launch.train --config=configs/pair2score.py:trait=grammar,variant=warm_start,size=small,run=1 \
        --workdir=runs/p2s_grammar_ws_1 --config.data.input=PATH/ell \
        --config.data.fold_map=PATH/fold_map.json [--config.pairs_file=PATH/run1_grammar.jsonl]
    # tests and smoke runs: a tiny random LLaMA, ~120 demo essays, both stages in a minute
    python -m launch.train --config=configs/pair2score.py:tiny --workdir=runs/p2s_tiny

Config arg options: trait, variant (baseline | warm_start | warm_start_frozen | stack |
fusion), size (large | small | mini), run (1-5), pair_mode (cached | in_batch), tiny. The
option meanings are in `aes_jax/tasks/pair2score_options.py`. The original's defaults:
LoRA r 16, alpha 32, dropout 0.05 on q/k/v/o; Stage 1 AdamW lr 2e-4, weight decay 0.01;
Stage 2 lr 1e-4; L1 loss; early stopping on val pair accuracy / val QWK. The epochs and
batch sizes below are ours (the original's are set per script).
"""

import ml_collections

from aes_jax.models.lora import ATTENTION_TARGETS
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, trait="grammar", variant="warm_start", size="small", run=1,
                         pair_mode="cached", tiny=False)
    tiny = a.tiny

    # Shared by both stages; each stage block below overrides length, batch and optimizer.
    c = common.engine(seed=0, optimizer=dict(name="adamw", schedule="linear", warmup_steps=10,
                                             min_lr_ratio=0.0, clip_norm=1.0),
                      best_metric="", async_checkpointing=True)
    c.task = "pair2score"
    common.add_causal_lm(c, tiny=tiny, lora_rank=16, lora_alpha=32.0,
                         lora_targets=ATTENTION_TARGETS)

    c.trait = a.trait
    c.run = a.run
    c.variant = a.variant
    c.size = "large" if tiny else a.size
    c.pair_mode = a.pair_mode
    c.pairs_file = ""  # an existing run{R}_{trait}.jsonl (+ _meta.json); "" = build one
    c.min_score_gap = 1.0  # pairs: the coverage pass's smallest score gap
    c.target_usage = 5  # pairs per essay the fill pass aims at
    c.soft_cap = 6  # pairs per essay never exceeded by the fill pass
    c.loss = "l1"  # Stage 2: l1 | mse
    c.qwk_binning = "round"  # round | floor (the original floors onto the 0.5 grid)
    # torch (the original's nn.Linear init) | train_mean: the head starts at the mean score,
    # so a short Stage 2 is not spent moving its output from ~0 into 1-5
    c.head_bias = "torch"

    c.data = ml_collections.ConfigDict()
    c.data.input = ""  # Kaggle train.csv or a fold_k.csv folder; "" = the SYNTHETIC demo
    c.data.fold_map = ""  # fold_map.json {text_id: A-E}; "" = written into WORKDIR/pairs
    c.data.fold_map_seed = 0
    c.data.demo_essays = 120 if tiny else 300
    c.data.seq_len = 256 if tiny else 512  # tiny: byte tokens
    c.data.eval_split = "val"

    def stage(lr: float, epochs: float, patience: int, steps: int) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(dict(
            epochs=epochs, evals_per_epoch=2, total_steps=steps, global_batch_size=8,
            eval_batch_size=16, log_every=5 if tiny else 10, keep_checkpoints=1,
            early_stop_patience=patience, grad_accum_steps=1,
            optimizer=dict(lr=lr, weight_decay=0.01, warmup_steps=2 if tiny else 10)))

    c.relative = stage(lr=2e-3 if tiny else 2e-4, epochs=2.0, patience=4, steps=12 if tiny else 0)
    c.absolute = stage(lr=2e-3 if tiny else 1e-4, epochs=6.0, patience=4, steps=12 if tiny else 0)
    return c
