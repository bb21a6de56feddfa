"""RLearner verifier: LLaMA + LoRA + a regression head reads question, options and an
explanation (the original's "way 2" input) and predicts the average student rating (0-5).

    # SmolLM2-135M-Instruct on every rated explanation of the demo bank's training questions
    python -m launch.train --config=configs/rlearner_verifier.py --workdir=runs/verifier_demo
    # the original's way-2 JSON (output = the rating, one decimal)
    python -m launch.train --config=configs/rlearner_verifier.py --workdir=runs/verifier \
        --config.data.train_file=PATH/verifier_train.json
    python -m launch.train --config=configs/rlearner_verifier.py:tiny --workdir=runs/v_tiny

Keep `model` (and its dtype) equal to the generator's: both adapters are swapped on one
base at inference. `verifier.loss`: mse | l1.
"""

import ml_collections

from aes_jax.models.lora import ALL_LINEAR_TARGETS
from configs import common
from configs.rlearner_sft import add_explanation_data


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, tiny=False)
    tiny = a.tiny
    c = common.engine(
        global_batch_size=8, eval_batch_size=16,
        total_steps=8 if tiny else 300, log_every=1 if tiny else 10,
        eval_every=4 if tiny else 50, checkpoint_every=4 if tiny else 50, keep_checkpoints=2,
        optimizer=dict(lr=2e-3 if tiny else 2e-4, warmup_steps=1 if tiny else 20))
    c.task = "explain_verifier"
    common.add_causal_lm(c, tiny=tiny, lora_rank=8 if tiny else 16,
                         lora_alpha=16.0 if tiny else 32.0, lora_targets=ALL_LINEAR_TARGETS)
    add_explanation_data(c, tiny)
    c.data.max_prompt_tokens = 256 if tiny else 512  # the whole input: question + explanation
    c.verifier = ml_collections.ConfigDict()
    c.verifier.loss = "mse"
    return c
