"""The input pipeline every task's training loop uses, built on grain's random-access datasets.

Sources are plain random-access objects (``__len__`` / ``__getitem__``); everything after
them is a lazy ``grain.MapDataset`` index transform, so any batch of any step can be computed
from ``(seed, step, process)`` alone. That is what makes the two properties the trainer
relies on cheap to guarantee:

* multi-host: every process builds the same global index order and reads only its own rows
  of each global batch, so the processes' local batches concatenate to the global batch;
* resumption: the iterator state is just the step counter, so a restored iterator continues
  with exactly the next batch (and may even be restored with a different process count).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np

__all__ = [
    "TextLinesSource",
    "PackedTokenSource",
    "TrainIterator",
    "pack_documents",
    "pad_to_bucket",
    "train_iterator",
    "eval_batches",
    "describe",
]

# grain's default (16 threads, 500 prefetched elements) is tuned for small records read from
# remote disks. Our elements are whole batches built from in-memory sources, so 500 of them
# would hold hundreds of batches in RAM for nothing; two threads overlap a tokenising map_fn
# with the train step, which is all the host side needs.
DEFAULT_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=4)

_UTF8_BOM = b"\xef\xbb\xbf"


# ----------------------------------------------------------------------------- sources


class TextLinesSource:
    """One record (``str``) per line of a UTF-8 text file, held in memory.

    Nothing is dropped silently: blank lines skipped and lines whose undecodable bytes were
    replaced by U+FFFD are counted in ``num_blank_skipped`` and ``num_replaced`` so callers
    can report them.
    """

    def __init__(self, path: str | os.PathLike, skip_blank: bool = True):
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"TextLinesSource: no such file: {self.path}") from None
        except IsADirectoryError:
            raise IsADirectoryError(f"TextLinesSource: is a directory, not a text file: "
                                    f"{self.path}") from None
        if data.startswith(_UTF8_BOM):
            data = data[len(_UTF8_BOM):]
        # Split bytes, not str: str.splitlines also breaks on \x0b, \x1c, U+2028 ..., which can
        # occur inside an essay. UTF-8 multi-byte sequences never contain \n or \r bytes, so
        # decoding line by line is safe and lets us count the damaged lines.
        self.lines: list[str] = []
        self.num_blank_skipped = 0
        self.num_replaced = 0
        for raw in data.splitlines():
            line, replaced = _decode_line(raw)
            if skip_blank and not line.strip():
                self.num_blank_skipped += 1
                continue
            self.num_replaced += replaced
            self.lines.append(line)
        if not self.lines:
            what = "no non-blank line" if skip_blank else "no line"
            raise ValueError(f"TextLinesSource: {self.path} is empty ({what}; "
                             f"{self.num_blank_skipped} blank lines skipped)")

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index: int) -> str:
        return self.lines[index]

    def __repr__(self) -> str:
        return (f"TextLinesSource({self.path!r}: {len(self)} lines, "
                f"{self.num_blank_skipped} blank skipped, {self.num_replaced} with "
                f"undecodable bytes replaced)")


def _decode_line(raw: bytes) -> tuple[str, bool]:
    """(text, whether bytes had to be replaced)."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), True


class PackedTokenSource:
    """Concat-then-split packing of one token stream into next-token-prediction records.

    Record ``i`` is the window ``stream[i*L : (i+1)*L]`` with targets shifted by one, so
    consecutive records tile the stream without overlap and every token except the very
    first is a target exactly once. Documents cross record boundaries (no padding, no
    attention reset): the usual trade for 100% token utilisation in causal-LM fine-tuning.
    """

    def __init__(self, token_ids: np.ndarray, seq_len: int):
        if seq_len < 1:
            raise ValueError(f"PackedTokenSource: seq_len must be >= 1, got {seq_len}")
        stream = np.asarray(token_ids)
        if stream.ndim != 1:
            raise ValueError(f"PackedTokenSource: token_ids must be 1-D, got shape {stream.shape}")
        if stream.size and not np.issubdtype(stream.dtype, np.integer):
            raise TypeError(f"PackedTokenSource: token_ids must be integers, got {stream.dtype}")
        if stream.size < seq_len + 1:
            raise ValueError(
                f"PackedTokenSource: the token stream has {stream.size} tokens; one record of "
                f"seq_len={seq_len} needs at least {seq_len + 1} (inputs plus the shifted target)")
        self.tokens = _as_int32(stream, "PackedTokenSource")
        self.seq_len = int(seq_len)
        self._len = (self.tokens.size - 1) // self.seq_len
        # Covered = every input position plus the final target.
        self.num_dropped_tokens = int(self.tokens.size - (self._len * self.seq_len + 1))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        index = int(index)
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"PackedTokenSource: record {index} out of range [0, {self._len})")
        start = index * self.seq_len
        # Copies, so a consumer mutating a record can't corrupt the shared stream.
        return {
            "input_ids": self.tokens[start:start + self.seq_len].copy(),
            "targets": self.tokens[start + 1:start + self.seq_len + 1].copy(),
            "loss_mask": np.ones(self.seq_len, dtype=bool),
        }

    def __repr__(self) -> str:
        return (f"PackedTokenSource({len(self)} records x seq_len {self.seq_len} from "
                f"{self.tokens.size} tokens, {self.num_dropped_tokens} tail tokens dropped)")


def _as_int32(ids: np.ndarray, who: str) -> np.ndarray:
    """Cast to int32, refusing ids a silent wrap-around would corrupt."""
    if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{who}: token ids must lie in [0, 2**31), got range "
                         f"[{ids.min()}, {ids.max()}]")
    return ids.astype(np.int32, copy=False)


def pack_documents(docs: Iterable[Sequence[int]], eos_id: int) -> np.ndarray:
    """Join tokenised documents into one int32 stream, each document followed by ``eos_id``.

    The EOS after every document (the last included) is what tells the model where a packed
    document ends, since packing puts unrelated documents into the same window.
    """
    eos = np.array([eos_id], dtype=np.int64)
    parts: list[np.ndarray] = []
    for i, doc in enumerate(docs):
        arr = np.asarray(doc, dtype=np.int64)
        if arr.ndim != 1:
            raise ValueError(f"pack_documents: document {i} must be a flat token list, got "
                             f"shape {arr.shape}")
        parts += [arr, eos]
    if not parts:
        return np.zeros(0, dtype=np.int32)
    return _as_int32(np.concatenate(parts), "pack_documents")


def pad_to_bucket(ids: Sequence[int], buckets: Sequence[int],
                  pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad ``ids`` to the smallest bucket that fits: ``(ids int32, mask bool)``.

    A handful of bucket lengths bounds the number of distinct shapes, hence of jit
    recompilations, while wasting less compute than padding everything to the maximum.
    """
    if not buckets:
        raise ValueError("pad_to_bucket: no buckets given")
    n = len(ids)
    fitting = [b for b in buckets if b >= n]
    if not fitting:
        raise ValueError(f"pad_to_bucket: sequence of length {n} is longer than the largest "
                         f"bucket {max(buckets)}")
    size = min(fitting)
    out = np.full(size, pad_id, dtype=np.int32)
    if n:
        out[:n] = np.asarray(ids, dtype=np.int32)
    mask = np.zeros(size, dtype=bool)
    mask[:n] = True
    return out, mask


# ----------------------------------------------------------------------------- iterators


def _local_batch_size(batch_size: int, process_index: int, process_count: int,
                      who: str) -> int:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"{who}: process_index={process_index} is not in "
                         f"[0, process_count={process_count})")
    if batch_size < 1 or batch_size % process_count:
        raise ValueError(f"{who}: batch size {batch_size} must be a positive multiple of "
                         f"process_count={process_count}")
    return batch_size // process_count


def _grain_seed(seed: int) -> int:
    """Hash the user seed into grain's 32-bit shuffle seed.

    grain shuffles epoch ``e`` with seed ``seed + e``, so raw seeds 0 and 1 would give
    runs whose data orders are the same sequence shifted by one epoch. Hashing first makes
    neighbouring user seeds independent.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(np.random.SeedSequence(int(seed)).generate_state(1, dtype=np.uint32)[0])


def _shard_rows(ds: grain.MapDataset, local: int, process_index: int,
                process_count: int) -> grain.MapDataset:
    """Process ``p``'s rows ``[p*local, (p+1)*local)`` of every global batch.

    Batching by the *local* size and then taking every ``process_count``-th batch, offset
    by ``p``, picks exactly that row range of the global batch, without reading the rows
    that belong to the other processes.
    """
    return ds.batch(local)[process_index::process_count]


class TrainIterator(grain.DatasetIterator):
    """Infinite batch iterator whose state is the global step.

    A ``grain.DatasetIterator`` so grain's orbax ``CheckpointHandler`` saves it as JSON.
    The state also records the pipeline's seed / global batch size / source length, so a
    checkpoint restored into a differently built pipeline fails loudly instead of silently
    replaying other data. The process count is deliberately not part of it: step ``k``
    means global batch ``k`` whatever the number of processes.
    """

    def __init__(self, inner: grain.DatasetIterator, *, pipeline: dict[str, int],
                 batches_per_epoch: int):
        super().__init__(inner)
        self.pipeline = dict(pipeline)
        self.batches_per_epoch = batches_per_epoch
        self.step = 0

    def __next__(self) -> Any:
        batch = next(self._parent)
        self.step += 1
        return batch

    @property
    def epoch(self) -> int:
        """Epoch of the next batch."""
        return self.step // self.batches_per_epoch

    def get_state(self) -> dict[str, Any]:
        return {"step": self.step, "epoch": self.epoch, "pipeline": dict(self.pipeline),
                "grain": self._parent.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        saved = state.get("pipeline", {})
        diff = {k: (saved.get(k), v) for k, v in self.pipeline.items() if saved.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: saved {a} vs now {b}" for k, (a, b) in diff.items())
            raise ValueError(f"iterator state comes from a different pipeline ({detail})")
        self._parent.set_state(state["grain"])
        self.step = int(state["step"])

    def __str__(self) -> str:
        return f"TrainIterator(step={self.step}, {self.pipeline})"


def train_iterator(source: Any, *, global_batch_size: int, seed: int, process_index: int = 0,
                   process_count: int = 1, map_fn: Callable | None = None,
                   read_options: grain.ReadOptions | None = None) -> TrainIterator:
    """Endless shuffled batches: this process's ``global_batch_size // process_count`` rows.

    Epoch ``e`` is a fresh permutation of the source (grain reseeds its index shuffle per
    epoch); its first ``len // global_batch_size`` full global batches are used and the few
    leftover records, different ones each epoch, are skipped, so every batch has the same
    shape and every record is seen once per epoch when the length divides evenly.
    ``map_fn`` runs per record, lazily, only on the rows this process reads.
    """
    who = "train_iterator"
    local = _local_batch_size(global_batch_size, process_index, process_count, who)
    n = len(source)
    if n < global_batch_size:
        raise ValueError(f"{who}: the source has {n} records, fewer than one global batch "
                         f"of {global_batch_size}")
    batches_per_epoch = n // global_batch_size
    ds = grain.MapDataset.source(source).shuffle(seed=_grain_seed(seed))
    # Truncate each epoch to whole global batches. Slice, batch and repeat all map index
    # i >= len to epoch i // len of their parent, so the per-epoch reshuffle survives them.
    ds = ds[:batches_per_epoch * global_batch_size]
    if map_fn is not None:
        ds = ds.map(map_fn)
    ds = _shard_rows(ds, local, process_index, process_count).repeat()
    inner = ds.to_iter_dataset(read_options or DEFAULT_READ_OPTIONS).__iter__()
    pipeline = {"seed": int(seed), "global_batch_size": int(global_batch_size),
                "num_records": int(n)}
    return TrainIterator(inner, pipeline=pipeline, batches_per_epoch=batches_per_epoch)


def _with_weight(index: int, record: Any, num_real: int) -> dict:
    if not isinstance(record, Mapping):
        raise TypeError(f"eval_batches needs dict records (got {type(record).__name__}); "
                        "pass a map_fn that returns a dict of arrays")
    if "weight" in record:
        raise ValueError("eval_batches: records must not have a 'weight' key, it marks padding")
    return {**record, "weight": np.float32(index < num_real)}


def eval_batches(source: Any, *, batch_size: int, process_index: int = 0, process_count: int = 1,
                 map_fn: Callable | None = None,
                 read_options: grain.ReadOptions | None = None) -> Iterator[dict]:
    """One in-order pass, this process's rows of each global batch of ``batch_size``.

    Metrics must count every record exactly once, so nothing is dropped: the last global
    batch is filled up with copies of record 0 (cheap, and a valid input for any model) and
    every batch carries ``weight`` (1.0 real row, 0.0 padding) to mask them out.
    """
    local = _local_batch_size(batch_size, process_index, process_count, "eval_batches")
    n = len(source)
    if n == 0:
        raise ValueError("eval_batches: the source is empty")
    records = grain.MapDataset.source(source)
    if map_fn is not None:
        records = records.map(map_fn)
    pad = math.ceil(n / batch_size) * batch_size - n
    if pad:
        records = grain.MapDataset.concatenate([records, records[:1].repeat(pad)])
    # A partial of a module-level function, not a lambda, so the pipeline stays picklable
    # (grain's mp_prefetch ships it to worker processes).
    records = records.map_with_index(functools.partial(_with_weight, num_real=n))
    ds = _shard_rows(records, local, process_index, process_count)
    return ds.to_iter_dataset(read_options or DEFAULT_READ_OPTIONS).__iter__()


def describe(source: Any) -> str:
    """One line for logs: size plus whatever the source skipped, replaced or dropped."""
    if isinstance(source, (TextLinesSource, PackedTokenSource)):
        return repr(source)
    return f"{type(source).__name__}: {len(source)} records"
