"""RLearner DPO: a LoRA policy trained on preference pairs against the frozen reference.

    # SmolLM2-135M-Instruct on demo pairs from the packaged (project-written) bank's ratings
    python -m launch.train --config=configs/rlearner_dpo.py --workdir=runs/dpo_demo
    # pairs from launch.build_preferences, after SFT (the SFT adapter is merged into the base)
    python -m launch.train --config=configs/rlearner_dpo.py:loss_type=ipo --workdir=runs/dpo \
        --config.data.pairs_file=prefs/pairs.jsonl --config.dpo.sft_adapter=SFT_EXPORT/adapter
    # tests and smoke runs: tiny random LLaMA, a few dozen demo pairs, about a minute on CPU
    python -m launch.train --config=configs/rlearner_dpo.py:tiny --workdir=runs/dpo_tiny

Config arg options: loss_type (sigmoid | robust | ipo | hinge), label_smoothing (> 0 with
sigmoid = cDPO), beta, precompute (reference log-probs once, before training), tiny. TRL's
defaults: beta 0.1, lr 5e-7 for full fine-tuning; LoRA runs use a larger lr (5e-6 here).
The options are validated by `aes_jax.tasks.dpo.DpoOptions`.
"""

import ml_collections

from aes_jax.models.lora import ALL_LINEAR_TARGETS
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, loss_type="sigmoid", label_smoothing=0.0, beta=0.1,
                         precompute=False, tiny=False)
    tiny = a.tiny

    c = common.engine(
        global_batch_size=4 if tiny else 8,
        eval_batch_size=8,
        total_steps=10 if tiny else 200,
        log_every=1 if tiny else 10,
        eval_every=5 if tiny else 50,
        checkpoint_every=5 if tiny else 50,
        keep_checkpoints=2,
        optimizer=dict(lr=1e-3 if tiny else 5e-6, warmup_steps=1 if tiny else 20,
                       schedule="linear", min_lr_ratio=0.0))
    c.task = "dpo"
    common.add_causal_lm(c, tiny=tiny, lora_rank=8 if tiny else 16,
                         lora_alpha=16.0 if tiny else 32.0, lora_targets=ALL_LINEAR_TARGETS)

    c.data = ml_collections.ConfigDict()
    c.data.pairs_file = ""  # preference JSONL; "" = demo pairs from the bank's ratings
    c.data.eval_file = ""  # "" = hold out eval_fraction of the pairs
    c.data.eval_fraction = 0.1 if not tiny else 0.25
    c.data.demo_questions = 32 if tiny else 0  # 0 = every training question of the bank
    c.data.demo_test_fraction = 0.2
    c.data.split_seed = 0
    c.data.min_score_gap = 0.3
    # tiny: byte tokens, so the prompt keeps its last 192 bytes and completions 64
    c.data.max_prompt_tokens = 192 if tiny else 384
    c.data.max_completion_tokens = 64 if tiny else 128
    c.data.chat_template = True

    c.dpo = ml_collections.ConfigDict()
    c.dpo.beta = a.beta
    c.dpo.loss_type = a.loss_type
    c.dpo.label_smoothing = a.label_smoothing
    c.dpo.sft_adapter = ""  # a PEFT adapter dir (SFT) merged into the base first
    c.dpo.precompute_reference = a.precompute
    return c
