"""RLearner PPO: the explanation generator trained online; the verifier's rating (plus an
optional NLI term and length penalty) is the reward, a KL penalty keeps it near the SFT
model. Trained by `aes_jax.train.rl_loop` (launch.train picks it for this task).

    # after runs/sft_demo (configs/rlearner_sft.py) and runs/verifier_demo
    # (configs/rlearner_verifier.py), SmolLM2-135M-Instruct on the demo bank:
    python -m launch.train --config=configs/rlearner_ppo.py --workdir=runs/ppo_demo \
        [--config.ppo.sft_run=runs/sft_demo --config.reward.verifier_run=runs/verifier_demo]
    # GRPO: 4 completions per question, group-normalised rewards, no critic
    python -m launch.train --config=configs/rlearner_ppo.py:grpo --workdir=runs/grpo_demo
    # tests: tiny random LLaMA, byte tokens, an untrained verifier head (a test aid)
    python -m launch.train --config=configs/rlearner_ppo.py:tiny --workdir=runs/ppo_tiny

`total_steps` counts PPO iterations (the original: 125); each samples global_batch_size
completions (global_batch_size / rl.group_size questions) and makes rl.epochs x
rl.minibatches optimiser updates. `ppo.critic`: head (a value head on the policy) | lora
(a separate LoRA critic on the same base) | none (GRPO). The loop's settings are
`aes_jax.train.rl_config.RLConfig`, the task's `aes_jax.tasks.ppo.PpoOptions`.
"""

import ml_collections

from aes_jax.models.lora import ALL_LINEAR_TARGETS
from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    a = common.parse_arg(arg, tiny=False, grpo=False, critic="head")
    tiny = a.tiny
    group = 4 if a.grpo else 1
    c = common.engine(
        global_batch_size=(8 if a.grpo else 4) if tiny else (16 if a.grpo else 8),
        eval_batch_size=4 if tiny else 8,
        total_steps=3 if tiny else 125,
        log_every=1 if tiny else 5,
        eval_every=3 if tiny else 25,
        checkpoint_every=1 if tiny else 25,
        keep_checkpoints=2,
        optimizer=dict(lr=1e-3 if tiny else 2e-5, warmup_steps=0 if tiny else 10,
                       schedule="linear", min_lr_ratio=0.0, clip_norm=1.0))
    c.task = "ppo"
    common.add_causal_lm(c, tiny=tiny, lora_rank=8 if tiny else 16,
                         lora_alpha=16.0 if tiny else 32.0, lora_targets=ALL_LINEAR_TARGETS)
    c.lora.dropout = 0.0  # log-probs of the rollout and of the update must agree

    c.data = ml_collections.ConfigDict()
    c.data.questions_file = ""  # bank JSONL or the original's JSON; "" = the demo bank
    c.data.eval_file = ""  # "" = the demo bank's held-out questions
    c.data.demo_test_fraction = 0.2
    c.data.split_seed = 0
    c.data.demo_questions = 16 if tiny else 0
    c.data.eval_questions = 4 if tiny else 16
    c.data.max_prompt_tokens = 64 if tiny else 384  # tiny: byte tokens, the prompt's end
    c.data.chat_template = True

    c.sampling = ml_collections.ConfigDict()
    c.sampling.max_new_tokens = 8 if tiny else 96
    c.sampling.temperature = 0.7
    c.sampling.top_k = 0
    c.sampling.top_p = 1.0
    c.sampling.repetition_penalty = 1.0

    c.ppo = ml_collections.ConfigDict()
    c.ppo.sft_run = "" if tiny else "runs/sft_demo"  # the policy starts as this SFT model
    c.ppo.sft_adapter = ""  # or a PEFT adapter dir
    c.ppo.critic = "none" if a.grpo else a.critic

    c.reward = ml_collections.ConfigDict()
    c.reward.verifier_run = "" if tiny else "runs/verifier_demo"
    c.reward.untrained_verifier = tiny
    c.reward.verifier_prompt_tokens = 128 if tiny else 0  # 0 = the verifier run's
    c.reward.nli_model = ""
    c.reward.nli_weight = 0.0
    c.reward.length_penalty = 0.0
    c.reward.target_tokens = 0
    c.reward.missing_eos_penalty = 0.0

    # TRL's PPO defaults (GRPO: group of 4, KL in the loss as its beta).
    c.rl = ml_collections.ConfigDict()
    c.rl.advantage = "grpo" if a.grpo else "gae"
    c.rl.group_size = group
    c.rl.epochs = 2 if tiny else 4
    c.rl.minibatches = 2 if tiny else 1
    c.rl.clip_range = 0.2
    c.rl.clip_range_value = 0.2
    c.rl.vf_coef = 0.1
    c.rl.entropy_coef = 0.0
    c.rl.gamma = 1.0
    c.rl.lam = 0.95
    c.rl.whiten_advantages = True
    c.rl.whiten_rewards = False
    c.rl.kl_coef = 0.04 if a.grpo else 0.05
    c.rl.kl_estimator = "k3" if a.grpo else "k1"
    c.rl.kl_target = 0.0
    c.rl.kl_horizon = 10000
    c.rl.eval_samples = 4
    return c
