"""Number-token, EMO and loss-weighting functions vs independent torch versions.

The torch references below are written from the formulas, position by position where
that is clearer, and never call the JAX code. Comparisons run under jax.enable_x64 with
float64 inputs (the losses keep float64 when given it), so value and gradient must
agree to 1e-6 relative (plus a 1e-12 absolute floor for gradient entries near 0).
"""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from aes_jax.data.tokenizers import ByteTokenizer
from aes_jax.losses import weighting
from aes_jax.losses.emo import emo_full, emo_topk
from aes_jax.losses.number_tokens import (digit_token_ids, merges_digits, ntl_mse,
                                          ntl_wasserstein)

B, T, V, D = 2, 5, 50, 8
DIGIT_IDS = np.array([17, 3, 40, 22, 9, 31, 44, 12, 28, 5])  # deliberately unordered
DIGIT_VALUES = np.arange(10, dtype=np.float64)
RTOL, ATOL = 1e-6, 1e-12


@pytest.fixture
def batch(rng):
    logits = rng.normal(size=(B, T, V)) * 2.0
    # Half digit, half non-digit gold tokens, and a random mask with both kinds in it.
    non_digits = np.setdiff1d(np.arange(V), DIGIT_IDS)
    labels = np.where(rng.random((B, T)) < 0.5, rng.choice(DIGIT_IDS, (B, T)),
                      rng.choice(non_digits, (B, T)))
    labels[0, 0], labels[0, 1] = DIGIT_IDS[3], non_digits[0]
    mask = rng.random((B, T)) < 0.7
    mask[0, :2] = True
    mask[1, -1] = False
    labels[1, -1] = -100  # an ignore id at a masked-out position must be harmless
    lm_head = rng.normal(size=(V, D))
    return logits, labels, mask, lm_head


def _value_and_grad_jax(fn, logits, *args, **kwargs):
    with jax.enable_x64(True):
        value, grad = jax.jit(jax.value_and_grad(lambda lg, *a: fn(lg, *a, **kwargs)))(
            jnp.asarray(logits, jnp.float64), *[jnp.asarray(a) for a in args])
        return float(value), np.asarray(grad)


def _value_and_grad_torch(fn, logits, *args):
    t = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    value = fn(t, *args)
    value.backward()
    return value.item(), t.grad.numpy()


def _assert_matches(jax_pair, torch_pair):
    np.testing.assert_allclose(jax_pair[0], torch_pair[0], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(jax_pair[1], torch_pair[1], rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- torch references


def torch_ntl(logits, labels, mask, kind):
    """Loop over positions; only masked-in positions with a digit gold token count."""
    values = torch.tensor(DIGIT_VALUES)
    terms = []
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            if not mask[b, t] or labels[b, t] not in DIGIT_IDS:
                continue
            y = DIGIT_VALUES[list(DIGIT_IDS).index(labels[b, t])]
            p = torch.softmax(logits[b, t, torch.tensor(DIGIT_IDS)], dim=0)
            if kind == "mse":
                terms.append((torch.sum(p * values) - y) ** 2)
            else:
                terms.append(torch.sum(p * torch.abs(y - values)))
    return torch.stack(terms).mean()


def _torch_emo_loss(q, gold_e, mask, normalize):
    if normalize:
        q = q / q.norm(dim=-1, keepdim=True)
    per = 1 - (gold_e * q).sum(-1)
    m = torch.tensor(mask, dtype=torch.float64)
    return (per * m).sum() / m.sum()


def torch_emo_full(logits, labels, mask, lm_head, normalize):
    e = torch.tensor(lm_head)
    e = e / e.norm(dim=-1, keepdim=True)
    gold = torch.tensor(np.where(mask, labels, 0))
    p = torch.softmax(logits, dim=-1)
    one_hot = torch.nn.functional.one_hot(gold, logits.shape[-1]).to(p.dtype)
    q = (p - (p * one_hot).detach()) @ e
    return _torch_emo_loss(q, e[gold], mask, normalize)


def torch_emo_topk(logits, labels, mask, lm_head, k, normalize):
    e = torch.tensor(lm_head)
    e = e / e.norm(dim=-1, keepdim=True)
    gold = torch.tensor(np.where(mask, labels, 0))
    p = torch.softmax(logits, dim=-1)
    p_top, idx = torch.topk(p, k, dim=-1)
    p_top = p_top - (p_top * (idx == gold[..., None])).detach()
    q = torch.einsum("btk,btkd->btd", p_top, e[idx])
    return _torch_emo_loss(q, e[gold], mask, normalize)


# ---------------------------------------------------------------- number-token losses


@pytest.mark.parametrize("kind,fn", [("mse", ntl_mse), ("was", ntl_wasserstein)])
def test_ntl_matches_torch(batch, kind, fn):
    logits, labels, mask, _ = batch
    got = _value_and_grad_jax(fn, logits, labels, mask, DIGIT_IDS, DIGIT_VALUES)
    want = _value_and_grad_torch(lambda t: torch_ntl(t, labels, mask, kind), logits)
    _assert_matches(got, want)
    # Only digit logits receive gradient: NTL sees the digit sub-distribution only.
    others = np.setdiff1d(np.arange(V), DIGIT_IDS)
    assert np.all(got[1][..., others] == 0)


def test_ntl_float32_close_to_float64_reference(batch):
    logits, labels, mask, _ = batch
    value = ntl_mse(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), jnp.asarray(mask),
                    DIGIT_IDS, DIGIT_VALUES)
    assert value.dtype == jnp.float32
    want = torch_ntl(torch.tensor(logits), labels, mask, "mse").item()
    np.testing.assert_allclose(float(value), want, rtol=1e-5)


def test_ntl_hand_computed():
    # Uniform over digits 0..9 (all logits equal), gold "3": E[v] = 4.5.
    digit_ids = np.arange(5, 15)
    logits = jnp.zeros((1, 2, 20))
    labels = jnp.array([[5 + 3, 0]])  # position 1 is a non-digit: masked in, not counted
    mask = jnp.array([[True, True]])
    values = np.arange(10.0)
    np.testing.assert_allclose(float(ntl_mse(logits, labels, mask, digit_ids, values)),
                               (4.5 - 3) ** 2, rtol=1e-6)
    np.testing.assert_allclose(float(ntl_wasserstein(logits, labels, mask, digit_ids, values)),
                               np.mean(np.abs(3 - values)), rtol=1e-6)  # 2.7


def test_ntl_wasserstein_any_value_spacing():
    # W1 to a point mass is sum_k p_k |y - v_k| whatever the values; check uneven ones.
    values = np.array([0.0, 1.0, 10.0])
    logits = jnp.log(jnp.array([[[0.2, 0.3, 0.5]]]))
    got = ntl_wasserstein(logits, jnp.array([[1]]), jnp.array([[True]]), np.arange(3), values)
    np.testing.assert_allclose(float(got), 0.2 * 1 + 0.3 * 0 + 0.5 * 9, rtol=1e-6)


# ---------------------------------------------------------------- EMO


@pytest.mark.parametrize("normalize", [False, True])
def test_emo_full_matches_torch(batch, normalize):
    logits, labels, mask, lm_head = batch
    got = _value_and_grad_jax(emo_full, logits, labels, mask, lm_head, normalize=normalize)
    want = _value_and_grad_torch(
        lambda t: torch_emo_full(t, labels, mask, lm_head, normalize), logits)
    _assert_matches(got, want)


def _emo_on_three_tokens(p_gold: float, **kwargs):
    """Gold token 0 with e = (1, 0); token 1 (0, 1) at cosine 0 and token 2 (-1, 0) at
    cosine -1 share the rest of the mass equally. (value, d/dlogits) of emo_full and
    emo_topk (k = 3, all tokens) under ``kwargs``, float64."""
    rest = (1.0 - p_gold) / 2
    logits = np.log([[[p_gold, rest, rest]]])
    head = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    args = (np.array([[0]]), np.array([[True]]), head)

    def value_and_grad(fn):  # eager: four tiny calls cost less than compiling them
        with jax.enable_x64(True):
            value, grad = jax.value_and_grad(
                lambda lg: fn(lg, *map(jnp.asarray, args), **kwargs))(jnp.asarray(logits))
            return float(value), np.asarray(grad)
    full = value_and_grad(emo_full)
    topk = value_and_grad(lambda *a, **kw: emo_topk(*a, k=3, **kw))
    np.testing.assert_allclose(topk[0], full[0], rtol=1e-12)
    return full


P_GOLD = [0.014, 0.5, 0.9, 0.99999]


def test_emo_default_dot_form_falls_as_gold_probability_rises():
    """Default (dot form, the public EMO code): 1 - sum_{j != gold} p_j cos(e_gold, e_j)
    = 1 - (p_1 * 0 + p_2 * (-1)) = 1 + (1 - p) / 2 here, falling to 1 as p(gold) = p -> 1.
    Its gradient is the exact EMD's, sum_j p_j (1 - cos): d/dz_j = p_j (c_j - E[c]) with
    costs c = (0, 1, 2), E[c] = 1.5 (1 - p), so it shrinks to 0 at p = 1."""
    values, grad_norms = [], []
    for p in P_GOLD:
        value, grad = _emo_on_three_tokens(p)
        np.testing.assert_allclose(value, 1 + (1 - p) / 2, rtol=1e-12)
        probs, cost = np.array([p, (1 - p) / 2, (1 - p) / 2]), np.array([0.0, 1.0, 2.0])
        np.testing.assert_allclose(grad[0, 0], probs * (cost - 1.5 * (1 - p)), rtol=1e-9,
                                   atol=1e-15)
        assert grad[0, 0, 0] < 0  # descending the loss raises the gold logit
        values.append(value)
        grad_norms.append(np.linalg.norm(grad))
    assert values == sorted(values, reverse=True) and len(set(values)) == len(values)
    assert grad_norms[-1] < 1e-4 < grad_norms[0]


def test_emo_cosine_option_ignores_gold_probability():
    """normalize=True: q has the gold token removed, so only the direction of the non-gold
    mass, here always (-1, 1) / sqrt(2), counts: 1 + 1 / sqrt(2) at any p(gold), while the
    gradient grows as p(gold) -> 1 instead of vanishing (the caveat in losses/emo.py)."""
    grad_norms = []
    for p in P_GOLD:
        value, grad = _emo_on_three_tokens(p, normalize=True)
        np.testing.assert_allclose(value, 1 + 1 / np.sqrt(2), rtol=1e-9)
        grad_norms.append(np.linalg.norm(grad))
    assert grad_norms == sorted(grad_norms) and grad_norms[-1] > 0.99  # 0.50 -> 1.00


def test_emo_full_unnormalised_is_original_form_with_exact_emd_gradient(batch):
    logits, labels, mask, lm_head = batch
    got = _value_and_grad_jax(emo_full, logits, labels, mask, lm_head, normalize=False)
    _assert_matches(got, _value_and_grad_jax(emo_full, logits, labels, mask, lm_head))

    # Its gradient is that of the exact EMD to a one-hot target under the cosine cost,
    # sum_j p_j (1 - cos(e_gold, e_j)); the value differs by the gold probability.
    def exact_emd(t):
        e = torch.tensor(lm_head)
        e = e / e.norm(dim=-1, keepdim=True)
        gold = torch.tensor(np.where(mask, labels, 0))
        cost = 1 - e[gold] @ e.T  # [B, T, V]
        per = (torch.softmax(t, -1) * cost).sum(-1)
        m = torch.tensor(mask, dtype=torch.float64)
        return (per * m).sum() / m.sum()

    np.testing.assert_allclose(got[1], _value_and_grad_torch(exact_emd, logits)[1],
                               rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("normalize", [False, True])
def test_emo_topk_matches_torch_gold_inside_and_outside_topk(batch, normalize):
    logits, labels, mask, lm_head = batch
    logits, labels, k = logits.copy(), labels.copy(), 8
    for b in range(B):
        for t in range(T):
            if not mask[b, t]:
                continue
            if (b + t) % 2:
                logits[b, t, labels[b, t]] += 8.0  # gold surely in the top k
            else:
                labels[b, t] = int(np.argmin(logits[b, t]))  # gold surely outside
    top = np.argsort(-logits, axis=-1)[..., :k]
    inside = (top == labels[..., None]).any(-1)
    assert (inside & mask).any() and (~inside & mask).any()

    got = _value_and_grad_jax(emo_topk, logits, labels, mask, lm_head, k=k,
                              normalize=normalize)
    want = _value_and_grad_torch(
        lambda t: torch_emo_topk(t, labels, mask, lm_head, k, normalize), logits)
    _assert_matches(got, want)
    # Gradient reaches the k selected logits (and through the softmax normaliser, all);
    # it must differ from the full version's.
    full = _value_and_grad_jax(emo_full, logits, labels, mask, lm_head, normalize=normalize)
    assert not np.allclose(got[1], full[1])


def test_emo_topk_clips_k_to_vocab_and_then_equals_full(batch):
    logits, labels, mask, lm_head = batch
    topk = _value_and_grad_jax(emo_topk, logits, labels, mask, lm_head, k=10 * V)
    full = _value_and_grad_jax(emo_full, logits, labels, mask, lm_head)
    _assert_matches(topk, full)


@pytest.mark.parametrize("fn", [emo_full, lambda *a: emo_topk(*a, k=4)])
def test_emo_does_not_train_lm_head(batch, fn):
    logits, labels, mask, lm_head = batch
    g = jax.grad(fn, argnums=3)(jnp.asarray(logits, jnp.float32), jnp.asarray(labels),
                                jnp.asarray(mask), jnp.asarray(lm_head, jnp.float32))
    assert np.all(np.asarray(g) == 0)


def test_emo_rejects_lm_head_of_wrong_vocab(batch):
    logits, labels, mask, lm_head = batch
    with pytest.raises(ValueError, match="lm_head"):
        emo_full(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(mask), lm_head.T)


def test_emo_zero_embedding_rows_and_all_mass_on_gold_stay_finite(batch):
    # Padded vocab rows are often all zeros; a one-hot prediction makes q exactly 0.
    _, labels, mask, lm_head = batch
    lm_head = lm_head.copy()
    lm_head[-5:] = 0
    logits = jnp.asarray(np.where(np.arange(V) == labels[..., None], 1e4, -1e4), jnp.float32)
    for fn in (emo_full, lambda *a: emo_topk(*a, k=4)):
        value, grad = jax.jit(jax.value_and_grad(fn))(
            logits, jnp.asarray(labels), jnp.asarray(mask), jnp.asarray(lm_head, jnp.float32))
        assert np.isfinite(float(value)) and np.all(np.isfinite(np.asarray(grad)))


# ---------------------------------------------------------------- shared edge cases

ALL_LOSSES = {
    "ntl_mse": lambda lg, lb, m, h: ntl_mse(lg, lb, m, DIGIT_IDS, DIGIT_VALUES),
    "ntl_was": lambda lg, lb, m, h: ntl_wasserstein(lg, lb, m, DIGIT_IDS, DIGIT_VALUES),
    "emo_full": emo_full,
    "emo_topk": lambda lg, lb, m, h: emo_topk(lg, lb, m, h, k=6),
}


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_empty_mask_is_zero_with_finite_gradient(batch, name):
    logits, labels, _, lm_head = batch
    value, grad = jax.jit(jax.value_and_grad(ALL_LOSSES[name]))(
        jnp.asarray(logits, jnp.float32), jnp.asarray(np.where(labels < 0, 0, labels)),
        jnp.zeros((B, T), bool), jnp.asarray(lm_head, jnp.float32))
    assert float(value) == 0.0
    assert np.all(np.isfinite(np.asarray(grad)))


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bf16_logits_computed_in_float32(batch, name):
    logits, labels, mask, lm_head = batch
    bf16 = jnp.asarray(logits, jnp.bfloat16)
    args = (jnp.asarray(labels), jnp.asarray(mask), jnp.asarray(lm_head, jnp.float32))
    fn = jax.jit(ALL_LOSSES[name])
    got = fn(bf16, *args)
    assert got.dtype == jnp.float32
    # Upcast first, then everything in float32: identical to feeding the upcast logits.
    want = fn(bf16.astype(jnp.float32), *args)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    grad = jax.jit(jax.grad(ALL_LOSSES[name]))(bf16, *args)
    assert grad.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(grad, np.float32)))


# ---------------------------------------------------------------- digit token ids


def test_digit_token_ids_byte_tokenizer(caplog):
    with caplog.at_level(logging.WARNING, logger="aes_jax.losses.number_tokens"):
        ids, values = digit_token_ids(ByteTokenizer().encode, num_embeddings=259)
    assert ids.dtype == np.int32 and values.dtype == np.float32
    np.testing.assert_array_equal(ids, np.arange(ord("0"), ord("9") + 1) + 3)
    np.testing.assert_array_equal(values, np.arange(10))
    assert not merges_digits(ByteTokenizer().encode)
    assert not caplog.records


def _merging_encode(text: str) -> list[int]:
    # Like BPE with a number vocabulary: "42" and "10" are single tokens, digits 100+d.
    if text.isdigit() and len(text) <= 2:
        return [100 + int(text)]
    return [100 + int(c) if c.isdigit() else 0 for c in text]


def test_digit_token_ids_merging_tokenizer_warns_not_fails(caplog):
    assert merges_digits(_merging_encode)
    with caplog.at_level(logging.WARNING, logger="aes_jax.losses.number_tokens"):
        ids, _ = digit_token_ids(_merging_encode, num_embeddings=300)
    np.testing.assert_array_equal(ids, 100 + np.arange(10))
    assert any("single digits separated by spaces" in r.getMessage() for r in caplog.records)


def test_digit_token_ids_digit_split_in_two_tokens():
    def encode(text):
        return [7, 8] if text == "7" else ByteTokenizer().encode(text)

    with pytest.raises(ValueError, match=r"'7'.*\[7, 8\].*one token per digit"):
        digit_token_ids(encode, num_embeddings=259)


def test_digit_token_ids_id_beyond_embedding_rows():
    # '4' is byte 52 -> id 55: outside a 55-row embedding.
    with pytest.raises(ValueError, match=r"'4'.*55.*55 embedding rows"):
        digit_token_ids(ByteTokenizer().encode, num_embeddings=55)


def test_digit_token_ids_smollm2():
    from aes_jax.interop import assets

    try:
        model_dir = assets.smollm2_dir()
    except assets.MissingAssetError as err:
        pytest.skip(str(err))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)

    def encode(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    ids, values = digit_token_ids(encode, num_embeddings=49152)
    np.testing.assert_array_equal(ids, np.arange(32, 42))
    np.testing.assert_array_equal(values, np.arange(10))
    assert not merges_digits(encode)  # SmolLM2 splits numbers into single digits


# ---------------------------------------------------------------- weighting


def test_static_weighting():
    losses = {"ce": jnp.float32(2.0), "ntl": jnp.float32(0.5), "logged_only": jnp.float32(9)}
    np.testing.assert_allclose(float(weighting.static(losses, {"ce": 1.0, "ntl": 0.3})),
                               2.15, rtol=1e-6)
    with pytest.raises(KeyError, match="emo"):
        weighting.static(losses, {"ce": 1.0, "emo": 0.1})


@pytest.mark.parametrize("shape", [(), (7,)])
def test_dynamic_weighting_gradient_is_stop_gradient_formula(rng, shape):
    ce = rng.uniform(0.5, 3.0, size=shape)
    aux = rng.uniform(0.1, 1.0, size=shape)
    eps = 1e-8

    def total(c, a):
        return jnp.sum(weighting.dynamic(c, a, eps))

    with jax.enable_x64(True):
        value = float(total(jnp.asarray(ce), jnp.asarray(aux)))
        d_ce, d_aux = (np.asarray(g) for g in
                       jax.grad(total, argnums=(0, 1))(jnp.asarray(ce), jnp.asarray(aux)))
    # Closed form: no gradient through the ratio.
    np.testing.assert_allclose(d_ce, np.full(shape, 0.5), rtol=RTOL)
    np.testing.assert_allclose(d_aux, 0.5 * ce / (aux + eps), rtol=RTOL)

    t_ce = torch.tensor(ce, requires_grad=True)
    t_aux = torch.tensor(aux, requires_grad=True)
    t_total = (0.5 * (t_ce + (t_ce / (t_aux + eps)).detach() * t_aux)).sum()
    t_total.backward()
    np.testing.assert_allclose(value, t_total.item(), rtol=RTOL)
    np.testing.assert_allclose(d_ce, t_ce.grad.numpy(), rtol=RTOL)
    np.testing.assert_allclose(d_aux, t_aux.grad.numpy(), rtol=RTOL)


def test_uncertainty_weighting_matches_torch(rng):
    losses = rng.uniform(0.1, 3.0, size=3)
    log_vars = rng.normal(size=3)
    with jax.enable_x64(True):
        value, grads = jax.value_and_grad(weighting.uncertainty, argnums=(0, 1))(
            jnp.asarray(losses), jnp.asarray(log_vars))
        value, grads = float(value), [np.asarray(g) for g in grads]

    t_losses = torch.tensor(losses, requires_grad=True)
    t_log_vars = torch.tensor(log_vars, requires_grad=True)
    t_value = sum(0.5 * torch.exp(-t_log_vars[i]) * t_losses[i] + 0.5 * t_log_vars[i]
                  for i in range(3))
    t_value.backward()
    np.testing.assert_allclose(value, t_value.item(), rtol=RTOL)
    np.testing.assert_allclose(grads[0], t_losses.grad.numpy(), rtol=RTOL)
    np.testing.assert_allclose(grads[1], t_log_vars.grad.numpy(), rtol=RTOL)


def test_init_log_vars():
    lv = weighting.init_log_vars(4)
    assert lv.shape == (4,) and lv.dtype == jnp.float32 and not np.any(np.asarray(lv))
    # Equal initial weights: every task starts at 0.5 * L_i.
    np.testing.assert_allclose(float(weighting.uncertainty(jnp.array([1.0, 2, 3, 4]), lv)),
                               5.0, rtol=1e-6)
