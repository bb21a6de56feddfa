"""Self-consistency voting and analysis over a sample bank (aes_jax.eval.self_consistency),
and the `launch.self_consistency analyze` CLI. Expected votes are worked out by hand;
expected kappas come from scikit-learn as an independent reference."""

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from aes_jax.eval import self_consistency as sc

REPO = Path(__file__).resolve().parents[1]
nan = np.nan


# --------------------------------------------------------------------------- votes


@pytest.mark.parametrize("samples, expected", [
    ([3, 3, 4], 3),                 # clear majority
    ([4, 2, 4, 4, 2], 4),
    ([5], 5),
    ([4, 3, 3, 4], 3),              # tie -> lower
    ([2, 5, 5, 2, 1], 2),
    ([1, 2, 3], 1),                 # three-way tie -> lowest
    ([nan, 4, nan, 4, 3], 4),       # nan does not vote
    ([nan, nan, 2, 3], 2),          # tie among the valid ones, nan ignored
])
def test_majority_vote(samples, expected):
    assert sc.majority_vote(np.array(samples, dtype=float), fallback=0) == expected


@pytest.mark.parametrize("samples, expected", [
    ([2, 3], 3),                    # mean 2.5 rounds half up
    ([3, 4], 4),                    # 3.5 -> 4 (not half-to-even)
    ([1, 2, 2], 2),                 # 1.67 -> 2
    ([1, 1, 2], 1),                 # 1.33 -> 1
    ([nan, 2, nan, 3], 3),          # nan excluded: mean 2.5
    ([4], 4),
])
def test_average_vote(samples, expected):
    assert sc.average_vote(np.array(samples, dtype=float), fallback=0) == expected


def test_all_nan_gives_fallback():
    assert sc.majority_vote(np.array([nan, nan]), fallback=3) == 3
    assert sc.average_vote(np.array([nan]), fallback=2) == 2


# [essay, sample, trait]; fallbacks (2, 3). Votes worked out by hand below.
VOTE_SAMPLES = np.array([
    [[3, nan], [4, nan], [4, nan], [3, nan]],   # e0: A ties 3/4; B never parsed
    [[2, 1], [nan, 2], [5, 2], [5, 1]],         # e1: A 5 twice; B ties 1/2
    [[nan, 4], [1, nan], [1, nan], [4, nan]],   # e2: A 1 twice; B one vote
], dtype=float)
VOTES = {  # (method, m) -> [essay][trait]
    ("majority", 1): [[3, 3], [2, 1], [2, 4]],   # e2 A: its one sample failed -> 2
    ("average", 1): [[3, 3], [2, 1], [2, 4]],
    ("majority", 2): [[3, 3], [2, 1], [1, 4]],   # ties 3/4 and 1/2 go low
    ("average", 2): [[4, 3], [2, 2], [1, 4]],    # means 3.5 and 1.5 round up
    ("majority", 4): [[3, 3], [5, 1], [1, 4]],
    ("average", 4): [[4, 3], [4, 2], [2, 4]],    # e1 A: 12/3 = 4; e2 A: 6/3 = 2
}


@pytest.mark.parametrize("method, m", VOTES)
def test_vote_hand_worked_over_the_first_m_samples(method, m):
    got = sc.vote(VOTE_SAMPLES, m, method, [2, 3])
    assert got.shape == (3, 2) and got.dtype == np.int64
    np.testing.assert_array_equal(got, VOTES[(method, m)])


def test_vote_bad_arguments():
    with pytest.raises(ValueError, match="m = 5"):
        sc.vote(VOTE_SAMPLES, 5, "majority", [2, 3])
    with pytest.raises(ValueError, match="unknown vote method"):
        sc.vote(VOTE_SAMPLES, 1, "median", [2, 3])
    with pytest.raises(ValueError, match="1 fallback"):
        sc.vote(VOTE_SAMPLES, 1, "majority", [2])


# --------------------------------------------------------------------------- bank + analyze


def make_bank() -> dict:
    """Trait A on [1, 4] with hand-worked votes, trait B on [0, 3] always sampled right.
    e6 has no gold (excluded from QWK) and one extra sample (m capped at 3). The
    fallbacks are what `run` records: the training-mode digits (here chosen by hand)."""
    a_gold = [1, 2, 3, 4, 2, 3]
    a_samples = [[2, 1, 1], [2, 3, 3], [None, 3, 4], [4, 4, None], [1, 2, 2],
                 [None, None, None]]
    b_gold = [0, 1, 2, 3, 3, 1]
    essays = [{"essay_id": f"e{i}", "gold": [a_gold[i], b_gold[i]],
               "samples": [[a, b_gold[i]] for a in a_samples[i]],
               "texts": [f"{a} {b_gold[i]}" for a in a_samples[i]]} for i in range(6)]
    essays.append({"essay_id": "e6", "gold": None,
                   "samples": [[1, 0], [1, 0], [4, 3], [4, 3]]})
    return {"version": sc.BANK_VERSION, "traits": ["A", "B"],
            "digit_ranges": {"A": [1, 4], "B": [0, 3]}, "fallbacks": {"A": 2, "B": 1},
            "sampling": {"temperature": 1.0, "top_k": 0, "seed": 0}, "essays": essays}


A_GOLD = [1, 2, 3, 4, 2, 3]
# Hand-worked votes for trait A (the bank's fallback 2 where all samples failed):
A_VOTES = {("majority", 1): [2, 2, 2, 4, 1, 2], ("average", 1): [2, 2, 2, 4, 1, 2],
           ("majority", 3): [1, 3, 3, 4, 2, 2],   # e2 ties 3/4 -> 3
           ("average", 3): [1, 3, 4, 4, 2, 2]}    # e2 mean 3.5 -> 4


def sk_qwk(gold, pred, lo, hi) -> float:
    return float(cohen_kappa_score(gold, pred, weights="quadratic",
                                   labels=list(range(lo, hi + 1))))


def test_analyze_matches_sklearn_on_hand_worked_votes():
    result = sc.analyze(make_bank(), ms=[3, 1])
    assert result["ms"] == [1, 3]
    assert result["num_essays"] == 7 and result["max_samples"] == 3
    assert result["fallbacks"] == {"A": 2, "B": 1}
    assert result["parse_failures"] == [2, 5] and result["fallbacks_used"] == [2, 1]
    assert "limited to the minimum, 3" in result["note"]
    assert result["num_gold"] == {"A": 6, "B": 6}
    for method in ("majority", "average"):
        r = result["methods"][method]
        for i, m in enumerate([1, 3]):
            want_a = sk_qwk(A_GOLD, A_VOTES[(method, m)], 1, 4)
            assert r["per_trait"]["A"][i] == pytest.approx(want_a, abs=1e-12)
            assert r["per_trait"]["B"][i] == pytest.approx(1.0)
            assert r["overall"][i] == pytest.approx((want_a + 1.0) / 2, abs=1e-12)
    # Voting helps here: the m=3 majority is closer to gold than one sample.
    majority = result["methods"]["majority"]["overall"]
    assert majority[1] > majority[0]


def test_samples_equal_to_gold_give_qwk_one_and_default_ms():
    bank = make_bank()
    bank["essays"] = bank["essays"][:6]
    for e in bank["essays"]:
        e["samples"] = [list(e["gold"])] * 5
        del e["texts"]
    result = sc.analyze(bank)
    assert result["ms"] == [1, 2, 4, 5]
    for r in result["methods"].values():
        assert r["overall"] == pytest.approx([1.0] * 4)
    assert result["parse_failures"] == [0, 0, 0, 0]


def test_fallbacks_come_from_the_bank_or_an_override():
    want = sk_qwk(A_GOLD, [2, 2, 1, 4, 1, 1], 1, 4)  # m=1: e2, e5 fall back to 1
    assert want != pytest.approx(sk_qwk(A_GOLD, A_VOTES[("majority", 1)], 1, 4))
    bank = make_bank()
    bank["fallbacks"]["A"] = 1  # as `run` records a training-mode digit of 1
    result = sc.analyze(bank, ms=[1], methods=["majority"])
    assert result["fallbacks"] == {"A": 1, "B": 1} and "the bank's" in result["note"]
    assert result["methods"]["majority"]["per_trait"]["A"][0] == pytest.approx(want)
    result = sc.analyze(make_bank(), ms=[1], methods=["majority"], fallbacks={"A": 1})
    assert result["fallbacks"] == {"A": 1, "B": 1} and "given for ['A']" in result["note"]
    assert result["methods"]["majority"]["per_trait"]["A"][0] == pytest.approx(want)
    assert list(result["methods"]) == ["majority"]
    # A bank without recorded fallbacks needs them for every trait, never a made-up one.
    del bank["fallbacks"]
    with pytest.raises(ValueError, match=r"records no fallback digits.*\['B'\]"):
        sc.analyze(bank, fallbacks={"A": 1})
    assert sc.analyze(bank, ms=[1], fallbacks={"A": 1, "B": 1})["fallbacks"] == {"A": 1, "B": 1}
    bank["fallbacks"] = {"A": 1}
    with pytest.raises(ValueError, match=r"fallbacks name no digit for \['B'\]"):
        sc.validate_bank(bank)


def test_fallback_bad_arguments():
    with pytest.raises(ValueError, match=r"fallback for 'A' is 9"):
        sc.analyze(make_bank(), fallbacks={"A": 9})
    with pytest.raises(ValueError, match="m = 4 exceeds the 3 samples"):
        sc.analyze(make_bank(), ms=[1, 4])


def test_save_load_round_trip_and_reports(tmp_path):
    path = sc.save_bank(make_bank(), tmp_path / "sub" / "bank.json")
    assert sc.load_bank(path) == make_bank()
    result = sc.analyze(sc.load_bank(path), ms=[1, 2, 3])
    table = sc.format_table(result)
    lines = table.splitlines()
    assert "majority vote, QWK per trait" in table and "average" in lines[2]
    assert any(line.split()[:2] == ["3", "5"] for line in lines)  # m=3 row: 5 parse failures
    paths = sc.write_analysis(result, tmp_path / "out")
    assert [p.name for p in paths] == ["analysis.json", "analysis.txt", "qwk_vs_m.png"]
    assert json.loads(paths[0].read_text()) == result
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write(tmp_path, bank) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bank))
    return path


def test_load_bank_refuses_bad_version(tmp_path):
    bank = make_bank()
    bank["version"] = "aes_jax.sample_bank/0"
    path = _write(tmp_path, bank)
    with pytest.raises(ValueError, match="version") as err:
        sc.load_bank(path)
    assert str(path) in str(err.value) and sc.BANK_VERSION in str(err.value)


def test_load_bank_refuses_digit_out_of_range(tmp_path):
    bank = make_bank()
    bank["essays"][2]["samples"][1] = [5, 2]
    path = _write(tmp_path, bank)
    with pytest.raises(ValueError) as err:
        sc.load_bank(path)
    msg = str(err.value)
    assert str(path) in msg and "essay 2 (id 'e2')" in msg and "sample 1" in msg
    assert "'A' is 5" in msg and "[1, 4]" in msg


def test_load_bank_refuses_wrong_sample_length_and_bad_gold(tmp_path):
    bank = make_bank()
    bank["essays"][4]["samples"][0] = [1, 2, 3]
    with pytest.raises(ValueError, match=r"essay 4 \(id 'e4'\): sample 0 has 3 entries, "
                                         r"expected a list of 2"):
        sc.load_bank(_write(tmp_path, bank))
    bank = make_bank()
    bank["essays"][1]["gold"] = [2, 7]
    with pytest.raises(ValueError, match=r"essay 1 \(id 'e1'\): gold, trait 'B' is 7"):
        sc.load_bank(_write(tmp_path, bank))
    bank = make_bank()
    bank["essays"][3]["texts"] = ["only one"]
    with pytest.raises(ValueError, match=r"essay 3 \(id 'e3'\): 'texts' has 1 entries"):
        sc.load_bank(_write(tmp_path, bank))
    bank = make_bank()
    bank["essays"][5]["essay_id"] = "e0"
    with pytest.raises(ValueError, match="duplicate essay_id"):
        sc.load_bank(_write(tmp_path, bank))
    broken = copy.deepcopy(make_bank())
    broken["essays"][0]["samples"][0] = [1]
    with pytest.raises(ValueError, match="expected a list of 2"):  # validated before writing
        sc.save_bank(broken, tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()


# --------------------------------------------------------------------------- CLI


def cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "launch.self_consistency", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def test_cli_analyze_end_to_end(tmp_path):
    bank = make_bank()
    del bank["fallbacks"]  # a bank from elsewhere: the digits come from --fallbacks
    bank = sc.save_bank(bank, tmp_path / "sample_bank_test.json")
    proc = cli("analyze", f"--bank={bank}", "--ms=1,3", "--fallbacks=A=3,B=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "sample_bank_test_analysis"
    for name in ("analysis.json", "analysis.txt", "qwk_vs_m.png"):
        assert (out / name).is_file() and f"wrote {out / name}" in proc.stdout
    result = json.loads((out / "analysis.json").read_text())
    assert result["ms"] == [1, 3] and set(result["methods"]) == {"majority", "average"}
    assert result["fallbacks"] == {"A": 3, "B": 0}
    assert "majority vote, QWK per trait" in proc.stdout


def test_cli_rejects_unknown_subcommand_and_a_run_dir_without_config(tmp_path):
    proc = cli("score")
    assert proc.returncode != 0 and "['analyze', 'run']" in proc.stderr
    proc = cli("run", f"--run={tmp_path}")
    assert proc.returncode != 0 and "has no config.json" in proc.stderr
