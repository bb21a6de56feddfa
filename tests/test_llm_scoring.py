"""Free-generation scoring without a model (aes_jax.eval.llm_scoring): greedy parsing and
expected-score decoding read each trait from the same generated token, the fallback, and
the scoring report's MCRMSE on rounded and continuous expected values (hand numbers)."""

import math

import numpy as np
import pytest

from aes_jax.data.score_codec import ScoreCodec
from aes_jax.data.score_format import ScoreFormat
from aes_jax.data.tokenizers import ByteTokenizer, HFTokenizer
from aes_jax.eval import llm_scoring
from aes_jax.losses.number_tokens import digit_token_ids

nan = np.nan
TRAITS = ("a", "b", "c")


def score_format(tokenizer, vocab: int, codecs=(ScoreCodec(1, 9),) * 3,
                 fallback=(2, 3, 4)) -> ScoreFormat:
    ids, values = digit_token_ids(tokenizer.encode, vocab)
    return ScoreFormat(traits=TRAITS[:len(codecs)], codecs=tuple(codecs),
                       digit_ids=tuple(int(i) for i in ids),
                       digit_values=tuple(float(v) for v in values),
                       fallback_digits=tuple(fallback), end_of_answer_id=tokenizer.eos_id)


def watched_logits(tokens, fmt: ScoreFormat) -> np.ndarray:
    """Digit logits per step that tell the steps apart: at a digit token d, p(d) = 0.75 and
    p(d + 1) = 0.25 (expected d + 0.25); at any other token all mass on 9 (expected 9)."""
    ids = list(fmt.digit_ids)
    out = np.full((len(tokens), len(ids)), -1e9)
    for i, t in enumerate(tokens):
        if t in ids:
            d = ids.index(t)
            out[i, d], out[i, d + 1] = math.log(0.75), math.log(0.25)
        else:
            out[i, 9] = 0.0
    return out


# answer -> (parsed digits, expected digits), traits on digits 1-9
CASES = {
    "4 3 5": ([4, 3, 5], [4.25, 3.25, 5.25]),
    "4 3 5 6\n\nEssay Feedback: 7 8": ([4, 3, 5], [4.25, 3.25, 5.25]),
    # A malformed first field: the old split read digits '4', '5', '3' for the expected
    # path while greedy read [None, 3, 2].
    "4.5 3 2": ([nan, 3, 2], [nan, 3.25, 2.25]),
    # The old expected path gave '3' and '5' to traits a and b.
    "x 3 5": ([nan, 3, 5], [nan, 3.25, 5.25]),
    # The old expected path stopped at the newline after a blank first line: all NaN.
    " \n4 3 5": ([4, 3, 5], [4.25, 3.25, 5.25]),
    "4 0 5": ([4, nan, 5], [4.25, nan, 5.25]),   # 0 is outside 1-9: unreadable in both
    "é 4 3 5": ([nan, 4, 3], [nan, 4.25, 3.25]),  # two-byte first field
    "": ([nan] * 3, [nan] * 3),
}


def _check_answer(tokenizer, fmt, text, parsed_want, expected_want):
    tokens = list(tokenizer.encode(text))
    got_text, _, parsed, expected = llm_scoring.read_answer(
        tokens, watched_logits(tokens, fmt), tokenizer, fmt)
    assert got_text == text
    np.testing.assert_array_equal(parsed, parsed_want, err_msg=text)
    np.testing.assert_allclose(expected, expected_want, rtol=1e-9, err_msg=text)
    # The rule itself: NaN in one decoding exactly where NaN in the other.
    np.testing.assert_array_equal(np.isnan(parsed), np.isnan(expected))


@pytest.mark.parametrize("text", CASES)
def test_greedy_and_expected_read_the_same_token(text):
    tok = ByteTokenizer()
    _check_answer(tok, score_format(tok, tok.vocab_size), text, *CASES[text])


def test_same_alignment_with_the_smollm2_tokenizer(smollm2_dir):
    """A real byte-level BPE; its '🙂' is two tokens, the first decoding to U+FFFD."""
    tok = HFTokenizer(smollm2_dir)
    fmt = score_format(tok, tok.vocab_size)
    cases = {**CASES, "🙂 4 3 5": ([nan, 4, 3], [nan, 4.25, 3.25])}
    for text, (parsed, expected) in cases.items():
        _check_answer(tok, fmt, text, parsed, expected)


def test_status_and_steps():
    tok = ByteTokenizer()
    fmt = score_format(tok, tok.vocab_size)
    statuses = {t: llm_scoring.read_answer(tok.encode(t), watched_logits(tok.encode(t), fmt),
                                           tok, fmt)[1] for t in ("4 3 5", "x 3 5", "x")}
    assert statuses == {"4 3 5": "ok", "x 3 5": "partial", "x": "failed"}
    text = " \n4 3 5"
    assert llm_scoring.score_steps(tok.decode, tok.encode(text), text,
                                   [2, None, 6]) == [2, None, 6]


def test_expected_digits_and_fallback():
    watched = np.zeros((4, 3))
    watched[1] = [0.0, np.log(3.0), -np.inf]  # p(0)=1/4, p(1)=3/4 -> 0.75
    watched[3] = [-np.inf, -np.inf, 0.0]  # p(2)=1 -> 2
    got = llm_scoring.expected_digits(watched, [1, 3, None], np.array([0.0, 1.0, 2.0]))
    np.testing.assert_allclose(got[:2], [0.75, 2.0])
    assert np.isnan(got[2])
    fixed = llm_scoring.apply_fallback(np.array([[np.nan, 7.0]]), np.array([2, 3]),
                                       [(1, 4), (1, 5)])
    np.testing.assert_array_equal(fixed, [[2, 5]])


def test_mcrmse_on_rounded_and_continuous_expected_values():
    tok = ByteTokenizer()
    # digits 1-4 = scores 1-4; digits 1-5 = scores 1.0-3.0 in halves
    fmt = score_format(tok, tok.vocab_size, codecs=(ScoreCodec(1, 4), ScoreCodec(1.0, 3.0, 0.5)),
                       fallback=(2, 3))
    gold = np.array([[2.0, 3.0], [4.0, 1.0]])
    raw = np.array([[2.4, nan], [3.5, 0.6]])
    result = {"gold": gold, "greedy": gold, "expected_raw": raw,
              "expected": llm_scoring.apply_fallback(np.floor(raw + 0.5), np.array([2, 3]),
                                                     fmt.digit_ranges),
              "parse_failures": 1, "answers_not_ok": 1}
    np.testing.assert_array_equal(result["expected"], gold)  # rounding hides the errors
    report = llm_scoring.scoring_report(fmt, result)
    assert report["expected"]["mcrmse"] == 0.0
    # Continuous: [[2.4, 3 (fallback)], [3.5, 1.0 (0.6 clipped)]]. Trait a errors 0.4, 0.5
    # -> RMSE sqrt(0.205); trait b scores [2.0, 1.0] both ways -> 0. Mean over traits:
    assert report["expected"]["mcrmse_continuous"] == pytest.approx(math.sqrt(0.205) / 2,
                                                                    rel=1e-12)
    assert report["greedy"]["mcrmse"] == 0.0 and "mcrmse_continuous" not in report["greedy"]
    assert report["fallback_digits"] == {"a": 2, "b": 3}
