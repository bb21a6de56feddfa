"""PyTorch reference paths (transformers or hand-written torch) for parity checks and benchmarks.

Only these modules import torch; the JAX side of aes_jax never does.
"""
