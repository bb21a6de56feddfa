"""aes_jax: JAX/Flax implementations of automated essay scoring and feedback systems."""

__version__ = "0.1.0"
