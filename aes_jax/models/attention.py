"""Causal grouped-query attention, four ways that compute the same thing.

- `einsum`: the reference: one [B, KV, G, T, S] float32 score tensor, softmax, values.
- `xla`: `jax.nn.dot_product_attention(implementation="xla")`.
- `cudnn`: the same call with cuDNN's fused flash kernel (GPU, bf16 / fp16 only).
- `chunked`: blocks of queries x blocks of keys with an online softmax and FlashAttention's
  backward (`flash_attention.py`), so memory grows linearly with sequence length (long
  essays on CPU / TPU, where no fused kernel is at hand).

All take q [B, T, H, D], k and v [B, S, KV, D] (query head h reads KV head h // (H / KV),
as HF's repeat_kv) and a `CausalMask`; they agree on every query that may attend to at
least one key. A query that may attend to nothing (a padding position) gets the mean of
the values from `einsum` / `xla` and zeros from `chunked`: such rows only ever feed other
padding rows and are masked out of every loss.
"""

from __future__ import annotations

import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from aes_jax.models.flash_attention import flash_attention, static_plan, visible

Array = jax.Array

IMPLEMENTATIONS = ("auto", "einsum", "xla", "cudnn", "chunked")
_FILL = jnp.finfo(jnp.float32).min  # finite, so fully masked rows stay free of NaN


@struct.dataclass
class CausalMask:
    """Key slot s is visible to query i iff kv_valid[b, s] and s <= query_slot[i].

    Kept factored ([B, S] + [T]) so the chunked path never builds the [B, T, S] mask.
    """

    kv_valid: Array  # [B, S] bool: the slot holds a real token
    query_slot: Array  # [T] int32: each query's own slot (cache index + position in call)
    # The same slots as Python ints where they are known when tracing (training, TRM):
    # static, so the chunked path skips and unmasks tiles without a traced branch.
    static_slots: tuple[int, ...] | None = struct.field(pytree_node=False, default=None)

    @classmethod
    def known(cls, kv_valid: Array, query_slot: np.ndarray) -> "CausalMask":
        """A mask whose slots are fixed at trace time (not a traced cache offset)."""
        slots = np.asarray(query_slot, np.int32)
        return cls(kv_valid, jnp.asarray(slots), tuple(slots.tolist()))

    def dense(self) -> Array:
        """[B, T, S] bool."""
        return visible(self.kv_valid, self.query_slot, 0, self.query_slot.shape[0], 0,
                       self.kv_valid.shape[1])


def resolve(implementation: str, dtype, platform: str | None = None, query_len: int = 1,
            block_size: int = 256) -> str:
    """`auto` -> cudnn on GPU for 16-bit activations; elsewhere chunked from one full tile
    of queries up (prefill, training: 1.7x XLA's in the fwd+bwd of SmolLM2 at T=1024 on
    CPU, `bench.cpu_variants`; 1.3x for TRM's B=32, T=256), else xla (decode steps and
    inputs shorter than a tile, where XLA's one fused call is faster). Others unchanged."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention={implementation!r}: expected one of {IMPLEMENTATIONS}")
    if implementation != "auto":
        return implementation
    platform = platform or jax.default_backend()
    if platform == "gpu":
        if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16):
            return "cudnn"
        return "xla"
    return "chunked" if query_len >= block_size else "xla"


def attention(q: Array, k: Array, v: Array, mask: CausalMask, implementation: str = "auto",
              block_size: int = 256) -> Array:
    """[B, T, H, D] attention output in q's dtype."""
    implementation = resolve(implementation, q.dtype, query_len=q.shape[1],
                             block_size=block_size)
    if implementation == "einsum":
        return grouped_attention(q, k, v, mask.dense())
    if implementation == "chunked":
        return chunked_attention(q, k, v, mask, block_size)
    if implementation == "cudnn":
        try:
            return _fused(q, k, v, mask, "cudnn")
        except (ValueError, NotImplementedError, RuntimeError) as err:
            # cuDNN refuses some shapes / dtypes / GPUs when the call is traced: the
            # same math through XLA, once said, rather than failing the run.
            if not _warned:
                logging.warning("cuDNN attention unavailable (%s); using XLA's", err)
                _warned.append(True)
            return _fused(q, k, v, mask, "xla")
    return _fused(q, k, v, mask, implementation)


_warned: list[bool] = []


def _fused(q: Array, k: Array, v: Array, mask: CausalMask, implementation: str) -> Array:
    # jax.nn wants the mask as [B, N, T, S]; N = 1 broadcasts over heads.
    return jax.nn.dot_product_attention(
        q, k.astype(q.dtype), v.astype(q.dtype), mask=mask.dense()[:, None],
        implementation=implementation)


def grouped_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """The reference. q [B, T, H, D]; k, v [B, S, KV, D]; mask [B, T, S] bool."""
    b, t, h, hd = q.shape
    kv = k.shape[2]
    q = q.reshape(b, t, kv, h // kv, hd)
    scores = jnp.einsum("btkgd,bskd->bkgts", q, k.astype(q.dtype)).astype(jnp.float32)
    scores = scores * (1.0 / math.sqrt(hd))
    scores = jnp.where(mask[:, None, None, :, :], scores, _FILL)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v.astype(q.dtype))
    return out.reshape(b, t, h, hd)


def _pad_to(x: Array, axis: int, multiple: int, value=0) -> Array:
    extra = -x.shape[axis] % multiple
    if not extra:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, extra)
    return jnp.pad(x, widths, constant_values=value)


def chunked_attention(q: Array, k: Array, v: Array, mask: CausalMask,
                      block_size: int = 256) -> Array:
    """Tiled online-softmax attention with its own backward (`flash_attention`): peak
    memory O(block * S) instead of O(T * S), forward and backward."""
    b, t, h, hd = q.shape
    s, kv = k.shape[1], k.shape[2]
    bq, bk = min(block_size, t), min(block_size, s)
    q5 = _pad_to(q.reshape(b, t, kv, h // kv, hd), 1, bq)
    k, v = _pad_to(k.astype(q.dtype), 1, bk), _pad_to(v.astype(q.dtype), 1, bk)
    plan = None
    if mask.static_slots is not None:
        slots = np.pad(np.asarray(mask.static_slots, np.int32), (0, -t % bq),
                       constant_values=-1)
        plan = static_plan(slots, k.shape[1], bq, bk)
    out = flash_attention(q5, k, v, _pad_to(mask.kv_valid, 1, bk, False),
                          _pad_to(mask.query_slot.astype(jnp.int32), 0, bq, -1), bq, bk, plan)
    return out[:, :t].reshape(b, t, h, hd)
