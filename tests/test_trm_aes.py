"""TRM-AES end to end on the synthetic demo corpus: train, evaluate, score, export."""

import csv
import dataclasses
import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from sklearn.metrics import cohen_kappa_score

from configs.trm_aes import get_config
from tests.train_utils import REPO, env, read_metrics, run_train

STEPS = 120


def untrained_mean_qwk(workdir) -> float:
    from aes_jax.tasks.trm_aes import TRMAesTask

    task = TRMAesTask(get_config("demo"), workdir)
    task.prepare_data()
    trainable, frozen = task.init(jax.random.PRNGKey(0))
    outputs = [jax.device_get(task.eval_step(trainable, frozen, b))
               for b in task.eval_batches(32, 0, 1)]
    return task.summarize(outputs)["mean_qwk"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("trm_demo")
    proc = run_train(run, f"--config.total_steps={STEPS}", f"--config.eval_every={STEPS}",
                     f"--config.checkpoint_every={STEPS}", config="configs/trm_aes.py:demo")
    return run, proc


def test_demo_training_beats_untrained_model(trained, tmp_path):
    run, proc = trained
    final = read_metrics(run)[-1]
    before = untrained_mean_qwk(tmp_path)
    assert final["step"] == STEPS and "eval_qwk_p3" in final and "eval_qwk_p1" in final
    assert final["eval_mean_qwk"] > before + 0.2, (before, final["eval_mean_qwk"])
    assert "eval_mean_qwk" in proc.stdout and (run / "data" / "manifest.json").is_file()


def cli(*args):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_evaluate_writes_metrics_predictions_and_plots(trained):
    run, _ = trained
    cli("launch.evaluate", f"--run={run}", "--split=test")
    result = json.loads((run / "eval" / "metrics_test.json").read_text())
    manifest = json.loads((run / "data" / "manifest.json").read_text())
    with open(run / "eval" / "predictions_test.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == manifest["splits"]["test"]
    assert {int(r["prompt"]) for r in rows} == {1, 3, 4}
    for r in rows:  # rounded prediction is the clipped rounding of the raw one
        lo, hi = manifest["score_ranges"][r["prompt"]]
        assert int(r["predicted"]) == min(max(int(np.floor(float(r["predicted_raw"]) + 0.5)), lo), hi)
    assert result["step"] == STEPS
    # the reported metrics are those of the written predictions, recomputed here
    gold, rounded, raw, prompt = (np.array([float(r[k]) for r in rows]) for k in
                                  ("gold", "predicted", "predicted_raw", "prompt"))
    qwks = []
    for p in (1, 3, 4):
        sel = prompt == p
        lo, hi = manifest["score_ranges"][str(p)]
        qwks.append(cohen_kappa_score(gold[sel], rounded[sel], weights="quadratic",
                                      labels=list(range(lo, hi + 1))))
        np.testing.assert_allclose(result[f"qwk_p{p}"], qwks[-1], atol=1e-9)
        np.testing.assert_allclose(result[f"rmse_p{p}"],
                                   np.sqrt(np.mean((raw[sel] - gold[sel]) ** 2)), atol=1e-3)
    np.testing.assert_allclose(result["mean_qwk"], np.mean(qwks), atol=1e-9)
    for name in ("confusion_test_p1.png", "confusion_test_p3.png", "learning_curve.png"):
        assert (run / "eval" / name).stat().st_size > 1000


def test_score_new_essays(trained, tmp_path):
    from aes_jax.data.asap_demo import write_demo_tsv

    run, _ = trained
    essays = write_demo_tsv(tmp_path / "new.tsv", seed=3)
    cli("launch.score", f"--ckpt={run}", str(essays), f"--out={tmp_path / 'scores.csv'}")
    with open(tmp_path / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 360 and set(rows[0]) == {"essay_id", "prompt", "predicted_raw", "predicted"}
    # a split of the run's dataset: gold known, so a gold column and per-prompt QWK
    proc = cli("launch.score", f"--ckpt={run}", "--split=test", f"--out={tmp_path / 'test.csv'}")
    with open(tmp_path / "test.csv") as f:
        rows = list(csv.DictReader(f))
    manifest = json.loads((run / "data" / "manifest.json").read_text())
    assert len(rows) == manifest["splits"]["test"] and "gold" in rows[0]
    report = json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.rindex("}") + 1])
    assert set(report["per_prompt"]) == {"1", "3", "4"}
    for p, rep in report["per_prompt"].items():
        sel = [r for r in rows if r["prompt"] == p]
        lo, hi = manifest["score_ranges"][p]
        want = cohen_kappa_score([int(r["gold"]) for r in sel], [int(r["predicted"]) for r in sel],
                                 weights="quadratic", labels=list(range(lo, hi + 1)))
        np.testing.assert_allclose(rep["qwk"], want, atol=1e-9)
    bad = tmp_path / "bad.tsv"
    bad.write_text("essay_id\tessay\n1\ttext\n")
    proc = subprocess.run([sys.executable, "-m", "launch.score", f"--ckpt={run}", str(bad)],
                          cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "header lacks column(s) ['essay_set']" in proc.stderr


def test_score_reads_the_issue_file_and_accounts_for_every_row(trained, tmp_path):
    """Issue 11's file: 11 opens a quote (must not swallow 12-13), 14 has a tab, 15 is
    empty (skipped, reported), 16 is prompt 3, which the demo trains (scored)."""
    from tests.test_score_input import SIX_ROWS

    run, _ = trained
    essays = tmp_path / "essays.tsv"
    essays.write_text(SIX_ROWS)
    proc = cli("launch.score", f"--ckpt={run}", str(essays), f"--out={tmp_path / 'six.csv'}")
    with open(tmp_path / "six.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["essay_id"]) for r in rows] == [11, 12, 13, 14, 16]
    assert [int(r["prompt"]) for r in rows] == [1, 1, 1, 1, 3]
    report, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index("{"):])
    assert report["num_essays"] == 5 and report["input"]["rows"] == 6
    assert report["input"]["skipped"] == {"empty essay": 1}
    assert report["input"]["skip_examples"] == [f"{essays}:6: empty essay: essay 15 has no text"]
    assert f"read {essays}: 6 rows, 5 essays" in proc.stdout
    assert "skipped rows: empty essay 1" in proc.stdout and "scored 5 essays" in proc.stdout
    strict = subprocess.run([sys.executable, "-m", "launch.score", f"--ckpt={run}", str(essays),
                             "--strict", f"--out={tmp_path / 'strict.csv'}"], cwd=REPO,
                            env=env(), capture_output=True, text=True, timeout=300)
    assert strict.returncode != 0 and not (tmp_path / "strict.csv").exists()
    # one line naming file:line, however the launcher words its error prefix
    assert f"{essays}:6: empty essay: essay 15 has no text" in \
        strict.stderr.strip().splitlines()[-1]


def test_read_essays_skips_prompts_the_model_was_not_trained_on(trained, tmp_path):
    from aes_jax.tasks.trm_aes import TRMAesTask

    run, _ = trained
    config = get_config("demo")
    config.data.dataset_dir = str(run / "data")
    task = TRMAesTask(config, run)
    path = tmp_path / "essays.tsv"
    path.write_text("essay_id\tessay_set\tessay\n1\t1\tOne.\n2\t2\tTwo.\n3\t4\tFour.\n")
    read = task.read_essays(path, limit=1)
    assert [int(e["essay_id"]) for e in read.essays] == [1]
    assert read.report["skipped"] == {"untrained prompt": 1}
    assert read.report["not_scored_beyond_limit"] == 1  # essay 3: read, not scored
    assert "prompt 2 is not one of the model's prompts [1, 3, 4]" in read.report["skip_examples"][0]


def test_rmse_is_on_the_raw_unclipped_prediction(trained):
    """A prediction past the top of the range counts fully in RMSE; QWK clips it."""
    from aes_jax.tasks.trm_aes import TRMAesTask

    run, _ = trained
    config = get_config("demo")
    config.data.dataset_dir = str(run / "data")
    task = TRMAesTask(config, run)
    # prompt 3 (0-3): normalised 1.2 -> 3.6 raw, 3 rounded; gold 2 and 3
    outputs = [{"pred": np.array([[1.2], [0.0]]), "steps": np.array([2, 2]),
                "prompt": np.array([3, 3]), "score": np.array([2, 3]),
                "essay_id": np.array([1, 2]), "weight": np.array([1.0, 1.0]),
                "trait_scores": np.zeros((2, 0), np.int32),
                "trait_mask": np.zeros((2, 0), bool)}]
    task.options = dataclasses.replace(task.options, train_traits=False)
    rows = task.predictions(outputs)
    np.testing.assert_allclose(rows["pred_raw"], [3.6, 0.0])
    np.testing.assert_array_equal(rows["pred"], [3, 0])
    summary = task.summarize(outputs)
    np.testing.assert_allclose(summary["rmse_p3"], np.sqrt((1.6 ** 2 + 3 ** 2) / 2))


def test_exported_model_runs_in_torch_reference(trained, tmp_path):
    from aes_jax.interop.torch_ref.trm import TorchTRM, load_jax_params
    from aes_jax.models.trm import TRM, TRMConfig, start_states

    run, _ = trained
    cli("launch.export", f"--run={run}", f"--out={tmp_path / 'export'}")
    meta = json.loads((tmp_path / "export" / "trm_config.json").read_text())
    cfg = TRMConfig(**meta["model"])
    flat = load_file(tmp_path / "export" / "model.safetensors")
    params: dict = {}
    np.testing.assert_array_equal(flat.pop("h_init"), start_states(cfg)[0])
    np.testing.assert_array_equal(flat.pop("l_init"), start_states(cfg)[1])
    for name, value in flat.items():
        node = params
        *parents, leaf = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    ids = np.random.default_rng(0).integers(1000, 5000, (2, 16))
    mask = np.ones((2, 16), bool)
    carry = TRM(cfg).apply({"params": params}, ids, method=TRM.initial_carry)
    jax_scores = TRM(cfg).apply({"params": params}, carry, ids, mask).scores
    model = load_jax_params(TorchTRM(cfg), params).eval()
    with torch.no_grad():
        _, torch_scores, _ = model(model.initial_carry(torch.as_tensor(ids)),
                                   torch.as_tensor(ids), torch.as_tensor(mask))
    np.testing.assert_allclose(np.asarray(jax_scores), torch_scores.numpy(), atol=1e-5)


def test_traits_are_trained_and_reported(tmp_path):
    from aes_jax.data import asap_records
    from tests.test_asap import write_traits_splits

    write_traits_splits(tmp_path / "in")
    asap_records.build_dataset(asap_records.BuildOptions(inputs=[str(tmp_path / "in")],
                                         output_dir=tmp_path / "ds", max_tokens=32))
    run = tmp_path / "run"
    # The demo config's data.max_tokens=128 is not the dataset's 32: refused, not replaced.
    refused = subprocess.run(
        [sys.executable, "-m", "launch.train", "--config=configs/trm_aes.py:demo",
         f"--workdir={run}", f"--config.data.dataset_dir={tmp_path / 'ds'}"],
        cwd=REPO, env=env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and not run.exists(), refused.stderr[-2000:]
    assert ("data.max_tokens=128, but" in refused.stderr and "built with max_tokens=32"
            in refused.stderr and "--config.data.max_tokens=32" in refused.stderr)
    run_train(run, "--config.total_steps=4", "--config.eval_every=4",
              "--config.global_batch_size=4", "--config.eval_batch_size=4",
              "--config.data.max_tokens=32",
              f"--config.data.dataset_dir={tmp_path / 'ds'}", config="configs/trm_aes.py:demo")
    final = read_metrics(run)[-1]
    for key in ("eval_qwk_p3", "eval_trait_mean_qwk", "eval_qwk_content", "eval_qwk_narrativity"):
        assert key in final, sorted(final)
    cli("launch.evaluate", f"--run={run}", "--split=test")
    state_out = json.loads((run / "eval" / "metrics_test.json").read_text())
    assert "qwk_prompt_adherence" in state_out
