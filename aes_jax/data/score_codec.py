"""Trait scores <-> single digit tokens, and the trait lists and codecs of each corpus.

Every trait score of the LLaMA-AES answer travels as ONE digit token, so a number-token
loss can read the model's distribution over the ten digit tokens at exactly that
position; :class:`ScoreCodec` maps a trait's score grid onto digits.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from aes_jax.data import asap, ell

__all__ = ["ScoreCodec", "ELL_CODEC", "asap_traits_and_codecs", "ell_traits_and_codecs"]

_GRID_TOL = 1e-6


@dataclasses.dataclass(frozen=True)
class ScoreCodec:
    """A trait's score grid ``lo, lo + step, ..., hi`` <-> one digit token each.

    Integer grids inside 0-9 keep the score as its own digit (ASAP++ traits 1-6, 0-3,
    0-4), so answers read naturally. Other grids number their n values: digits 1..n when
    n <= 9 (ELLIPSE 1.0-5.0 in halves -> 1..9, i.e. 2s - 1), 0..9 when n == 10. A grid of
    more than ten values cannot be one digit token and is refused at construction.
    """

    lo: float
    hi: float
    step: float = 1.0

    def __post_init__(self) -> None:
        lo, hi, step = float(self.lo), float(self.hi), float(self.step)
        if not all(math.isfinite(v) for v in (lo, hi, step)) or step <= 0 or hi < lo:
            raise ValueError(f"ScoreCodec({self.lo}, {self.hi}, step={self.step}): need "
                             "finite lo <= hi and step > 0")
        steps = (hi - lo) / step
        if abs(steps - round(steps)) > _GRID_TOL:
            raise ValueError(f"ScoreCodec({self.lo}, {self.hi}, step={self.step}): hi - lo "
                             "is not a whole number of steps")
        n = int(round(steps)) + 1
        if n > 10 and not self._identity(lo, hi, step):
            raise ValueError(
                f"score range {self.lo:g}-{self.hi:g} in steps of {self.step:g} has {n} "
                "values and does not fit one digit token (at most 10 values); pass a "
                "coarser step, or rescale the scores first")

    @staticmethod
    def _identity(lo: float, hi: float, step: float) -> bool:
        return lo.is_integer() and hi.is_integer() and step == 1.0 and 0 <= lo and hi <= 9

    @property
    def n(self) -> int:
        """How many scores the grid holds."""
        return int(round((float(self.hi) - float(self.lo)) / float(self.step))) + 1

    @property
    def identity(self) -> bool:
        """True when the digit is the score itself."""
        return self._identity(float(self.lo), float(self.hi), float(self.step))

    @property
    def _offset(self) -> int:
        """digit = index + offset."""
        if self.identity:
            return int(self.lo)
        return 1 if self.n <= 9 else 0

    @property
    def digit_range(self) -> tuple[int, int]:
        """Inclusive (lowest, highest) digit."""
        return self._offset, self._offset + self.n - 1

    @property
    def values(self) -> tuple[float, ...]:
        """Every score on the grid, lowest first."""
        return tuple(self._value(i) for i in range(self.n))

    def _value(self, index: int) -> float:
        # Rounded so that e.g. 0.1 * 3 comes back as 0.3: decode gives the grid's literals.
        return float(round(float(self.lo) + index * float(self.step), 9))

    def encode(self, score: float) -> int:
        """The digit of ``score``, which must lie on the grid (within a tolerance)."""
        try:
            x = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"score {score!r} is not a number") from None
        index = (x - float(self.lo)) / float(self.step)
        i = int(round(index)) if math.isfinite(index) else -1
        if not 0 <= i < self.n or abs(index - i) > _GRID_TOL:
            raise ValueError(f"score {score!r} is not on the grid {self.lo:g}-{self.hi:g} "
                             f"in steps of {self.step:g}")
        return i + self._offset

    def decode(self, digit: int) -> float:
        """The score a digit stands for; a digit outside :attr:`digit_range` raises."""
        lo_d, hi_d = self.digit_range
        if isinstance(digit, bool) or int(digit) != digit or not lo_d <= int(digit) <= hi_d:
            raise ValueError(f"digit {digit!r} is outside this codec's digits {lo_d}-{hi_d}")
        return self._value(int(digit) - self._offset)

    def to_scores(self, digits: Any) -> np.ndarray:
        """Continuous inverse of the codec: digits, possibly fractional (expected values,
        votes as floats), -> the original scale. Linear, so means survive the mapping."""
        d0 = self.digit_range[0]
        return self.decode(d0) + (np.asarray(digits, np.float64) - d0) * float(self.step)

    def to_dict(self) -> dict[str, Any]:
        lo_d, hi_d = self.digit_range
        return {"lo": float(self.lo), "hi": float(self.hi), "step": float(self.step),
                "digits": [lo_d, hi_d]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScoreCodec:
        """Inverse of :meth:`to_dict` (``digits`` is informative and checked if present)."""
        try:
            codec = cls(float(d["lo"]), float(d["hi"]), float(d.get("step", 1.0)))
        except (KeyError, TypeError) as e:
            raise ValueError(f"codec {dict(d)!r}: expected keys lo, hi, step ({e})") from None
        if "digits" in d and list(d["digits"]) != list(codec.digit_range):
            raise ValueError(f"codec {dict(d)!r}: digits {d['digits']} disagree with the "
                             f"grid's {list(codec.digit_range)}")
        return codec

    def describe(self) -> str:
        """Short human text of the digit range (and, if not the score itself, its mapping)."""
        lo_d, hi_d = self.digit_range
        if self.identity:
            return f"{lo_d}-{hi_d}"
        return (f"{lo_d}-{hi_d} stand for scores {self.format_score(self.values[0])}-"
                f"{self.format_score(self.values[-1])} in steps of {float(self.step):g}")

    def format_score(self, value: float) -> str:
        """A score as a reader expects it: ``4`` on integer grids, ``3.5``/``3.0`` otherwise."""
        if self.identity or (float(self.step).is_integer() and float(self.lo).is_integer()):
            return str(int(round(value)))
        return f"{value:.1f}" if abs(value * 10 - round(value * 10)) < 1e-9 else f"{value:g}"


ELL_CODEC = ScoreCodec(ell.ELL_RANGE[0], ell.ELL_RANGE[1], ell.ELL_STEP)


def asap_traits_and_codecs(prompt: int) -> tuple[tuple[str, ...], tuple[ScoreCodec, ...]]:
    """ASAP++ traits of ``prompt`` (1-6) and their codecs (identity digits)."""
    if prompt not in asap.TRAIT_NAMES:
        raise ValueError(f"prompt {prompt} has no ASAP++ trait scores (only prompts "
                         f"{sorted(asap.TRAIT_NAMES)} do)")
    traits = asap.TRAIT_NAMES[prompt]
    return traits, tuple(ScoreCodec(*map(float, asap.score_range(prompt, t))) for t in traits)


def ell_traits_and_codecs() -> tuple[tuple[str, ...], tuple[ScoreCodec, ...]]:
    """The six ELLIPSE traits, each with the 1.0-5.0 half-step codec (digits 1-9)."""
    return ell.ELL_TRAITS, (ELL_CODEC,) * len(ell.ELL_TRAITS)
