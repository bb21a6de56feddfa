"""JAX vs transformers logits on the same checkpoint and prompt.

    python -m launch.parity --hf_dir=PATH --device=cpu [--dtype=float32] [--prompt=...]

Prints max |logit diff|, KL(torch || jax) of next-token distributions, and top-1
agreement. Default checkpoint: the packaged SmolLM2-135M-Instruct.
"""

import json

import jax.numpy as jnp
import numpy as np
from absl import flags

from aes_jax.interop import assets, hf
from aes_jax.interop.torch_ref import llama as torch_llama
from aes_jax.models.llama import Llama
from launch import cli

HF_DIR = flags.DEFINE_string("hf_dir", None, "HF model directory; default the packaged SmolLM2.")
DEVICE = flags.DEFINE_string("device", "cpu", "torch device for the reference: cpu, cuda, mps.")
DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype of both.")
PROMPT = flags.DEFINE_string(
    "prompt", "Score this essay from 1 to 6 and explain why: 'Computers help students learn "
    "because they can find information quickly.'", "User message, wrapped in the chat template.")


def chat_ids(tokenizer, prompt: str) -> np.ndarray:
    """Token ids of a one-message chat with the generation prompt appended."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                         tokenize=False, add_generation_prompt=True)
    return np.asarray([tokenizer(text, add_special_tokens=False)["input_ids"]], np.int32)


def run_parity(hf_dir: str, device: str, dtype: str, prompt: str) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_dir, local_files_only=True)
    ids = chat_ids(tokenizer, prompt)
    cfg, params = hf.load_llama(hf_dir, param_dtype=dtype, dtype=dtype)
    jax_logits = np.asarray(Llama(cfg).apply({"params": params}, jnp.asarray(ids)))
    torch_model = torch_llama.load_hf_llama(hf_dir, device=device, dtype=dtype)
    torch_logits = torch_llama.hf_logits(torch_model, ids)
    return {"hf_dir": str(hf_dir), "device": device, "dtype": dtype, "tokens": int(ids.shape[1]),
            **torch_llama.compare_logits(torch_logits, jax_logits)}


def main(argv):
    del argv
    hf_dir = HF_DIR.value or str(assets.smollm2_dir())
    print(json.dumps(run_parity(hf_dir, DEVICE.value, DTYPE.value, PROMPT.value), indent=2))


if __name__ == "__main__":
    cli.run(main)
