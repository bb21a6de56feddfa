"""Which essays of one pool to pair: Pair2Score's coverage and fill passes, on indices.

:func:`sample_pool` sees only the pool's trait scores and returns index pairs; the pair
cache format around it is :mod:`aes_jax.data.pairs`. The passes follow the original's
``generate_pairs.py``:

1. coverage: every essay, in a seeded order, that is still unpaired gets a random partner
   among the least-used ones at gap >= ``min_gap``; only when none exists, the partner at
   the nearest nonzero gap (else any): a counted fallback;
2. fill: unseen pairs are drawn by gap bucket (>= 3, [2, 3), [min_gap, 2)), round-robin,
   each bucket up to its share of the candidate pairs and then freely, between two essays
   still below ``target`` usage;
3. top-up (ours): an essay the draws left short takes a partner that is short too; else
   a partner's slot in a pair whose other essay has more than ``target`` (that pair is
   dropped, so nobody falls below the target); else a partner with room below ``cap``.
   The original instead raised its cap when stuck; here ``cap`` is never passed.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["GAP_BUCKETS", "sample_pool"]

# Fill-pass gap buckets as [low, high); the lowest one starts at min_gap.
GAP_BUCKETS = ((3.0, float("inf")), (2.0, 3.0), (0.0, 2.0))
_EPS = 1e-9
_RETRIES = 30  # random draws before listing a bucket's remaining open pairs


def sample_pool(values: np.ndarray, rng: np.random.Generator, min_gap: float, target: int,
                cap: int) -> tuple[list[tuple[int, int]], int]:
    """``(pairs, fallbacks)`` for essays ``0..n-1`` with trait scores ``values``.

    ``pairs``: unordered index pairs, never repeated, in the order chosen; ``fallbacks``:
    coverage pairs at a gap below ``min_gap``. Deterministic given ``rng``'s state.
    """
    if len(values) < 2:
        return [], 0
    pairer = _Pairer(np.asarray(values, dtype=float), rng, min_gap, target, cap)
    pairer.cover()
    pairer.fill()
    pairer.top_up()
    return list(pairer.chosen), pairer.fallbacks


class _Pairer:
    def __init__(self, values: np.ndarray, rng: np.random.Generator, min_gap: float,
                 target: int, cap: int):
        self.v, self.rng, self.n = values, rng, len(values)
        self.min_gap, self.target, self.cap = min_gap, target, cap
        self.usage = np.zeros(self.n, dtype=np.int64)
        self.partners: list[set[int]] = [set() for _ in range(self.n)]
        self.chosen: dict[tuple[int, int], None] = {}  # insertion-ordered, O(1) removal
        self.fallbacks = 0

    def add(self, i: int, j: int) -> None:
        self.chosen[(i, j)] = None
        self.usage[[i, j]] += 1
        self.partners[i].add(j)
        self.partners[j].add(i)

    def remove(self, i: int, j: int) -> None:
        del self.chosen[(i, j) if (i, j) in self.chosen else (j, i)]
        self.usage[[i, j]] -= 1
        self.partners[i].discard(j)
        self.partners[j].discard(i)

    def least_used(self, candidates: np.ndarray) -> int:
        u = self.usage[candidates]
        low = candidates[u == u.min()]
        return int(low[self.rng.integers(len(low))])

    def free_of(self, i: int) -> np.ndarray:
        """Mask of the essays ``i`` may still pair with (not itself, not a partner)."""
        mask = np.ones(self.n, dtype=bool)
        mask[i] = False
        mask[list(self.partners[i])] = False
        return mask

    # --------------------------------------------------------------------- coverage

    def cover(self) -> None:
        for i in map(int, self.rng.permutation(self.n)):
            if self.usage[i]:
                continue
            gap = np.abs(self.v - self.v[i])
            room = self.free_of(i) & (self.usage < self.cap)
            eligible = np.flatnonzero(room & (gap >= self.min_gap - _EPS))
            if eligible.size:
                self.add(i, self.least_used(eligible))
                continue
            self.fallbacks += 1
            near = np.flatnonzero(room & (gap > _EPS))
            if near.size:
                near = near[gap[near] == gap[near].max()]
            else:
                near = np.flatnonzero(room)
            if not near.size:  # every other essay at the cap: pass it rather than drop i
                near = np.flatnonzero(self.free_of(i))
            self.add(i, self.least_used(near))

    # --------------------------------------------------------------------- fill

    def fill(self) -> None:
        levels, self.level_of = np.unique(self.v, return_inverse=True)
        # Essays below the target, per score level, with their slot for O(1) removal.
        self.open: list[list[int]] = [[] for _ in levels]
        self.slot = np.full(self.n, -1)
        for i in range(self.n):
            if self.usage[i] < self.target:
                self.slot[i] = len(self.open[self.level_of[i]])
                self.open[self.level_of[i]].append(i)
        counts = np.bincount(self.level_of, minlength=len(levels))
        buckets = []
        for low, high in GAP_BUCKETS:
            low = max(low, self.min_gap)
            buckets.append([(a, b) for a, b in itertools.combinations(range(len(levels)), 2)
                            if low - _EPS <= levels[b] - levels[a] < high - _EPS])
        sizes = np.array([sum(counts[a] * counts[b] for a, b in pb) for pb in buckets], float)
        wanted = max(0, round(self.n * self.target / 2) - len(self.chosen))
        quota = (np.floor(wanted * sizes / sizes.sum()) if sizes.sum() else sizes).astype(int)
        self._round_robin(buckets, quota)
        self._round_robin(buckets, None)

    def _round_robin(self, buckets: list[list[tuple[int, int]]], quota) -> None:
        taken = [0] * len(buckets)
        live = [bool(pb) for pb in buckets]
        while any(live):
            for k, level_pairs in enumerate(buckets):
                if not live[k]:
                    continue
                if (quota is not None and taken[k] >= quota[k]) or not self._draw(level_pairs):
                    live[k] = False
                else:
                    taken[k] += 1

    def _draw(self, level_pairs: list[tuple[int, int]]) -> bool:
        """Add one unseen pair of two open essays from these score levels, uniformly."""
        cumulative = np.cumsum([len(self.open[a]) * len(self.open[b]) for a, b in level_pairs])
        if cumulative[-1] == 0:
            return False
        for _ in range(_RETRIES):
            k = int(np.searchsorted(cumulative, self.rng.random() * cumulative[-1], "right"))
            a, b = level_pairs[min(k, len(level_pairs) - 1)]
            i = self.open[a][self.rng.integers(len(self.open[a]))]
            j = self.open[b][self.rng.integers(len(self.open[b]))]
            if j not in self.partners[i]:
                self._add_open(i, j)
                return True
        # Most open pairs here are taken already, so few are left: list them.
        rest = [(i, j) for a, b in level_pairs for i in self.open[a] for j in self.open[b]
                if j not in self.partners[i]]
        if not rest:
            return False
        self._add_open(*rest[self.rng.integers(len(rest))])
        return True

    def _add_open(self, i: int, j: int) -> None:
        self.add(i, j)
        for e in (i, j):
            if self.usage[e] >= self.target:  # no longer open: swap-remove from its level
                group = self.open[self.level_of[e]]
                last = group.pop()
                if last != e:
                    group[self.slot[e]] = last
                    self.slot[last] = self.slot[e]
                self.slot[e] = -1

    # --------------------------------------------------------------------- top-up

    def top_up(self) -> None:
        # Least surplus first: a partner that is short too; else a slot taken from a pair
        # whose other essay has more than the target; else a partner with room to the cap.
        for i in map(int, self.rng.permutation(self.n)):
            gap_ok = np.abs(self.v - self.v[i]) >= self.min_gap - _EPS
            while self.usage[i] < self.target:
                free = gap_ok & self.free_of(i)
                short = np.flatnonzero(free & (self.usage < self.target))
                if short.size:
                    self.add(i, self.least_used(short))
                    continue
                swap = self._swap_for(i, np.flatnonzero(free))
                if swap is not None:
                    self.remove(*swap)
                    self.add(i, swap[0])
                    continue
                room = np.flatnonzero(free & (self.usage < self.cap))
                if not room.size:
                    break
                self.add(i, self.least_used(room))

    def _swap_for(self, i: int, partners: np.ndarray) -> tuple[int, int] | None:
        """A partner ``j`` for ``i`` and a pair (j, k) that k can spare: k has more than the
        target and the pair is no fallback (so the coverage pass's count stays true)."""
        allowed = np.zeros(self.n, dtype=bool)
        allowed[partners] = True
        # Few essays have a surplus, so search from their side.
        for k in map(int, self.rng.permutation(np.flatnonzero(self.usage > self.target))):
            for j in sorted(self.partners[k]):
                if allowed[j] and abs(self.v[j] - self.v[k]) >= self.min_gap - _EPS:
                    return j, k
        return None
