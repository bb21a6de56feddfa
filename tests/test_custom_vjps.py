"""The hand-written VJPs of the LLaMA building blocks (models/linear.py, norm_act.py) give
autodiff's gradients of the plain expressions they replace."""

import jax
import jax.ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest

from aes_jax.models import linear, norm_act


def _plain_rms_norm(x, scale, eps, dtype):
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return scale.astype(dtype) * normed.astype(dtype)


def _grads(f, *args):
    rng = np.random.default_rng(1)
    probe = jnp.asarray(rng.standard_normal(jax.eval_shape(f, *args).shape), jnp.float32)
    return jax.grad(lambda *a: jnp.sum(f(*a).astype(jnp.float32) * probe),
                    argnums=tuple(range(len(args))))(*args)


def _assert_close(got, want, tol):
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(np.asarray(g, np.float32), np.asarray(w, np.float32),
                                   rtol=tol, atol=tol)


@pytest.mark.parametrize("n_in, x_shape, k_shape", [
    (1, (2, 5, 6), (6, 3, 4)),   # q_proj-like: [B, T, D] x [D, H, hd]
    (2, (2, 5, 3, 4), (3, 4, 6)),  # o_proj-like: [B, T, H, hd] x [H, hd, D]
    (1, (7, 6), (6, 9)),
])
def test_project_values_and_gradients_are_einsums(n_in, x_shape, k_shape):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), jnp.float32)
    k = jnp.asarray(rng.standard_normal(k_shape), jnp.float32)
    letters = "abcdefgh"
    lead, ins, outs = (letters[: len(x_shape) - n_in], letters[4: 4 + n_in],
                       "xyz"[: len(k_shape) - n_in])
    spec = f"{lead}{ins},{ins}{outs}->{lead}{outs}"
    np.testing.assert_allclose(linear.project(x, k, n_in), jnp.einsum(spec, x, k), rtol=1e-6)
    _assert_close(_grads(lambda a, b: linear.project(a, b, n_in), x, k),
                  _grads(lambda a, b: jnp.einsum(spec, a, b), x, k), 1e-5)


def test_project_rejects_mismatched_input():
    with pytest.raises(ValueError, match="kernel's input dims"):
        linear.project(jnp.zeros((2, 5)), jnp.zeros((4, 3)))


@pytest.mark.parametrize("dtype, tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_rms_norm_and_silu_mul_match_autodiff(dtype, tol):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 4, 16)) * 3, dtype)
    scale = jnp.asarray(1 + 0.1 * rng.standard_normal(16), jnp.float32)
    np.testing.assert_array_equal(  # the forward is the same expression, bit for bit
        np.asarray(norm_act.rms_norm(x, scale, 1e-5, dtype), np.float32),
        np.asarray(_plain_rms_norm(x, scale, 1e-5, dtype), np.float32))
    _assert_close(_grads(lambda a, s: norm_act.rms_norm(a, s, 1e-5, dtype), x, scale),
                  _grads(lambda a, s: _plain_rms_norm(a, s, 1e-5, dtype), x, scale), tol)

    gate = jnp.asarray(rng.standard_normal((3, 4, 16)) * 4, dtype)
    up = jnp.asarray(rng.standard_normal((3, 4, 16)), dtype)
    np.testing.assert_array_equal(np.asarray(norm_act.silu_mul(gate, up), np.float32),
                                  np.asarray(jax.nn.silu(gate) * up, np.float32))
    _assert_close(_grads(norm_act.silu_mul, gate, up),
                  _grads(lambda g, u: jax.nn.silu(g) * u, gate, up), tol)


def _saved(remat, capsys) -> str:
    """jax's printout of what the backward keeps from a 2-layer model's forward."""
    from aes_jax.models.llama import Llama, LlamaConfig
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=8, remat=remat)
    model, ids = Llama(cfg), jnp.zeros((1, 16), jnp.int32)
    params = model.init(jax.random.key(0), ids)
    capsys.readouterr()
    jax.ad_checkpoint.print_saved_residuals(lambda p: model.apply(p, ids).sum(), params)
    return capsys.readouterr().out


def test_dots_remat_policy_still_sees_the_projections(capsys):
    """A policy keeping dot outputs must keep the projections' (the hand-written VJP would
    hide them and save nothing); full remat keeps none."""
    mlp_out = "f32[2,16,48]"  # [layers, tokens, intermediate]: the gate / up outputs
    assert _saved("dots_with_no_batch_dims_saveable", capsys).count(mlp_out) == 2
    assert mlp_out not in _saved("full", capsys)


def test_rms_norm_gradient_of_an_overflowing_row_is_nan():
    """A row whose mean square overflows gets NaN gradients where autodiff gives a silent
    zero (so a diverging run is caught); other rows are unaffected."""
    x = jnp.asarray([[1e30, -2e30, 3e30], [1.0, 2.0, 3.0]], jnp.float32)
    scale = jnp.ones(3, jnp.float32)
    ours = _grads(lambda a: norm_act.rms_norm(a, scale, 1e-5, jnp.float32), x)[0]
    plain = _grads(lambda a: _plain_rms_norm(a, scale, 1e-5, jnp.float32), x)[0]
    assert (np.asarray(plain[0]) == 0).all() and np.isnan(ours[0]).all()
    np.testing.assert_allclose(ours[1], plain[1], rtol=1e-5)
