"""TRM-AES deep supervision: the loss against hand computations, the per_step scheme's
refill of halted rows, and exact resume of its carry through the loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from aes_jax.models.trm import TRM, TRMConfig, TRMOutput, init_params, start_states
from aes_jax.tasks import trm_supervision as sup_lib
from aes_jax.tasks.trm_supervision import Supervision

CFG = TRMConfig(vocab_size=50, embed_dim=16, hidden_size=16, num_heads=2, intermediate_size=32,
                h_cycles=2, l_cycles=1, n_sup=3, num_outputs=2, max_len=8)
NO_EXPLORE = Supervision(scheme="per_batch", halt_exploration_prob=0.0)


def hand_bce(logit, label):
    return np.log1p(np.exp(-logit)) if label else np.log1p(np.exp(logit))


def rows(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"input_ids": jnp.asarray(rng.integers(1, CFG.vocab_size, (n, 8)), jnp.int32),
            "attention_mask": jnp.asarray(np.arange(8)[None] < rng.integers(3, 9, (n, 1))),
            "target": jnp.asarray(rng.uniform(size=(n, 2)), jnp.float32),
            "target_mask": jnp.asarray([[True, True], [True, False]] * (n // 2)),
            "half_point": jnp.full((n,), 0.125, jnp.float32)}


@pytest.fixture(scope="module")
def params():
    p = init_params(CFG, jax.random.PRNGKey(0))
    # a halting head that says "stop" on some rows and not others
    kernel = np.random.default_rng(1).normal(size=(CFG.hidden_size, 1)).astype(np.float32)
    return {**p, "halt_kernel": jnp.asarray(kernel), "halt_bias": jnp.zeros((1,))}


def test_step_loss_is_mse_plus_half_the_halting_bce():
    out = TRMOutput(None, jnp.asarray([[0.5, 0.2], [0.1, 0.9]]), jnp.asarray([0.3, -2.0]))
    r = {"target": jnp.asarray([[0.4, 0.6], [0.5, 0.0]]),
         "target_mask": jnp.asarray([[True, True], [True, False]]),
         "half_point": jnp.asarray([0.125, 0.125])}
    loss, mse, bce = sup_lib.step_loss(out, r, jnp.ones(2), Supervision())
    # row 0: ((0.1)^2 + (0.4)^2) / 2 = 0.085, within half a point (0.1 < 0.125) -> label 1
    # row 1: (0.4)^2 = 0.16 (trait masked), off by 0.4 -> label 0
    want_mse = (0.085 + 0.16) / 2
    want_bce = (hand_bce(0.3, True) + hand_bce(-2.0, False)) / 2
    np.testing.assert_allclose(mse, want_mse, rtol=1e-6)
    np.testing.assert_allclose(bce, want_bce, rtol=1e-6)
    np.testing.assert_allclose(loss, want_mse + 0.5 * want_bce, rtol=1e-6)
    weighted, _, _ = sup_lib.step_loss(out, r, jnp.asarray([1.0, 0.0]),
                                       Supervision(halt_loss_weight=2.0))
    np.testing.assert_allclose(weighted, 0.085 + 2.0 * hand_bce(0.3, True), rtol=1e-6)
    plain, _, _ = sup_lib.step_loss(out, r, jnp.ones(2), Supervision(use_halting=False))
    np.testing.assert_allclose(plain, want_mse, rtol=1e-6)


def test_per_batch_loss_averages_the_steps_and_drops_halted_rows(params):
    batch = rows()
    model = TRM(CFG)
    loss, _ = sup_lib.per_batch_loss(model, params, batch, jax.random.PRNGKey(0), NO_EXPLORE)
    # By hand: step the model, supervise the rows still running, stop where logit > 0.
    carry = model.apply({"params": params}, batch["input_ids"], method=TRM.initial_carry)
    active, total, stopped_early = np.ones(4), 0.0, 0
    for s in range(CFG.n_sup):
        out = model.apply({"params": params}, carry, batch["input_ids"], batch["attention_mask"])
        pred, t = np.asarray(out.scores), np.asarray(batch["target"])
        m = np.asarray(batch["target_mask"], float)
        per_row = ((pred - t) ** 2 * m).sum(1) / m.sum(1)
        correct = np.abs(pred[:, 0] - t[:, 0]) < 0.125
        bce = np.array([hand_bce(x, c) for x, c in zip(np.asarray(out.halt_logit), correct)])
        if active.sum():
            total += (per_row * active).sum() / active.sum()
            total += 0.5 * (bce * active).sum() / active.sum()
        stop = np.asarray(out.halt_logit) > 0
        stopped_early += int((active * stop).sum()) if s < CFG.n_sup - 1 else 0
        active = active * ~stop
        carry = out.carry
    assert 0 < stopped_early < 4 * (CFG.n_sup - 1)  # the halting matters in this case
    np.testing.assert_allclose(loss, total / CFG.n_sup, rtol=1e-5)


def test_per_step_refills_halted_rows_and_keeps_the_others(params):
    model = TRM(CFG)
    old, new = rows(seed=1), rows(seed=2)
    state = sup_lib.init_rows_state(model, 4, 8, jax.tree.map(lambda x: x[0], old))
    assert bool(state["halted"].all())  # the first update takes the whole first batch
    moved = jnp.full((4, 8, CFG.hidden_size), 7.0)
    state = {**state, **old, "z_h": moved, "z_l": -moved,
             "steps": jnp.asarray([3, 1, 3, 2]), "halted": jnp.asarray([True, False, True, False])}
    refilled, carry, steps = sup_lib.refill(model, state, new)
    h_init, l_init = start_states(CFG)
    for i, fresh in enumerate([True, False, True, False]):
        source = new if fresh else old
        for k in sup_lib.ROW_FIELDS:
            np.testing.assert_array_equal(refilled[k][i], source[k][i], err_msg=k)
        np.testing.assert_array_equal(carry.z_h[i], np.broadcast_to(h_init, (8, 16)) if fresh
                                      else 7.0)
        np.testing.assert_array_equal(carry.z_l[i], np.broadcast_to(l_init, (8, 16)) if fresh
                                      else -7.0)
    np.testing.assert_array_equal(steps, [0, 1, 0, 2])

    sup = Supervision(halt_exploration_prob=0.0)
    loss, metrics, after = sup_lib.per_step_loss(model, params, state, new,
                                                 jax.random.PRNGKey(3), sup)
    out = model.apply({"params": params}, carry, refilled["input_ids"],
                      refilled["attention_mask"])
    want, _, _ = sup_lib.step_loss(out, refilled, jnp.ones(4), sup)
    np.testing.assert_allclose(loss, want, rtol=1e-6)
    np.testing.assert_array_equal(after["steps"], [1, 2, 1, 3])
    stop = np.asarray(out.halt_logit) > 0
    np.testing.assert_array_equal(after["halted"], stop | (np.asarray([1, 2, 1, 3]) >= 3))
    np.testing.assert_array_equal(after["z_h"], out.carry.z_h)
    assert float(metrics["new_rows"]) == 2.0


def test_per_step_training_resumes_exactly(tmp_path):
    """The carry, steps and rows are part of the checkpoint: 2 + 2 steps == 4 steps."""
    from aes_jax.data import asap_records
    from aes_jax.tasks.trm_aes import TRMAesTask
    from aes_jax.train import loop
    from aes_jax.train.checkpoint import read_state_numpy
    from configs.trm_aes import get_config
    from tests.test_asap import write_traits_splits
    from tests.train_utils import flat

    write_traits_splits(tmp_path / "in")
    asap_records.build_dataset(asap_records.BuildOptions(
        inputs=[str(tmp_path / "in")], output_dir=tmp_path / "ds", max_tokens=16))

    def config(steps):
        c = get_config("demo")
        c.data.dataset_dir = str(tmp_path / "ds")
        c.data.max_tokens = 16
        c.model.update(hidden_size=16, num_heads=2, intermediate_size=32, n_sup=2)
        c.update(total_steps=steps, global_batch_size=4, eval_every=0, checkpoint_every=2,
                 log_every=1, async_checkpointing=False)
        return c

    for name, steps in (("straight", [4]), ("resumed", [2, 4])):
        for s in steps:
            loop.train(TRMAesTask(config(s), tmp_path / name), config(s), tmp_path / name)
    a = flat(read_state_numpy(tmp_path / "straight", 4)[1])
    b = flat(read_state_numpy(tmp_path / "resumed", 4)[1])
    assert any("task_state" in k and "z_h" in k for k in a), sorted(a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name, strict=True)
    # halted rows were replaced: after 4 updates with n_sup = 2 no row ran more than 2
    assert a["['task_state']['steps']"].max() <= 2


def test_bad_supervision_settings_are_refused():
    with pytest.raises(ValueError, match="supervision='every_step'"):
        Supervision(scheme="every_step")
    with pytest.raises(ValueError, match="halt_exploration_prob=1.5"):
        Supervision(halt_exploration_prob=1.5)
    assert dataclasses.asdict(Supervision()) == {
        "scheme": "per_step", "use_halting": True, "halt_exploration_prob": 0.1,
        "halt_loss_weight": 0.5}
