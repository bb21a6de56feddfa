"""LLaMA-AES examples as ids and masks: on real SmolLM2 and byte tokenisations, a tokenizer
that merges digits, and truncation of the essay (never the answer)."""

import re

import numpy as np
import pytest

from aes_jax.data import asap, mtl_dataset, mtl_encoding, score_codec
from aes_jax.data.answer_format import FEEDBACK_MARKER, essay_from_instruction
from aes_jax.data.mtl_io import MtlExample
from aes_jax.data.score_codec import ScoreCodec
from aes_jax.data.tokenizers import ByteTokenizer, plain_prompt
from tests.mtl_utils import ELL_CODECS, ell_record


@pytest.fixture(scope="module")
def smollm2():
    from aes_jax.data.tokenizers import HFTokenizer
    from aes_jax.interop import assets

    return HFTokenizer(assets.smollm2_dir())


def check_masks(tok, enc, ex, digit_ids):
    a = mtl_encoding.training_arrays(enc)
    p, o = len(enc.prompt_ids), len(enc.output_ids)
    assert a["input_ids"].shape == (p + o - 1,) and a["input_ids"].dtype == np.int32
    assert a["input_ids"][:p].tolist() == enc.prompt_ids.tolist()
    gold = [int(c) for c in ex.output.splitlines()[0].split()]
    # each digit position holds exactly the gold digit, as its own token
    assert [tok.decode([int(enc.output_ids[j])]) for j in enc.digit_pos] == list(map(str, gold))
    assert enc.digit_value.tolist() == gold
    targets = a["targets"]
    assert targets[a["digit_mask"]].tolist() == [digit_ids[d] for d in gold]
    assert a["digit_value"][a["digit_mask"]].tolist() == gold
    assert a["trait_index"][a["digit_mask"]].tolist() == list(range(len(gold)))
    assert (a["trait_index"][~a["digit_mask"]] == -1).all()
    # the loss covers exactly the answer tokens and the end-of-answer token
    assert a["loss_mask"].sum() == o and not a["loss_mask"][:p - 1].any()
    assert targets[a["loss_mask"]].tolist() == enc.output_ids.tolist()
    assert targets[a["loss_mask"]][-1] == tok.end_of_answer_id
    assert not (a["feedback_mask"] & ~a["loss_mask"]).any()
    feedback = ex.output.split(FEEDBACK_MARKER, 1)[1]
    assert tok.decode(targets[a["feedback_mask"]].tolist()) == feedback
    return a


def test_masks_on_a_real_smollm2_tokenisation(smollm2):
    (ex,) = mtl_dataset.examples_from_ell([ell_record()], with_feedback=True)
    enc = mtl_encoding.encode_example(ex, smollm2, ELL_CODECS, max_tokens=4096)
    assert smollm2.end_of_answer_id == smollm2.encode("<|im_end|>")[0]
    digit_ids = [smollm2.encode(str(d))[0] for d in range(10)]
    assert digit_ids == list(range(32, 42))
    a = check_masks(smollm2, enc, ex, digit_ids)
    prompt_text = smollm2.decode(enc.prompt_ids.tolist())
    assert prompt_text == smollm2.chat_prompt(ex.instruction)
    assert prompt_text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\n" in prompt_text
    assert enc.truncated_words == 0
    padded = mtl_encoding.training_arrays(enc, length=len(a["targets"]) + 5)
    assert padded["targets"][-5:].tolist() == [0] * 5 and not padded["loss_mask"][-5:].any()
    assert padded["trait_index"][-5:].tolist() == [-1] * 5
    assert all((padded[k][:len(a["targets"])] == a[k]).all() for k in a)
    with pytest.raises(ValueError, match="length=10"):
        mtl_encoding.training_arrays(enc, length=10)


def test_masks_with_the_byte_tokenizer():
    tok = ByteTokenizer()
    traits, codecs = score_codec.asap_traits_and_codecs(1)
    values = dict(zip(traits, (6, 1, 3, 4, 2)))
    essay = asap.Essay(essay_id=1, prompt=1, text="Dear editor, café.", score=8,
                       traits=values, source="t.tsv", line=2)
    (ex,) = mtl_dataset.examples_from_asap([essay], with_feedback=True)
    enc = mtl_encoding.encode_example(ex, tok, codecs, max_tokens=4096)
    check_masks(tok, enc, ex, [d + 3 + ord("0") for d in range(10)])
    assert tok.decode(enc.prompt_ids.tolist()) == plain_prompt(ex.instruction)
    ids, offsets = tok.encode_with_offsets("é1")
    assert ids == [0xC3 + 3, 0xA9 + 3, ord("1") + 3] and offsets == [(0, 1), (0, 1), (1, 2)]
    (short,) = mtl_dataset.examples_from_asap([essay], with_feedback=False)
    a = mtl_encoding.training_arrays(
        mtl_encoding.encode_example(short, tok, codecs, max_tokens=4096))
    assert not a["feedback_mask"].any() and a["digit_mask"].sum() == 5


class MergingTokenizer(ByteTokenizer):
    """Like tokenizers whose vocabulary has multi-digit pieces: '4 3' is one token."""

    def encode_with_offsets(self, text):
        spans = [m.span() for m in re.finditer(r"\d \d|.", text, re.S)]
        return [500 + k for k in range(len(spans))], spans


def test_a_tokenizer_merging_digits_is_refused_clearly():
    ex = MtlExample("Score it.", "4 3 4", essay_id="42", source="dev.jsonl:7")
    codecs = [ScoreCodec(0, 4)] * 3
    with pytest.raises(ValueError, match=r"essay 42 \(dev.jsonl:7\): score digit 0 \('4' at "
                                         r"character 0.*token 0 '4 3'.*one token per digit"):
        mtl_encoding.encode_example(ex, MergingTokenizer(), codecs, max_tokens=100)
    with pytest.raises(ValueError, match="not 3 single digits"):
        mtl_encoding.encode_example(MtlExample("x", "4 3"), ByteTokenizer(), codecs, max_tokens=99)


def test_truncation_cuts_the_essay_never_the_answer():
    tok = ByteTokenizer()
    words = [f"w{k:02d}" for k in range(50)]
    essay = "  ".join(" ".join(words[i:i + 10]) for i in range(0, 50, 10))  # odd spacing
    (ex,) = mtl_dataset.examples_from_ell([ell_record(text=essay)], with_feedback=True)
    full = mtl_encoding.encode_example(ex, tok, ELL_CODECS, max_tokens=10_000)
    size = len(full.prompt_ids) + len(full.output_ids)
    limit = size - 42
    with pytest.raises(ValueError, match=r"essay E1 \(fold_0.csv:2\): \d+ prompt \+ \d+ answer "
                                         f"tokens exceed max_tokens={limit}"):
        mtl_encoding.encode_example(ex, tok, ELL_CODECS, max_tokens=limit)
    assert ex.essay == essay == essay_from_instruction(ex.instruction)
    cut = mtl_encoding.encode_example(ex, tok, ELL_CODECS, max_tokens=limit, essay=ex.essay)
    assert cut.output_ids.tolist() == full.output_ids.tolist()
    assert len(cut.prompt_ids) + len(cut.output_ids) <= limit
    kept = 50 - cut.truncated_words
    # the last 10 words are 41 bytes ("  w40 ... w49"), one more is 4: 42 over means 11 go
    assert cut.truncated_words == 11
    text = tok.decode(cut.prompt_ids.tolist())
    assert f"w{kept - 1:02d}\n\n### Response:" in text and f"w{kept:02d}" not in text
    with pytest.raises(ValueError, match="even with the essay cut to nothing"):
        mtl_encoding.encode_example(ex, tok, ELL_CODECS, max_tokens=len(full.output_ids) + 5,
                                    essay=essay)
