"""Score codecs: trait score grids <-> one digit token each, and back to the scale."""

import numpy as np
import pytest

from aes_jax.data import score_codec
from aes_jax.data.score_codec import ScoreCodec


@pytest.mark.parametrize("lo,hi", [(1, 6), (0, 3), (0, 4)])
def test_integer_trait_ranges_keep_the_score_as_its_digit(lo, hi):
    codec = ScoreCodec(lo, hi)
    assert codec.identity and codec.digit_range == (lo, hi)
    for s in range(lo, hi + 1):
        assert codec.encode(s) == s and codec.decode(s) == s
    with pytest.raises(ValueError, match=f"score {hi + 1} is not on the grid"):
        codec.encode(hi + 1)
    with pytest.raises(ValueError, match="outside this codec's digits"):
        codec.decode(hi + 1)


def test_ellipse_halves_map_to_digits_one_to_nine():
    codec = score_codec.ELL_CODEC
    assert (codec.lo, codec.hi, codec.step) == (1.0, 5.0, 0.5) and not codec.identity
    assert codec.encode(1.0) == 1 and codec.encode(5.0) == 9 and codec.encode(3.5) == 6
    assert codec.digit_range == (1, 9)
    for v in codec.values:
        assert codec.decode(codec.encode(v)) == v
        assert codec.encode(v) == 2 * v - 1  # the 2s - 1 numbering
    assert codec.encode(3.0000001) == 5  # within the grid tolerance
    with pytest.raises(ValueError, match="score 3.2 is not on the grid 1-5 in steps of 0.5"):
        codec.encode(3.2)
    assert ScoreCodec.from_dict(codec.to_dict()) == codec
    assert codec.to_dict() == {"lo": 1.0, "hi": 5.0, "step": 0.5, "digits": [1, 9]}


def test_ten_values_use_zero_to_nine_and_more_do_not_fit():
    ten = ScoreCodec(0.0, 0.9, 0.1)
    assert ten.digit_range == (0, 9)
    assert [ten.encode(v) for v in ten.values] == list(range(10))
    assert ten.values[3] == 0.3 and ten.decode(ten.encode(0.3)) == 0.3  # no 0.30000000000000004
    assert ScoreCodec(10, 14).digit_range == (1, 5)  # integers beyond 9: numbered from 1
    with pytest.raises(ValueError, match="2-12 in steps of 1 has 11 values and does not fit "
                                         "one digit token.*coarser step"):
        ScoreCodec(2, 12)
    assert ScoreCodec(2, 12, 2).digit_range == (1, 6)
    with pytest.raises(ValueError, match="whole number of steps"):
        ScoreCodec(1, 5, 0.3)


def test_codec_to_scores_is_the_linear_inverse():
    for codec in (ScoreCodec(1, 6), ScoreCodec(0, 3), ScoreCodec(1.0, 5.0, 0.5)):
        lo, hi = codec.digit_range
        digits = np.arange(lo, hi + 1)
        np.testing.assert_allclose(codec.to_scores(digits), [codec.decode(int(d)) for d in digits])
        # a mean of digits maps to the mean of their scores (expected values, average votes)
        np.testing.assert_allclose(codec.to_scores((lo + hi) / 2),
                                   (codec.decode(lo) + codec.decode(hi)) / 2)
