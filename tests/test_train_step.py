"""The pure train step and the optimiser factory, in process (no model)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aes_jax.train.optim import decay_mask, make_optimizer, make_schedule
from aes_jax.train.state import TrainState
from aes_jax.train.step import make_train_step, stateless

OPT = {"name": "adamw", "lr": 0.1, "warmup_steps": 2, "schedule": "cosine", "min_lr_ratio": 0.1,
       "weight_decay": 0.01, "clip_norm": 1.0}


def quadratic_loss(trainable, frozen, batch, rng, step):
    pred = batch["x"] @ trainable["w"] + trainable["b"]
    return jnp.mean((pred - batch["y"]) ** 2), {"pred_mean": jnp.mean(pred)}


def make_batch(rng, n=8):
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return {"x": jnp.asarray(x), "y": jnp.asarray(x @ np.array([1.0, -2.0, 0.5], np.float32))}


def test_schedule_warmup_then_cosine_to_floor():
    schedule = make_schedule(OPT, total_steps=12)
    lrs = [float(schedule(i)) for i in range(13)]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(0.05) and lrs[2] == pytest.approx(0.1)
    assert lrs[12] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))
    with pytest.raises(ValueError, match="schedule='exp'"):
        make_schedule({**OPT, "schedule": "exp"}, 10)


def test_weight_decay_only_on_matrices():
    mask = decay_mask({"w": jnp.ones((3, 1)), "b": jnp.ones((1,)), "scale": jnp.ones(())})
    assert mask == {"w": True, "b": False, "scale": False}


def test_step_matches_hand_written_optax_and_ema(rng):
    optimizer, schedule = make_optimizer(OPT, total_steps=10)
    trainable = {"w": jnp.zeros((3,)), "b": jnp.zeros(())}
    state = TrainState.create(trainable, optimizer, seed=0, use_ema=True)
    step = jax.jit(make_train_step(stateless(quadratic_loss), optimizer, schedule, ema_decay=0.9))
    batch = make_batch(rng)

    params, opt_state, ema = trainable, optimizer.init(trainable), trainable
    for i in range(3):
        state, metrics = step(state, {}, batch)
        (loss, _), grads = jax.value_and_grad(quadratic_loss, has_aux=True)(params, {}, batch, None, 0)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, params)
        assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-6)
        assert float(metrics["grad_norm"]) == pytest.approx(float(optax.global_norm(grads)), rel=1e-6)
        assert float(metrics["learning_rate"]) == pytest.approx(float(schedule(i)))
        assert "pred_mean" in metrics
    for k in params:
        np.testing.assert_allclose(state.trainable[k], params[k], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(state.ema[k], ema[k], rtol=1e-6, atol=1e-7)
    assert int(state.step) == 3


def test_accumulation_averages_gradients(rng):
    optimizer, schedule = make_optimizer({**OPT, "clip_norm": 0}, total_steps=10)
    trainable = {"w": jnp.ones((3,)), "b": jnp.zeros(())}
    batch = make_batch(rng)
    one = jax.jit(make_train_step(stateless(quadratic_loss), optimizer, schedule, accum_steps=1))
    four = jax.jit(make_train_step(stateless(quadratic_loss), optimizer, schedule, accum_steps=4))
    s1, m1 = one(TrainState.create(trainable, optimizer, 0, False), {}, batch)
    s4, m4 = four(TrainState.create(trainable, optimizer, 0, False), {}, batch)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-6)
    np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-6)
    for k in trainable:
        np.testing.assert_allclose(s1.trainable[k], s4.trainable[k], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="not divisible by grad_accum_steps=3"):
        jax.jit(make_train_step(stateless(quadratic_loss), optimizer, schedule, accum_steps=3))(
            TrainState.create(trainable, optimizer, 0, False), {}, batch)
