"""Config dtype names ("float32", "bfloat16", ...) -> jnp dtypes, checked once."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp


def compute_dtype(name: Any) -> jnp.dtype:
    """jnp.dtype of a config's dtype field (a name such as "bfloat16", or a dtype).

    Only floating dtypes are accepted: activations or parameters cast to an integer dtype
    would truncate silently instead of failing. Unknown names (e.g. "bf16") are refused
    here, at the config, rather than deep inside a traced module.
    """
    try:
        dtype = jnp.dtype(name)
    except TypeError as err:
        raise ValueError(f"unknown dtype {name!r}; use a name such as 'float32' or "
                         "'bfloat16'") from err
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype {name!r} is not a floating dtype; use e.g. 'float32' or "
                         "'bfloat16'")
    return dtype
