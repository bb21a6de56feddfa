"""Instruction data of the LLaMA-AES scorer: score codecs, JSONL, answer format and parsing,
instructions, masks on real SmolLM2 and byte tokenisations, truncation, dataset
directories, the synthetic ELLIPSE-layout demo corpus and the --format=mtl CLI. Fixtures
are written here; nothing reads the shared real data."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from aes_jax.data import asap, asap_demo, ell, prompts
from aes_jax.data.prompts import MtlExample, ScoreCodec
from aes_jax.data.tokenizers import ByteTokenizer, plain_prompt

REPO = Path(__file__).resolve().parents[1]
ELL_TRAITS, ELL_CODECS = prompts.ell_traits_and_codecs()

# ----------------------------------------------------------------------------- codec


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
    codec = prompts.ELL_CODEC
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


# ----------------------------------------------------------------------------- JSONL


def test_jsonl_round_trip_and_errors_naming_file_and_line(tmp_path):
    examples = [MtlExample("Score this: é", "4 3", essay_id="7", traits=("a", "b"),
                           scores=(4.0, 3.0), source="x.tsv:2"),
                MtlExample("Plain", "1 2")]
    path = tmp_path / "train.jsonl"
    assert prompts.write_jsonl(path, examples) == 2
    first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
    assert list(first) == ["instruction", "output", "essay_id", "traits", "scores", "source"]
    assert list(json.loads(path.read_text().splitlines()[1])) == ["instruction", "output"]
    back = prompts.read_jsonl(path)
    assert back[0] == examples[0]
    assert back[1].instruction == "Plain" and back[1].source == f"{path}:2"

    path.write_text(path.read_text() + "\n\n" + '{"instruction": "x", "output": "1"}\n')
    got, blank = prompts.read_jsonl_counted(path)
    assert len(got) == 3 and blank == 2 and got[2].source == f"{path}:5"
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text('{"instruction": "Score it.", "input": "The essay.", "output": "3"}\n')
    assert prompts.read_jsonl(alpaca)[0].instruction == "Score it.\n\nThe essay."

    bad = tmp_path / "bad.jsonl"
    for line, message in [('{"instruction": "x", "output": ', "not valid JSON"),
                          ('["x", "1"]', "expected a JSON object"),
                          ('{"instruction": "x"}', 'expected a string "output"'),
                          ('{"instruction": "x", "output": "1", "scores": ["a"]}',
                           '"scores" must be a list of numbers')]:
        bad.write_text('{"instruction": "ok", "output": "1"}\n\n' + line + "\n")
        with pytest.raises(ValueError, match=re.escape(f"{bad}:3: ") + ".*" + message):
            prompts.read_jsonl(bad)


# ----------------------------------------------------------------------------- answers


def test_format_output_and_parse_scores():
    assert prompts.format_output([4, 3, 4]) == "4 3 4"
    text = prompts.format_output([4, 3, 4], "Good work.")
    assert text == "4 3 4\n\nEssay Feedback: Good work."
    assert prompts.parse_scores(text, 3) == ([4, 3, 4], "ok")
    with pytest.raises(ValueError, match="not a digit"):
        prompts.format_output([4, 10])
    cases = {
        "\n  4 3 4 3 4 3\nmore": ([4, 3, 4, 3, 4, 3], "ok"),
        "4 3 4 3 4 3 9": ([4, 3, 4, 3, 4, 3], "ok"),          # extra tokens ignored
        "4 3 x 3": ([4, 3, None, 3, None, None], "partial"),    # missing and invalid
        "4 35 4 3 4 3": ([4, None, 4, 3, 4, 3], "partial"),     # two digits is no digit
        "Essay Feedback: none\n4 3": ([None] * 6, "failed"),    # only the first line counts
        "": ([None] * 6, "failed"),
    }
    for generated, expected in cases.items():
        assert prompts.parse_scores(generated, 6) == expected, generated


def test_instruction_names_traits_ranges_format_and_ends_with_the_essay():
    essay = "My essay.\n\nSecond paragraph."
    text = prompts.build_instruction(essay, ELL_TRAITS, ELL_CODECS, with_feedback=True,
                                     prompt_text="Should students work from home?")
    assert text.endswith(prompts.ESSAY_HEADER + essay)
    assert prompts.essay_from_instruction(text) == essay
    assert "- cohesion (1-9): how well the text hangs together" in text
    assert "For every trait, digits 1-9 stand for scores 1.0-5.0 in steps of 0.5." in text
    assert ("in this order: cohesion, syntax, vocabulary, phraseology, grammar, conventions"
            in text)
    assert '"Essay Feedback:"' in text and "Should students work from home?" in text
    traits, codecs = prompts.asap_traits_and_codecs(3)
    plain = prompts.build_instruction("x", traits, codecs, rubric={})
    assert "- Prompt Adherence (0-3)\n" in plain and "stand for" not in plain
    assert "Write nothing else." in plain and "Feedback" not in plain


def test_rubric_feedback_is_deterministic_template_text():
    digits = [4, 6, 5, 5, 2, 5]
    text = prompts.rubric_feedback(ELL_TRAITS, digits, ELL_CODECS)
    assert text == prompts.rubric_feedback(ELL_TRAITS, digits, ELL_CODECS)
    assert "strongest trait is syntax (3.5 of 5.0)" in text
    assert "weakest is grammar (1.5 of 5.0)" in text and "\n" not in text
    same = prompts.rubric_feedback(ELL_TRAITS, [9] * 6, ELL_CODECS)
    assert "same level" in same and "clear and well controlled" in same


# ----------------------------------------------------------------------------- examples


def ell_record(text="I think students should learn at home. It is good for them.",
               values=(2.5, 3.5, 3.0, 3.0, 1.5, 4.0)):
    return ell.EllEssay(text_id="E1", text=text, scores=dict(zip(ELL_TRAITS, values)),
                        source="fold_0.csv", line=2, fold=0)


def test_examples_from_ell_and_asap():
    (ex,) = prompts.examples_from_ell([ell_record()], with_feedback=True)
    assert ex.output.startswith("4 6 5 5 2 7\n\nEssay Feedback: ")
    assert ex.essay_id == "E1" and ex.source == "fold_0.csv:2"
    assert ex.traits == ELL_TRAITS and ex.scores == (2.5, 3.5, 3.0, 3.0, 1.5, 4.0)
    assert prompts.check_example(ex, ELL_CODECS, ELL_TRAITS) == [4, 6, 5, 5, 2, 7]
    unscored = ell.EllEssay("T1", "text", {}, "test.csv", 3)
    with pytest.raises(ValueError, match="test.csv:3: essay T1 has no"):
        prompts.examples_from_ell([unscored], with_feedback=False)

    traits = dict(zip(asap.TRAIT_NAMES[3], (2, 1, 3, 0)))
    essay = asap.Essay(essay_id=5, prompt=3, text="The heat.", score=2, traits=traits,
                       source="train.tsv", line=4)
    (ex,) = prompts.examples_from_asap([essay], with_feedback=False,
                                       prompt_texts={3: "Describe the setting."})
    assert ex.output == "2 1 3 0" and ex.traits == asap.TRAIT_NAMES[3]
    assert "Describe the setting." in ex.instruction and ex.source == "train.tsv:4"
    holistic = asap.Essay(essay_id=6, prompt=3, text="x", score=1, traits={},
                          source="training_set_rel3.tsv", line=9)
    with pytest.raises(ValueError, match="training_set_rel3.tsv:9: essay 6 .* no ASAP\\+\\+"):
        prompts.examples_from_asap([holistic], with_feedback=False)


# ----------------------------------------------------------------------------- masks


@pytest.fixture(scope="module")
def smollm2():
    from aes_jax.data.tokenizers import HFTokenizer
    from aes_jax.interop import assets

    return HFTokenizer(assets.smollm2_dir())


def check_masks(tok, enc, ex, digit_ids):
    a = prompts.training_arrays(enc)
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
    feedback = ex.output.split(prompts.FEEDBACK_MARKER, 1)[1]
    assert tok.decode(targets[a["feedback_mask"]].tolist()) == feedback
    return a


def test_masks_on_a_real_smollm2_tokenisation(smollm2):
    (ex,) = prompts.examples_from_ell([ell_record()], with_feedback=True)
    enc = prompts.encode_example(ex, smollm2, ELL_CODECS, max_tokens=4096)
    assert smollm2.end_of_answer_id == smollm2.encode("<|im_end|>")[0]
    digit_ids = [smollm2.encode(str(d))[0] for d in range(10)]
    assert digit_ids == list(range(32, 42))
    a = check_masks(smollm2, enc, ex, digit_ids)
    prompt_text = smollm2.decode(enc.prompt_ids.tolist())
    assert prompt_text == smollm2.chat_prompt(ex.instruction)
    assert prompt_text.endswith("<|im_start|>assistant\n") and "<|im_start|>user\n" in prompt_text
    assert enc.truncated_words == 0
    padded = prompts.training_arrays(enc, length=len(a["targets"]) + 5)
    assert padded["targets"][-5:].tolist() == [0] * 5 and not padded["loss_mask"][-5:].any()
    assert padded["trait_index"][-5:].tolist() == [-1] * 5
    assert all((padded[k][:len(a["targets"])] == a[k]).all() for k in a)
    with pytest.raises(ValueError, match="length=10"):
        prompts.training_arrays(enc, length=10)


def test_masks_with_the_byte_tokenizer():
    tok = ByteTokenizer()
    traits, codecs = prompts.asap_traits_and_codecs(1)
    values = dict(zip(traits, (6, 1, 3, 4, 2)))
    essay = asap.Essay(essay_id=1, prompt=1, text="Dear editor, café.", score=8,
                       traits=values, source="t.tsv", line=2)
    (ex,) = prompts.examples_from_asap([essay], with_feedback=True)
    enc = prompts.encode_example(ex, tok, codecs, max_tokens=4096)
    check_masks(tok, enc, ex, [d + 3 + ord("0") for d in range(10)])
    assert tok.decode(enc.prompt_ids.tolist()) == plain_prompt(ex.instruction)
    ids, offsets = tok.encode_with_offsets("é1")
    assert ids == [0xC3 + 3, 0xA9 + 3, ord("1") + 3] and offsets == [(0, 1), (0, 1), (1, 2)]
    (short,) = prompts.examples_from_asap([essay], with_feedback=False)
    a = prompts.training_arrays(prompts.encode_example(short, tok, codecs, max_tokens=4096))
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
        prompts.encode_example(ex, MergingTokenizer(), codecs, max_tokens=100)
    with pytest.raises(ValueError, match="not 3 single digits"):
        prompts.encode_example(MtlExample("x", "4 3"), ByteTokenizer(), codecs, max_tokens=99)


def test_truncation_cuts_the_essay_never_the_answer():
    tok = ByteTokenizer()
    words = [f"w{k:02d}" for k in range(50)]
    essay = "  ".join(" ".join(words[i:i + 10]) for i in range(0, 50, 10))  # odd spacing
    (ex,) = prompts.examples_from_ell([ell_record(text=essay)], with_feedback=True)
    full = prompts.encode_example(ex, tok, ELL_CODECS, max_tokens=10_000)
    size = len(full.prompt_ids) + len(full.output_ids)
    limit = size - 42
    with pytest.raises(ValueError, match=r"essay E1 \(fold_0.csv:2\): \d+ prompt \+ \d+ answer "
                                         f"tokens exceed max_tokens={limit}"):
        prompts.encode_example(ex, tok, ELL_CODECS, max_tokens=limit)
    assert ex.essay == essay == prompts.essay_from_instruction(ex.instruction)
    cut = prompts.encode_example(ex, tok, ELL_CODECS, max_tokens=limit, essay=ex.essay)
    assert cut.output_ids.tolist() == full.output_ids.tolist()
    assert len(cut.prompt_ids) + len(cut.output_ids) <= limit
    kept = 50 - cut.truncated_words
    # the last 10 words are 41 bytes ("  w40 ... w49"), one more is 4: 42 over means 11 go
    assert cut.truncated_words == 11
    text = tok.decode(cut.prompt_ids.tolist())
    assert f"w{kept - 1:02d}\n\n### Response:" in text and f"w{kept:02d}" not in text
    with pytest.raises(ValueError, match="even with the essay cut to nothing"):
        prompts.encode_example(ex, tok, ELL_CODECS, max_tokens=len(full.output_ids) + 5,
                               essay=essay)


# ----------------------------------------------------------------------------- directories


def test_mtl_dir_round_trip_and_plain_jsonl_dirs(tmp_path):
    splits = {s: prompts.examples_from_ell([ell_record()], with_feedback=False)
              for s in asap.SPLITS}
    manifest = prompts.mtl_manifest(ELL_TRAITS, ELL_CODECS, {s: 1 for s in splits},
                                    {"skipped": {"bad score": 2}, "sources": ["x.csv"]})
    out = prompts.write_mtl_dir(tmp_path / "ds", splits, manifest)
    loaded, back = prompts.load_mtl_dir(out)
    assert loaded["format"] == "aes_jax.mtl/1" and loaded["traits"] == list(ELL_TRAITS)
    assert loaded["skipped"] == {"bad score": 2} and loaded["counts"]["dev"] == 1
    assert back["test"][0].output == splits["test"][0].output
    with pytest.raises(FileExistsError, match="already holds a dataset"):
        prompts.write_mtl_dir(out, splits, manifest)
    with pytest.raises(ValueError, match="traits .* but .* given"):
        prompts.load_mtl_dir(out, traits=["cohesion"])

    plain = tmp_path / "plain"
    prompts.write_jsonl(plain / "train.jsonl", [MtlExample("x", "2 3", source="s")])
    with pytest.raises(FileNotFoundError, match="no manifest.json; pass traits and codecs"):
        prompts.load_mtl_dir(plain)
    manifest, back = prompts.load_mtl_dir(plain, traits=["a", "b"],
                                          codecs=[ScoreCodec(1, 6)] * 2)
    assert list(back) == ["train"] and manifest["counts"] == {"train": 1}
    prompts.write_jsonl(plain / "train.jsonl", [MtlExample("x", "2 0")])
    with pytest.raises(ValueError, match="digit 0 of trait 1 is outside"):
        prompts.load_mtl_dir(plain, traits=["a", "b"], codecs=[ScoreCodec(1, 6)] * 2)


# ----------------------------------------------------------------------------- demo + CLI


def test_demo_ell_corpus_is_kaggle_layout_synthetic_and_learnable(tmp_path):
    path = prompts.write_demo_ell_csv(tmp_path / "train.csv", n=120, seed=0)
    assert path.read_text(encoding="utf-8").splitlines()[0] == \
        "text_id,full_text," + ",".join(ELL_TRAITS)
    result = ell.read_ell(path, strict=True)
    essays = result.essays
    assert len(essays) == 120 and result.files[0].format == "kaggle"
    assert all(e.text.startswith(asap_demo.MARKER) for e in essays)
    values = np.array([[e.scores[t] for t in ELL_TRAITS] for e in essays])
    assert values.min() >= 1.0 and values.max() <= 5.0 and len(np.unique(values)) >= 7
    length = [len(e.text.split()) for e in essays]
    assert np.corrcoef(values.mean(1), length)[0, 1] > 0.5  # scores follow the text
    assert prompts.write_demo_ell_csv(tmp_path / "again.csv", 120, 0).read_bytes() == \
        path.read_bytes()


def run_cli(*args, ok=True):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-m", "launch.build_dataset", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode == 0) == ok, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def test_cli_builds_the_mtl_demo_end_to_end(tmp_path):
    out = tmp_path / "mtl"
    stdout = run_cli("--format=mtl", "--demo", f"--output_dir={out}", "--feedback=rubric")
    manifest, splits = prompts.load_mtl_dir(out)
    assert manifest["dataset"] == "ellipse" and manifest["feedback"]["mode"] == "rubric"
    assert sum(manifest["counts"].values()) == 240 and "synthetic_demo" in manifest
    assert all(len(splits[s]) == manifest["counts"][s] > 0 for s in asap.SPLITS)
    ids = [ex.essay_id for v in splits.values() for ex in v]
    assert len(set(ids)) == 240
    assert prompts.FEEDBACK_MARKER in splits["train"][0].output
    assert (out / "source" / "train.csv").is_file()
    assert f"train {manifest['counts']['train']}" in stdout and "skipped rows: none" in stdout
    again = run_cli("--format=mtl", "--demo", f"--output_dir={out}", ok=False)
    assert "already holds a dataset" in again
    bad = run_cli("--format=mtl", "--demo", f"--output_dir={tmp_path / 'x'}",
                  "--max_tokens=64", ok=False)
    assert "--max_tokens only applies with --format=trm" in bad


def test_cli_builds_mtl_from_asap_trait_files(tmp_path):
    header = "\t".join(["essay_id", "essay_set", "essay", "score", *asap.TRAIT_NAMES[3]])
    essay_id = 100
    for split in asap.SPLITS:
        rows = []
        for k in range(4):
            rows.append("\t".join(map(str, [essay_id, 3, f"The road was hot {k}.", k % 4,
                                             k % 4, 1, 2, 3])))
            essay_id += 1
        path = tmp_path / "in" / "prompt_3" / f"{split}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([header, *rows]) + "\n")
    out = tmp_path / "mtl"
    stdout = run_cli("--format=mtl", f"--input={tmp_path / 'in'}", f"--output_dir={out}")
    manifest, splits = prompts.load_mtl_dir(out)
    assert manifest["dataset"] == "asap++" and manifest["counts"] == {"train": 4, "dev": 4,
                                                                     "test": 4}
    assert manifest["traits"] == list(asap.TRAIT_NAMES[3])
    assert manifest["codecs"][0] == {"lo": 0.0, "hi": 3.0, "step": 1.0, "digits": [0, 3]}
    assert [ex.output for ex in splits["dev"]] == ["0 1 2 3", "1 1 2 3", "2 1 2 3", "3 1 2 3"]
    assert splits["dev"][0].essay == "The road was hot 0."
    assert "(input files)" in stdout
    bad = run_cli("--format=mtl", f"--input={tmp_path / 'in'}", f"--output_dir={out}2",
                  "--test_fold=1", ok=False)
    assert "--test_fold only applies with ELLIPSE inputs" in bad


def test_codec_to_scores_is_the_linear_inverse():
    for codec in (prompts.ScoreCodec(1, 6), prompts.ScoreCodec(0, 3), prompts.ScoreCodec(1.0, 5.0, 0.5)):
        lo, hi = codec.digit_range
        digits = np.arange(lo, hi + 1)
        np.testing.assert_allclose(codec.to_scores(digits), [codec.decode(int(d)) for d in digits])
        # a mean of digits maps to the mean of their scores (expected values, average votes)
        np.testing.assert_allclose(codec.to_scores((lo + hi) / 2),
                                   (codec.decode(lo) + codec.decode(hi)) / 2)
