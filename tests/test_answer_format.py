"""The LLaMA-AES answer format and its parsing, the rubric-aware instruction and the
synthetic rubric feedback."""

import pytest

from aes_jax.data import answer_format, score_codec

ELL_TRAITS, ELL_CODECS = score_codec.ell_traits_and_codecs()


def test_format_output_and_parse_scores():
    assert answer_format.format_output([4, 3, 4]) == "4 3 4"
    text = answer_format.format_output([4, 3, 4], "Good work.")
    assert text == "4 3 4\n\nEssay Feedback: Good work."
    assert answer_format.parse_scores(text, 3) == ([4, 3, 4], "ok")
    with pytest.raises(ValueError, match="not a digit"):
        answer_format.format_output([4, 10])
    cases = {
        "\n  4 3 4 3 4 3\nmore": ([4, 3, 4, 3, 4, 3], "ok"),
        "4 3 4 3 4 3 9": ([4, 3, 4, 3, 4, 3], "ok"),          # extra tokens ignored
        "4 3 x 3": ([4, 3, None, 3, None, None], "partial"),    # missing and invalid
        "4 35 4 3 4 3": ([4, None, 4, 3, 4, 3], "partial"),     # two digits is no digit
        "Essay Feedback: none\n4 3": ([None] * 6, "failed"),    # only the first line counts
        "": ([None] * 6, "failed"),
    }
    for generated, expected in cases.items():
        assert answer_format.parse_scores(generated, 6) == expected, generated


def test_score_fields_give_each_accepted_digit_and_where_it_is():
    cases = {
        "4 3 5": [(4, 0), (3, 2), (5, 4)],
        " \n4 3 5": [(4, 2), (3, 4), (5, 6)],     # the first non-empty line counts
        "4.5 3 2": [None, (3, 4), (2, 6)],
        "x 3 5": [None, (3, 2), (5, 4)],
        "\r\n  4\t3\u20035": [(4, 4), (3, 6), (5, 8)],  # any str.split() whitespace
        "4": [(4, 0), None, None],
    }
    for text, fields in cases.items():
        assert answer_format.score_fields(text, 3) == fields, text
        for field in fields:
            if field is not None:
                assert text[field[1]] == str(field[0])
        digits = [None if f is None else f[0] for f in fields]
        assert answer_format.parse_scores(text, 3)[0] == digits


def test_instruction_names_traits_ranges_format_and_ends_with_the_essay():
    essay = "My essay.\n\nSecond paragraph."
    text = answer_format.build_instruction(essay, ELL_TRAITS, ELL_CODECS, with_feedback=True,
                                           prompt_text="Should students work from home?")
    assert text.endswith(answer_format.ESSAY_HEADER + essay)
    assert answer_format.essay_from_instruction(text) == essay
    assert "- cohesion (1-9): how well the text hangs together" in text
    assert "For every trait, digits 1-9 stand for scores 1.0-5.0 in steps of 0.5." in text
    assert ("in this order: cohesion, syntax, vocabulary, phraseology, grammar, conventions"
            in text)
    assert '"Essay Feedback:"' in text and "Should students work from home?" in text
    traits, codecs = score_codec.asap_traits_and_codecs(3)
    plain = answer_format.build_instruction("x", traits, codecs, rubric={})
    assert "- Prompt Adherence (0-3)\n" in plain and "stand for" not in plain
    assert "Write nothing else." in plain and "Feedback" not in plain


def test_rubric_feedback_is_deterministic_template_text():
    digits = [4, 6, 5, 5, 2, 5]
    text = answer_format.rubric_feedback(ELL_TRAITS, digits, ELL_CODECS)
    assert text == answer_format.rubric_feedback(ELL_TRAITS, digits, ELL_CODECS)
    assert "strongest trait is syntax (3.5 of 5.0)" in text
    assert "weakest is grammar (1.5 of 5.0)" in text and "\n" not in text
    same = answer_format.rubric_feedback(ELL_TRAITS, [9] * 6, ELL_CODECS)
    assert "same level" in same and "clear and well controlled" in same
