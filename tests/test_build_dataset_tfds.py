"""The token-length report read from a built TFDS dataset equals the one read from the TSV
files it was built from; the ``launch.build_dataset --format=tfds`` CLI end to end (build +
report, and a missing manual file as one line on stderr, exit 2). Fixtures are written
here (test_asap's ASAP++ layout); nothing reads the shared real data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aes_jax import datasets
from aes_jax.data import length_report
from aes_jax.data.asap_records import BuildOptions
from tests.test_asap import write_traits_splits
from tests.test_tfds_datasets import write_prompt_1

REPO = Path(__file__).resolve().parents[1]
PROMPT_TEXTS = {1: "Write a letter to your newspaper.", 3: "Describe the setting."}


def write_inputs(root: Path) -> Path:
    """prompt_1 and prompt_3 train/dev/test TSVs, plus one short row the reader skips."""
    write_traits_splits(root)
    write_prompt_1(root)
    with open(root / "prompt_3" / "train.tsv", "a") as f:
        f.write("999\t3\tshort row\n")
    return root


def tsv_report(inputs: Path, out: Path, **opts) -> dict:
    report = length_report.analyze_lengths(BuildOptions(inputs=[str(inputs)], output_dir=out,
                                                        max_tokens=20, **opts))
    report.pop("png")
    return report


def test_length_report_from_tfds_equals_the_tsv_report(tmp_path):
    inputs = write_inputs(tmp_path / "in")
    datasets.build("asap_traits", inputs, tmp_path / "tfds")
    got = length_report.analyze_tfds_lengths("asap_traits", tmp_path / "tfds", tmp_path / "a",
                                             max_tokens=20, prompt_texts=PROMPT_TEXTS)
    assert got.pop("png") == str(tmp_path / "a" / "token_lengths.png")
    want = tsv_report(inputs, tmp_path / "b", prompt_texts=PROMPT_TEXTS)
    assert got == want
    assert got["all"]["count"] == 32 and got["skipped"] == {"too few columns": 1}
    assert 0 < got["all"]["over_limit"] < 32  # the limit cuts some essays, not all
    assert json.loads((tmp_path / "a" / "token_lengths.json").read_text()) == want
    assert (tmp_path / "a" / "token_lengths.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(FileNotFoundError, match="asap_aes is not built in"):
        length_report.analyze_tfds_lengths("asap_aes", tmp_path / "tfds", tmp_path / "c")


def run_cli(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "launch.build_dataset", "--format=tfds",
                           *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def test_cli_builds_a_tfds_config_and_reports_its_lengths(tmp_path):
    inputs = write_inputs(tmp_path / "in")
    out, rep = tmp_path / "tfds", tmp_path / "report"
    proc = run_cli("--dataset=asap_traits", "--config=prompt_3", f"--manual_dir={inputs}",
                   f"--data_dir={out}", "--analyze_lengths", f"--output_dir={rep}",
                   "--max_tokens=20")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()  # tfds prints its own progress lines first
    k = next(i for i, line in enumerate(lines) if line.startswith("wrote "))
    assert lines[k] == (f"wrote {out / 'asap_traits' / 'prompt_3' / '1.0.0'} "
                        "(asap_traits/prompt_3/1.0.0): train 12, dev 4, test 4")
    assert lines[k + 1] == "  skipped: too few columns 1"
    t = lines.index(next(line for line in lines if line.startswith("token lengths")))
    assert lines[t + 1].split()[:2] == ["prompt", "count"]
    assert lines[t + 2].split()[:2] == ["3", "20"] and lines[t + 3].split()[:2] == ["all", "20"]
    assert lines[-1] == f"histogram: {rep / 'token_lengths.png'}"
    report = json.loads((rep / "token_lengths.json").read_text())
    assert report == tsv_report(inputs, tmp_path / "b", prompts=(3,))
    assert set(report["prompts"]) == {"3"} and report["all"]["count"] == 20


def test_cli_missing_manual_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = run_cli("--dataset=asap_aes", f"--manual_dir={tmp_path / 'empty'}",
                   f"--data_dir={tmp_path / 'tfds'}")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "empty manual directory" in err[0], proc.stderr
    assert "training_set_rel3.tsv" in err[0]
    assert "kaggle" in err[0].lower()
