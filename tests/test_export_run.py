"""A LoRA training run exported by launch.export loads in transformers + PEFT and gives
the logits the JAX model gives."""

import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import torch

from aes_jax.interop.torch_ref.llama import hf_logits
from aes_jax.models.llama import Llama
from tests.train_utils import REPO, env, read_state, run_train


def test_lora_run_exports_peft_and_merged(tmp_path):
    import peft
    from transformers import AutoModelForCausalLM

    run, out = tmp_path / "run", tmp_path / "export"
    # lr high enough that the adapters move away from zero in 4 steps
    run_train(run, "--config.total_steps=4", "--config.eval_every=0", "--config.optimizer.lr=0.05")
    proc = subprocess.run([sys.executable, "-m", "launch.export", f"--run={run}", f"--out={out}"],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == {"base", "adapter", "merged"}

    ids = np.random.default_rng(0).integers(3, 259, size=(2, 24))
    base = AutoModelForCausalLM.from_pretrained(out / "base", dtype=torch.float32)
    with_adapter = peft.PeftModel.from_pretrained(base, out / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).eval()
    peft_logits, merged_logits = hf_logits(with_adapter, ids), hf_logits(merged, ids)

    from aes_jax.interop import hf
    from aes_jax.interop.peft import load_peft_adapter

    cfg, base_params = hf.load_llama(out / "base")
    cfg, adapters = load_peft_adapter(out / "adapter", cfg)
    np.testing.assert_array_equal(  # the exported adapter is exactly the checkpointed one
        np.asarray(adapters["layers"]["self_attn"]["q_proj"]["b"]),
        read_state(run, 4)["trainable"]["lora"]["layers"]["self_attn"]["q_proj"]["b"])
    jax_logits = np.asarray(Llama(cfg).apply({"params": base_params, "lora": adapters},
                                             jnp.asarray(ids)))
    np.testing.assert_allclose(peft_logits, jax_logits, atol=1e-4)
    np.testing.assert_allclose(merged_logits, jax_logits, atol=1e-4)
    assert np.abs(hf_logits(AutoModelForCausalLM.from_pretrained(out / "base"), ids)
                  - jax_logits).max() > 1e-3  # training changed the model
