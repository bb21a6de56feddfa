"""Pair2Score's data layer (aes_jax/data/pairs.py): the original's fold map and pair cache
files, read and written exactly, and the pair builder's promises, on synthetic essays."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from aes_jax.data import mtl_demo, pairs
from aes_jax.data.ell import EllEssay, assign_folds
from aes_jax.data.read_report import DataFormatError

REPO = Path(__file__).resolve().parents[1]
TRAIT = "grammar"


@pytest.fixture(scope="module")
def demo_csv(tmp_path_factory):
    return mtl_demo.write_demo_ell_csv(tmp_path_factory.mktemp("ell") / "train.csv", n=150)


@pytest.fixture(scope="module")
def essays(demo_csv):
    return pairs.read_essays_for_pairs(demo_csv)[0]


@pytest.fixture(scope="module")
def fold_map(essays):
    return pairs.make_fold_map(essays, TRAIT, seed=0)


@pytest.fixture(scope="module")
def small(essays, fold_map):
    return pairs.build_pair_cache(essays, fold_map, TRAIT, 1, "small")


@pytest.fixture(scope="module")
def large(essays, fold_map):
    return pairs.build_pair_cache(essays, fold_map, TRAIT, 1, "large")


# ----------------------------------------------------------------------------- fold maps


def test_fold_map_round_trip_in_the_original_layout(tmp_path, fold_map):
    path = pairs.write_fold_map(tmp_path / "fold_map.json", fold_map)
    text = path.read_text(encoding="utf-8")
    assert text == json.dumps(dict(sorted(fold_map.items())), indent=2)  # no final newline
    assert pairs.read_fold_map(path) == fold_map
    assert list(pairs.read_fold_map(path)) == sorted(fold_map)


@pytest.mark.parametrize("text, needles", [
    ('["A", "B"]', ["a JSON list", "expected an object"]),
    ('{"X1": "A", "X2": "F"}', ["entry 'X2'", "'F' is not a fold", "A, B, C, D, E"]),
    ('{"X1": "A", "X2": 3}', ["entry 'X2'", "3 is not a fold"]),
    ('{"X1": "A", "X1": "B"}', ["'X1' is listed twice"]),
    ('{"X1": "A",\n "X2": }', [":2:", "not JSON"]),
    ("{}", ["empty fold map"]),
])
def test_fold_map_errors_name_the_file_and_entry(tmp_path, text, needles):
    path = tmp_path / "fold_map.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataFormatError) as err:
        pairs.read_fold_map(path)
    assert str(path) in str(err.value)
    for needle in needles:
        assert needle in str(err.value)


def test_stratified_fold_map_is_balanced_and_seeded(essays, fold_map):
    sizes = Counter(fold_map.values())
    assert set(sizes) == set(pairs.FOLDS) and max(sizes.values()) - min(sizes.values()) <= 1
    levels = Counter(e.scores[TRAIT] for e in essays)
    for level, n in levels.items():
        folds = {fold_map[e.text_id] for e in essays if e.scores[TRAIT] == level}
        assert len(folds) == min(n, len(pairs.FOLDS)), level
    assert pairs.make_fold_map(list(reversed(essays)), TRAIT, seed=0) == fold_map
    assert pairs.make_fold_map(essays, TRAIT, seed=1) != fold_map


def test_fold_map_from_fold_files_and_runs(essays):
    folded = assign_folds(essays, num_folds=5, seed=3)
    fold_map = pairs.fold_map_from_files(folded)
    assert all(fold_map[e.text_id] == pairs.FOLDS[e.fold] for e in folded)
    with pytest.raises(DataFormatError, match="has fold None"):
        pairs.fold_map_from_files(essays)
    assert [pairs.run_setup(r) for r in range(1, 6)] == [
        ("E", 36), ("A", 42), ("B", 48), ("C", 54), ("D", 60)]
    assert pairs.pair_folds("E") == tuple("ABCD") and pairs.pair_folds("A") == tuple("BCDE")
    with pytest.raises(ValueError, match="run 6: expected one of 1, 2, 3, 4, 5"):
        pairs.run_setup(6)


# ----------------------------------------------------------------------------- cache files


def test_cache_round_trip_is_exact(tmp_path, small):
    jsonl, meta = pairs.write_pair_cache(tmp_path / "a", small)
    assert (jsonl.name, meta.name) == ("run1_grammar.jsonl", "run1_grammar_meta.json")
    assert pairs.cache_paths(tmp_path / "a", 1, TRAIT) == (jsonl, meta)
    first = json.loads(jsonl.read_text().splitlines()[0])
    assert list(first) == list(pairs.PAIR_KEYS)
    read = pairs.read_pair_cache(jsonl)
    assert read.pairs == small.pairs and read.meta == small.meta
    again = pairs.write_pair_cache(tmp_path / "b", read)
    for written, rewritten in zip((jsonl, meta), again):
        assert written.read_bytes() == rewritten.read_bytes()
    assert [p.index for p in read.split("val")] == list(range(len(read.split("val"))))


def _rewrite(jsonl: Path, n: int, **changes) -> Path:
    lines = jsonl.read_text().splitlines(keepends=True)
    rec = json.loads(lines[n - 1])
    rec.update(changes)
    lines[n - 1] = json.dumps(rec) + "\n"
    jsonl.write_text("".join(lines))
    return jsonl


def test_reader_takes_either_order(tmp_path, small):
    jsonl, _ = pairs.write_pair_cache(tmp_path, small)
    p = small.pairs[0]
    _rewrite(jsonl, 1, a=p.b, b=p.a, da=p.db, db=p.da, y=0)
    flipped = pairs.read_pair_cache(jsonl).pairs[0]
    assert (flipped.a, flipped.b, flipped.y) == (p.b, p.a, 0)


def test_reader_errors_name_file_line_and_expectation(tmp_path, small):
    train, val = small.split("train"), small.split("val")
    p = train[2]
    cases = [
        (dict(y=2), "y 2; expected 1 (a is better) or 0"),
        (dict(y=0), f"y 0 but da {p.da}, db {p.db}; expected y 1"),
        (dict(d=p.d + 0.5), "expected d == |da - db|"),
        (dict(b=val[0].a), f"b {val[0].a} is in the val split"),
        (dict(split="dev"), "split 'dev'; expected one of train, val, test"),
        (dict(trait="syntax"), "expected run 1, trait 'grammar'"),
        (dict(da="3.0"), "da '3.0'; expected a number"),
    ]
    for changes, needle in cases:
        jsonl, _ = pairs.write_pair_cache(tmp_path, small)
        _rewrite(jsonl, 3, **changes)
        with pytest.raises(DataFormatError) as err:
            pairs.read_pair_cache(jsonl)
        assert f"{jsonl}:3: " in str(err.value) and needle in str(err.value), str(err.value)
    jsonl, meta_path = pairs.write_pair_cache(tmp_path, small)
    jsonl.write_text(jsonl.read_text() + '{"run": 1, "trait"\n')
    with pytest.raises(DataFormatError, match=rf"{len(small.pairs) + 1}: not JSON"):
        pairs.read_pair_cache(jsonl)
    meta = json.loads(meta_path.read_text())
    meta["splits"]["test"].append(meta["splits"]["train"][0])
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataFormatError, match="in both the train and test splits"):
        pairs.read_pair_cache(jsonl)
    meta_path.unlink()
    with pytest.raises(FileNotFoundError, match="run1_grammar_meta.json"):
        pairs.read_pair_cache(jsonl)


# ----------------------------------------------------------------------------- builder


def _unordered(pairs_):
    return [(p.split, frozenset((p.a, p.b))) for p in pairs_]


def test_builder_is_deterministic_per_run(essays, fold_map, small):
    again = pairs.build_pair_cache(list(reversed(essays)), fold_map, TRAIT, 1, "small")
    assert again.pairs == small.pairs and again.meta == small.meta
    other = pairs.build_pair_cache(essays, fold_map, TRAIT, 2, "small")
    assert other.meta["seed"] == 42 and other.meta["held_out_fold"] == "A"
    assert _unordered(other.pairs) != _unordered(small.pairs)


@pytest.mark.parametrize("cache_name", ["small", "large"])
def test_builder_promises(request, fold_map, cache_name):
    cache = request.getfixturevalue(cache_name)
    meta, cap, gap = cache.meta, cache.meta["soft_cap"], cache.meta["min_score_gap"]
    owner = {t: s for s, ids in meta["splits"].items() for t in ids}
    assert len(owner) == sum(len(ids) for ids in meta["splits"].values())  # disjoint
    assert all(fold_map[t] != "E" for t in owner)  # run 1 holds out E
    assert all(owner[p.a] == p.split == owner[p.b] for p in cache.pairs)
    unordered = _unordered(cache.pairs)
    assert len(set(unordered)) == len(unordered)
    assert all(p.y == 1 and p.da >= p.db and p.d == p.da - p.db for p in cache.pairs)
    for split in pairs.SPLITS:
        usage = Counter({t: 0 for t in meta["splits"][split]})
        for p in cache.split(split):
            usage[p.a] += 1
            usage[p.b] += 1
        assert min(usage.values()) >= 1 and max(usage.values()) <= cap, split
        stats = meta["stats"][split]
        below = sum(p.d < gap for p in cache.split(split))
        assert stats["fallbacks"] == below and stats["pairs"] == len(cache.split(split))
        assert stats["usage_max"] == max(usage.values())
        assert sum(stats["gap_histogram"].values()) == stats["pairs"]
    if cache_name == "large":  # every essay outside the held-out fold is in a pool
        assert len(owner) == sum(fold != "E" for fold in fold_map.values())
        assert meta["stats"]["train"]["usage_mean"] >= 4.5


def test_small_keeps_half_of_each_large_pool(small, large):
    for split in pairs.SPLITS:
        part, whole = set(small.meta["splits"][split]), set(large.meta["splits"][split])
        assert part <= whole and len(part) == max(2, round(len(whole) / 2))


def test_mini_subsamples_the_small_pairs(essays, fold_map, small):
    mini = pairs.build_pair_cache(essays, fold_map, TRAIT, 1, "mini", mini_sizes=(30, 4, 4))
    assert [len(mini.split(s)) for s in pairs.SPLITS] == [30, 4, 4]
    assert set(_unordered(mini.pairs)) <= set(_unordered(small.pairs))
    assert mini.meta["splits"] == small.meta["splits"] and mini.meta["size"] == "mini"
    default = pairs.build_pair_cache(essays, fold_map, TRAIT, 1, "mini")
    assert len(default.split("train")) == min(100, len(small.split("train")))
    assert len(default.split("test")) == len(small.split("test")) < 200
    assert any("test has" in note and "fewer than the 200" in note
               for note in default.meta["stats"]["notes"])


def test_fallbacks_only_when_no_partner_has_the_gap():
    # Scores 3.0 and 3.5 only: no pair reaches a gap of 1, so coverage falls back to 0.5.
    essays = [EllEssay(f"ID{k:03d}", "text", {TRAIT: 3.0 + 0.5 * (k % 2)}, "mem", k)
              for k in range(60)]
    fold_map = {e.text_id: pairs.FOLDS[k % 4] for k, e in enumerate(essays)}  # none in E
    cache = pairs.build_pair_cache(essays, fold_map, TRAIT, 1, "large")
    train = cache.split("train")
    assert train and all(p.d == 0.5 for p in train)
    assert cache.meta["stats"]["train"]["fallbacks"] == len(train)
    assert cache.meta["stats"]["train"]["usage_min"] == 1


def test_builder_refuses_bad_input(essays, fold_map):
    with pytest.raises(DataFormatError, match="1 of 150 essays have no fold"):
        pairs.build_pair_cache(essays, dict(list(fold_map.items())[1:]), TRAIT, 1)
    with pytest.raises(ValueError, match="size 'huge'"):
        pairs.build_pair_cache(essays, fold_map, TRAIT, 1, "huge")
    with pytest.raises(ValueError, match="1 <= target_usage <= soft_cap"):
        pairs.build_pair_cache(essays, fold_map, TRAIT, 1, target_usage=7, soft_cap=6)


def test_read_essays_reports_skipped_rows(tmp_path, demo_csv):
    bad = tmp_path / "train.csv"
    bad.write_text(demo_csv.read_text() + "BAD1,some text,3,3,3,3,9,3\n")
    essays, report = pairs.read_essays_for_pairs(bad)
    assert len(essays) == 150 and report["skipped"] == {"bad score": 1}
    assert report["layouts"] == ["kaggle"]


def test_stats_lines_summarise_each_split(small):
    lines = pairs.stats_lines(small)
    assert "held-out fold E" in lines[0] and "seed 36" in lines[0]
    assert any(line.strip().startswith("train:") and "pairs" in line for line in lines)
    bare = pairs.PairCache(small.pairs, {k: v for k, v in small.meta.items() if k != "stats"})
    assert pairs.stats_lines(bare)[1:] == lines[1:]  # recomputed from the pairs


# ----------------------------------------------------------------------------- launcher


def _launch(*args):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "launch.build_pairs", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


def test_launcher_writes_the_cache_and_fold_map(tmp_path, demo_csv, small):
    out = tmp_path / "pairs"
    proc = _launch(f"--input={demo_csv}", "--trait=grammar", "--run=1", "--size=small",
                   f"--output_dir={out}")
    assert proc.returncode == 0, proc.stderr
    assert "did not exist; wrote it" in proc.stdout and "wrote " in proc.stdout
    assert pairs.read_fold_map(out / "fold_map.json") == pairs.make_fold_map(
        pairs.read_essays_for_pairs(demo_csv)[0], TRAIT, 0)
    read = pairs.read_pair_cache(out / "run1_grammar.jsonl")
    assert read.pairs == small.pairs
    proc = _launch(f"--input={demo_csv}", "--trait=grammer", f"--output_dir={out}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "--trait=grammer" in lines[0] and "did you mean grammar" in lines[0]
