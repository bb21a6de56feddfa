"""RLearner generator: LoRA SFT on explanation records (the original's JSON), loss on the
explanation tokens only.

    # SmolLM2-135M-Instruct on the packaged (project-written) demo bank's training questions
    python -m launch.train --config=configs/rlearner_sft.py --workdir=runs/sft_demo
    # the original's JSON (a list of {"instruction", "input", "output"})
    python -m launch.train --config=configs/rlearner_sft.py --workdir=runs/sft \
        --config.data.train_file=PATH/train.json [--config.data.eval_file=PATH/val.json]
    # tests and smoke runs: tiny random LLaMA, byte tokens
    python -m launch.train --config=configs/rlearner_sft.py:tiny --workdir=runs/sft_tiny

The data fields are `aes_jax.tasks.explain_data.ExplanationData` (filters: min_rating,
min_words; lengths; the demo split). The run writes what it trained on as the original's
JSON into WORKDIR/data/sft_{train,eval}.json with the filter counts.
"""

import ml_collections

from aes_jax.models.lora import ALL_LINEAR_TARGETS
from configs import common


def add_explanation_data(c: ml_collections.ConfigDict, tiny: bool) -> None:
    """The `ExplanationData` block both RLearner tasks (SFT, verifier) read."""
    c.data = ml_collections.ConfigDict()
    c.data.train_file = ""  # the original's JSON list; "" = the demo bank's training questions
    c.data.eval_file = ""  # "" = hold out eval_fraction of the records
    c.data.eval_fraction = 0.1 if not tiny else 0.25  # of the questions
    c.data.demo_questions = 16 if tiny else 0  # 0 = every training question of the bank
    c.data.demo_test_fraction = 0.2
    c.data.split_seed = 0
    c.data.min_rating = 3.0
    c.data.min_words = 10
    c.data.include_candidates = False
    # tiny: byte tokens, so the prompt keeps its last 192 bytes and completions 64
    c.data.max_prompt_tokens = 192 if tiny else 384
    c.data.max_completion_tokens = 64 if tiny else 160
    c.data.chat_template = True


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, tiny=False)
    tiny = a.tiny
    c = common.engine(
        global_batch_size=4 if tiny else 8, eval_batch_size=8,
        total_steps=8 if tiny else 300, log_every=1 if tiny else 10,
        eval_every=4 if tiny else 50, checkpoint_every=4 if tiny else 50, keep_checkpoints=2,
        optimizer=dict(lr=2e-3 if tiny else 2e-4, warmup_steps=1 if tiny else 20))
    c.task = "explain_sft"
    common.add_causal_lm(c, tiny=tiny, lora_rank=8 if tiny else 16,
                         lora_alpha=16.0 if tiny else 32.0, lora_targets=ALL_LINEAR_TARGETS)
    add_explanation_data(c, tiny)
    return c
