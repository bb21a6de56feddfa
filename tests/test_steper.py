"""StepER's training: per-type losses against a plain loop, the difficulty-aware weighting
(optimum s_j = log L_j; an absent type is left alone), fixed weights, and the :tiny run
(demo records built first; every type's loss and sigma logged)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_jax import tasks
from aes_jax.tasks.steper import SteperOptions, combine, type_losses
from aes_jax.train import loop
from configs import steper


def test_type_losses_equal_a_loop():
    g = np.random.default_rng(0)
    nll = g.uniform(0, 3, size=(5, 7)).astype(np.float32)
    mask = (g.uniform(size=(5, 7)) > 0.3).astype(np.float32)
    types = np.array([0, 2, 2, 0, 2])
    losses, present = type_losses(jnp.asarray(nll), jnp.asarray(mask), jnp.asarray(types))
    for j in (0, 2):
        rows = types == j
        np.testing.assert_allclose(losses[j], (nll[rows] * mask[rows]).sum() / mask[rows].sum(),
                                   rtol=1e-6)
    assert list(np.asarray(present)) == [True, False, True] and float(losses[1]) == 0.0


def test_uncertainty_optimum_is_log_loss_and_absent_types_get_no_gradient():
    losses = jnp.array([0.5, 2.0, 4.0])
    present = jnp.array([True, True, True])
    grad = jax.jit(jax.grad(lambda s: combine(losses, present, s, ())))
    s = jnp.zeros(3)
    for _ in range(2000):
        s = s - 0.1 * grad(s)
    np.testing.assert_allclose(s, np.log(losses), atol=1e-4)
    np.testing.assert_allclose(grad(jnp.log(losses)), 0.0, atol=1e-6)
    absent = jnp.array([True, False, True])
    assert float(jax.grad(lambda s: combine(losses, absent, s, ()))(s)[1]) == 0.0
    # value: 0.5 exp(-s) L + 0.5 s over the present types only
    value = combine(losses, absent, jnp.array([0.2, 9.0, -0.3]), ())
    want = 0.5 * np.exp(-0.2) * 0.5 + 0.1 + 0.5 * np.exp(0.3) * 4.0 - 0.15
    np.testing.assert_allclose(value, want, rtol=1e-6)
    np.testing.assert_allclose(combine(losses, absent, None, (1.0, 5.0, 0.5)), 0.5 + 2.0)
    with pytest.raises(ValueError, match="fixed_weights"):
        SteperOptions(fixed_weights=(1.0, 1.0))


def test_tiny_run_logs_each_step_type(tmp_path):
    c = steper.get_config("tiny")
    c.async_checkpointing = False
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "config.json").write_text(c.to_json())  # as launch.train writes it
    task = tasks.build(c, workdir)
    task.prepare_data()
    manifest = json.loads((workdir / "data" / "manifest.json").read_text())
    assert manifest["teacher"] == "oracle" and manifest["splits"]["train"]["questions"] == 40
    loop.train(task, c, workdir)
    rows = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    for key in ("loss_init", "loss_exp", "loss_agg", "sigma_init", "sigma_exp", "sigma_agg",
                "eval_loss_init", "eval_loss_agg"):
        assert key in rows[-1], key
    assert rows[7]["eval_loss"] < rows[3]["eval_loss"]  # steps 8 and 4
    assert rows[-1]["sigma_agg"] != 1.0  # the log variances train

    # launch.answer's functions on the run: every mode, the table, the files.
    from aes_jax.eval import steper_answers as sa

    examples = sa.questions_for(workdir, "test", limit=3)
    assert len(examples) == 3 and examples[0].extra["hops"]
    answerer = sa.answerer_for(workdir, max_steps=3, batch_size=4)
    metrics, traces = sa.evaluate(answerer, examples)
    assert set(metrics) == {"stepwise", "single", "none"}
    assert metrics["single"]["steps"] == 1.0 and 1.0 <= metrics["stepwise"]["steps"] <= 3.0
    written = sa.write_answers(tmp_path / "out" / "answers.jsonl", examples, traces, metrics)
    lines = written[0].read_text().splitlines()
    assert len(lines) == 9 and json.loads(lines[0])["mode"] == "stepwise"
    assert json.loads(written[1].read_text())["none"]["n"] == 3 and written[2].stat().st_size
    assert sa.table_lines(metrics)[0].split()[:4] == ["mode", "EM", "F1", "Acc"]
    dense = sa.answerer_for(workdir, max_steps=2, batch_size=4, retriever="dense")
    assert dense.answer([examples[0].question], "single")[0].steps[0].passages
