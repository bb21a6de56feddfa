"""Jitted batched generation with a KV cache: greedy, temperature, top-k and top-p sampling,
with an optional repetition penalty.

Prompts are left-padded so every row's next token lands in the same cache slot. One
PRNG key per call makes sampling reproducible; greedy decoding ignores it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from aes_jax.models.llama import KVCache, Llama, LlamaConfig

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """temperature 0 means greedy; top_k 0 and top_p 1.0 switch those filters off."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    # > 1 discourages every token already in the row (its prompt or what it generated), as
    # transformers' RepetitionPenaltyLogitsProcessor: before temperature and the filters,
    # also under greedy decoding. Unlike transformers, padding is never "seen".
    repetition_penalty: float = 1.0
    stop_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0
    # Record these tokens' logits at every step (e.g. the digits, for expected-score
    # decoding), so nobody has to re-run the model over what was generated.
    watch_token_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0 (1.0 = off), got "
                             f"{self.repetition_penalty}")


class GenerateOutput(NamedTuple):
    tokens: Array  # [B, max_new_tokens], pad_token_id after a stop token
    lengths: Array  # [B] tokens generated, the stop token included
    # [B, max_new_tokens, len(watch_token_ids)] float32 logits the step's token was chosen
    # from (the model's, before the repetition penalty and temperature); None when nothing
    # is watched.
    watched_logits: Array | None = None


def filter_logits(logits: Array, top_k: int, top_p: float) -> Array:
    """Sets logits outside the top-k / nucleus (top-p) set to -inf. logits [B, V] float32."""
    neg_inf = jnp.finfo(logits.dtype).min
    if top_k > 0:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, neg_inf, logits)
    if top_p < 1.0:
        sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p
        threshold = jnp.min(jnp.where(keep, sorted_logits, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits < threshold, neg_inf, logits)
    return logits


def penalize_repetition(logits: Array, seen: Array, penalty: float) -> Array:
    """Seen tokens' logits: negative ones times `penalty`, the others divided by it.

    logits [B, V] float32, seen [B, V] bool; penalty 1.0 returns logits unchanged.
    """
    penalized = jnp.where(logits < 0, logits * penalty, logits / penalty)
    return jnp.where(seen, penalized, logits)


def seen_tokens(ids: Array, mask: Array, vocab_size: int) -> Array:
    """[B, V] bool: which ids occur at the masked-in positions of each row of ids [B, T]."""
    rows = jnp.arange(ids.shape[0])[:, None]
    counts = jnp.zeros((ids.shape[0], vocab_size), jnp.int32)
    return counts.at[rows, ids].add(mask.astype(jnp.int32)) > 0


def next_token(logits: Array, rng: Array, sampling: SamplingConfig) -> Array:
    if sampling.temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = filter_logits(logits / sampling.temperature, sampling.top_k, sampling.top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def _repeat_rows(out, prompt_ids: Array, prompt_mask: Array, m: int):
    """The prefill's output and the prompts with every row repeated m times (copies of a
    row adjacent, as np.repeat): m samples per prompt decode from one prefill."""
    rows = functools.partial(jnp.repeat, repeats=m, axis=0)
    cache = out.cache._replace(k=jnp.repeat(out.cache.k, m, axis=1),
                               v=jnp.repeat(out.cache.v, m, axis=1), valid=rows(out.cache.valid))
    return out._replace(logits=rows(out.logits), cache=cache), rows(prompt_ids), rows(prompt_mask)


@functools.partial(jax.jit, static_argnames=("cfg", "sampling", "num_samples"))
def _generate(cfg: LlamaConfig, sampling: SamplingConfig, variables, prompt_ids, prompt_mask,
              rng, num_samples: int = 1):
    model = Llama(cfg)
    batch, prompt_len = prompt_ids.shape
    steps = sampling.max_new_tokens
    cache = KVCache.init(cfg, batch, prompt_len + steps)
    out = model.apply(variables, prompt_ids, attention_mask=prompt_mask, cache=cache,
                      last_logits_only=True)
    if num_samples > 1:
        out, prompt_ids, prompt_mask = _repeat_rows(out, prompt_ids, prompt_mask, num_samples)
        batch *= num_samples
    stop_ids = jnp.asarray(sampling.stop_token_ids or (-1,), jnp.int32)
    watch_ids = jnp.asarray(sampling.watch_token_ids, jnp.int32)
    penalize = sampling.repetition_penalty != 1.0
    vocab = out.logits.shape[-1]
    # The [B, V] record of seen tokens is carried only when a penalty needs it.
    seen = (seen_tokens(prompt_ids, prompt_mask, vocab) if penalize
            else jnp.zeros((batch, 0), bool))

    def step(state):
        i, logits, cache, tokens, watched, seen, done, rng = state
        rng, sub = jax.random.split(rng)
        watched = watched.at[:, i].set(logits[:, watch_ids])
        if penalize:
            logits = penalize_repetition(logits, seen, sampling.repetition_penalty)
        token = next_token(logits, sub, sampling)
        token = jnp.where(done, sampling.pad_token_id, token)
        tokens = tokens.at[:, i].set(token)
        if penalize:
            seen = seen.at[jnp.arange(batch), token].set(True)
        done = done | jnp.isin(token, stop_ids)
        out = model.apply(variables, token[:, None],
                          attention_mask=jnp.ones((batch, 1), bool), cache=cache)
        return i + 1, out.logits[:, -1], out.cache, tokens, watched, seen, done, rng

    def not_finished(state):
        i, *_, done, _ = state
        return (i < steps) & ~jnp.all(done)

    tokens = jnp.full((batch, steps), sampling.pad_token_id, jnp.int32)
    watched = jnp.zeros((batch, steps, len(sampling.watch_token_ids)), jnp.float32)
    init = (0, out.logits[:, -1], out.cache, tokens, watched, seen, jnp.zeros(batch, bool), rng)
    _, _, _, tokens, watched, _, _, _ = jax.lax.while_loop(not_finished, step, init)
    is_stop = jnp.isin(tokens, stop_ids)
    first_stop = jnp.where(is_stop.any(axis=1), jnp.argmax(is_stop, axis=1) + 1, steps)
    return GenerateOutput(tokens, first_stop, watched if sampling.watch_token_ids else None)


def generate(cfg: LlamaConfig, params, prompt_ids: Array, prompt_mask: Array | None = None,
             rng: Array | None = None, sampling: SamplingConfig = SamplingConfig(),
             lora: dict | None = None, num_samples: int = 1) -> GenerateOutput:
    """Generates up to `sampling.max_new_tokens` tokens for left-padded `prompt_ids` [B, P].

    `num_samples` = m > 1: m continuations per prompt from ONE prefill (its KV cache is
    copied m times), output rows [B * m] with prompt i's at i*m .. i*m + m - 1: the same
    tokens as generating for the prompts repeated m times (np.repeat), for 1/m of the
    prefill work (self-consistency sampling). `lora`: an adapter tree applied on the
    unmerged `params` (cfg.lora must describe it), so several adapters can take turns on
    one base in memory."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if lora is not None and cfg.lora is None:
        raise ValueError("generate(lora=...) needs cfg.lora: the adapter's LoraConfig")
    prompt_ids = jnp.asarray(prompt_ids, jnp.int32)
    if prompt_mask is None:
        prompt_mask = jnp.ones_like(prompt_ids, bool)
    prompt_mask = jnp.asarray(prompt_mask, bool)
    if bool(jnp.any(prompt_mask[:, -1] == 0)):
        raise ValueError("prompts must be left-padded: the last column of prompt_mask has padding")
    if rng is None:
        rng = jax.random.key(0)
    variables = {"params": params} if lora is None else {"params": params, "lora": lora}
    return _generate(cfg, sampling, variables, prompt_ids, prompt_mask, rng, num_samples)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, width: int | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> (ids [B, P], mask [B, P]) padded on the left, P = the longest list or
    `width` (one shape for every batch, so the sampler compiles once)."""
    longest = max(len(s) for s in sequences)
    if width is not None and width < longest:
        raise ValueError(f"left_pad: width={width} but a sequence has {longest} tokens")
    width = longest if width is None else width
    ids = np.full((len(sequences), width), pad_id, np.int32)
    mask = np.zeros((len(sequences), width), bool)
    for row, seq in enumerate(sequences):
        if len(seq):
            ids[row, width - len(seq):] = seq
            mask[row, width - len(seq):] = True
    return ids, mask


def strip_after_stop(out: GenerateOutput, stop_token_ids: Sequence[int] = ()) -> list[list[int]]:
    """Generated tokens per row, without the padding and the stop token."""
    rows = []
    for row, n in zip(np.asarray(out.tokens), np.asarray(out.lengths)):
        seq = row[:n].tolist()
        if seq and seq[-1] in stop_token_ids:
            seq = seq[:-1]
        rows.append(seq)
    return rows
