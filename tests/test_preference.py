"""DPO and its variants (losses/preference.py) against torch versions of the same formulas
(TRL's), ln 2 where the policy equals the reference, gradients, and bad settings."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from aes_jax.losses import preference

B = 7


def logps(seed):
    """Policy chosen / rejected log-probs and references a few nats from them."""
    rng = np.random.default_rng(seed)
    pc, pr = (rng.normal(-40.0, 6.0, B).astype(np.float32) for _ in range(2))
    rc, rr = (x + rng.normal(0.0, 3.0, B).astype(np.float32) for x in (pc, pr))
    return pc, pr, rc, rr


def torch_dpo(pc, pr, rc, rr, beta, loss_type, e):
    d = (pc - rc) - (pr - rr)
    if loss_type == "sigmoid":
        losses = -(1 - e) * F.logsigmoid(beta * d) - e * F.logsigmoid(-beta * d)
    elif loss_type == "robust":
        losses = (-(1 - e) * F.logsigmoid(beta * d) + e * F.logsigmoid(-beta * d)) / (1 - 2 * e)
    elif loss_type == "ipo":
        losses = (d - 1 / (2 * beta)) ** 2
    else:
        losses = torch.relu(1 - beta * d)
    return losses.mean()


CASES = [("sigmoid", 0.1, 0.0), ("sigmoid", 0.1, 0.2), ("robust", 0.3, 0.1),
         ("ipo", 0.5, 0.0), ("hinge", 0.1, 0.0)]


@pytest.mark.parametrize("loss_type,beta,e", CASES)
def test_loss_and_gradients_match_torch(loss_type, beta, e):
    pc, pr, rc, rr = logps(1)
    fn = lambda a, b: preference.dpo(a, b, rc, rr, beta=beta, loss_type=loss_type,  # noqa
                                     label_smoothing=e)[0]
    ours, (g_c, g_r) = jax.value_and_grad(fn, argnums=(0, 1))(jnp.asarray(pc), jnp.asarray(pr))
    tc = torch.tensor(pc, requires_grad=True)
    tr = torch.tensor(pr, requires_grad=True)
    theirs = torch_dpo(tc, tr, torch.tensor(rc), torch.tensor(rr), beta, loss_type, e)
    theirs.backward()
    np.testing.assert_allclose(float(ours), theirs.item(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g_c), tc.grad.numpy(), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(np.asarray(g_r), tr.grad.numpy(), rtol=1e-5, atol=1e-8)
    assert np.abs(np.asarray(g_c)).max() > 0


@pytest.mark.parametrize("e", [0.0, 0.25])
def test_policy_equal_to_reference_gives_ln2(e):
    pc, pr, _, _ = logps(2)
    loss, metrics = preference.dpo(pc, pr, pc, pr, beta=0.1, label_smoothing=e)
    assert float(loss) == pytest.approx(math.log(2), abs=1e-7)
    assert float(metrics["rewards/margins"]) == 0 and float(metrics["rewards/accuracies"]) == 0


def test_beta_multiplies_the_margin_once_and_metrics_have_trls_names():
    # d = (pc - rc) - (pr - rr) = 2 - (-3) = 5; hinge: relu(1 - beta * 5) = 0.5 at beta 0.1
    pc, pr, rc, rr = (np.array([v], np.float32) for v in (-8.0, -12.0, -10.0, -9.0))
    loss, m = preference.dpo(pc, pr, rc, rr, beta=0.1, loss_type="hinge")
    assert float(loss) == pytest.approx(0.5, abs=1e-6)
    assert float(m["rewards/chosen"]) == pytest.approx(0.2, abs=1e-6)
    assert float(m["rewards/rejected"]) == pytest.approx(-0.3, abs=1e-6)
    assert float(m["rewards/margins"]) == pytest.approx(0.5, abs=1e-6)
    assert float(m["rewards/accuracies"]) == 1.0
    assert float(m["logps/chosen"]) == -8.0 and float(m["logps/rejected"]) == -12.0


@pytest.mark.parametrize("kwargs,match", [
    (dict(loss_type="kto"), "loss_type"), (dict(beta=0.0), "beta"),
    (dict(label_smoothing=0.5), "label_smoothing"),
    (dict(loss_type="ipo", label_smoothing=0.1), "no meaning")])
def test_bad_settings_are_refused(kwargs, match):
    x = np.zeros(2, np.float32)
    with pytest.raises(ValueError, match=match):
        preference.dpo(x, x, x, x, **kwargs)
