"""LoRA adapters: parity with transformers + PEFT in both directions, PEFT-format round
trips, merged export, and the zero-at-init / no-collection / dropout semantics."""

import dataclasses
import functools
import json
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
from safetensors.numpy import load_file, save_file

from aes_jax.interop import hf
from aes_jax.interop import peft as peft_io
from aes_jax.interop.torch_ref.llama import hf_logits, load_hf_llama
from aes_jax.models import lora as lora_lib
from aes_jax.models.llama import Llama, init_lora, logical_axes

ATOL = 1e-4
# Guard against vacuous parity: the adapters must move the logits by much more than ATOL.
MIN_EFFECT = 1e-2


# ----------------------------------------------------------------------------- helpers


def _ids(rng, vocab: int) -> np.ndarray:
    return rng.integers(3, vocab, size=(2, 12))


@functools.lru_cache(maxsize=None)
def _jitted_apply(cfg):
    # One compile per config: most of this file's run time is XLA compiling tiny models.
    return jax.jit(lambda variables, ids, rngs: Llama(cfg).apply(variables, ids, rngs=rngs))


def _logits(cfg, params, ids, adapters=None, rngs=None) -> np.ndarray:
    variables = {"params": params} if adapters is None else {"params": params, "lora": adapters}
    return np.asarray(_jitted_apply(cfg)(variables, jnp.asarray(ids), rngs))


def _perturb_b(adapters: dict, seed: int, scale: float = 0.1) -> dict:
    """b is zero at init (no effect); give it random values so the adapters matter.
    numpy noise, because eager jax.random would compile a kernel per shape."""
    noise = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x + scale * noise.standard_normal(x.shape).astype(x.dtype)
        if path[-1].key == "b" else x, adapters)


@functools.lru_cache(maxsize=None)
def _base(path, scan_layers: bool):
    return hf.load_llama(path, scan_layers=scan_layers)


@functools.lru_cache(maxsize=None)
def _fresh_adapters(path, scan_layers: bool, rank: int, targets: str) -> dict:
    # Cached: init_lora compiles a whole model init, the costliest step in this file. The
    # adapters depend only on shapes, rank and targets, not on alpha/dropout/rsLoRA.
    cfg, _ = _base(path, scan_layers)
    return init_lora(cfg.replace(lora=lora_lib.LoraConfig(rank=rank, targets=targets)),
                     jax.random.key(0))


def _adapted(path, lora_cfg: lora_lib.LoraConfig, scan_layers: bool):
    """(cfg, base params, random non-zero adapters) for the checkpoint at `path`."""
    cfg, params = _base(path, scan_layers)
    fresh = _fresh_adapters(path, scan_layers, lora_cfg.rank, lora_cfg.targets)
    return cfg.replace(lora=lora_cfg), params, _perturb_b(fresh, seed=1)


def _peft_logits(base_dir, adapter_dir, ids) -> np.ndarray:
    # A fresh base each time: PEFT wraps the model in place, and the fixture model is shared.
    model = peft.PeftModel.from_pretrained(load_hf_llama(base_dir), str(adapter_dir)).eval()
    return hf_logits(model, ids)


def _assert_trees_equal(x: dict, y: dict) -> None:
    assert jax.tree.structure(x) == jax.tree.structure(y)
    for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ----------------------------------------------------------------------------- JAX -> PEFT


ATTENTION_MODULES = ["k_proj", "o_proj", "q_proj", "v_proj"]
ALL_LINEAR_MODULES = sorted(ATTENTION_MODULES + ["gate_proj", "up_proj", "down_proj"])
# Each of: both fixtures, both target sets, both layouts; rsLoRA once; dropout (which PEFT
# and our apply without a dropout rng both ignore) in two.
PARITY_CASES = [
    # fixture, targets, scan_layers, use_rslora, rank, alpha, dropout
    pytest.param("llama3_dir", lora_lib.ATTENTION_TARGETS, True, False, 4, 8.0, 0.0,
                 id="llama3-attention-scanned"),
    pytest.param("llama3_dir", lora_lib.ALL_LINEAR_TARGETS, False, True, 4, 16.0, 0.1,
                 id="llama3-all_linear-unrolled-rslora"),
    pytest.param("tied_dir", lora_lib.ALL_LINEAR_TARGETS, True, False, 3, 6.0, 0.0,
                 id="tied-all_linear-scanned"),
    pytest.param("tied_dir", lora_lib.ATTENTION_TARGETS, False, False, 2, 5.5, 0.05,
                 id="tied-attention-unrolled"),
]


@pytest.mark.parametrize("fixture,targets,scan,rslora,rank,alpha,dropout", PARITY_CASES)
def test_our_adapters_match_peft(request, tmp_path, rng, fixture, targets, scan, rslora, rank,
                                 alpha, dropout):
    path, torch_base = request.getfixturevalue(fixture)
    lora_cfg = lora_lib.LoraConfig(rank=rank, alpha=alpha, dropout=dropout, targets=targets,
                                   use_rslora=rslora)
    cfg, params, adapters = _adapted(path, lora_cfg, scan)
    ids = _ids(rng, cfg.vocab_size)
    ours = _logits(cfg, params, ids, adapters)
    assert np.abs(ours - hf_logits(torch_base, ids)).max() > MIN_EFFECT

    out = peft_io.save_peft_adapter(cfg, adapters, tmp_path / "adapter", str(path))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["target_modules"] == (ATTENTION_MODULES if targets == lora_lib.ATTENTION_TARGETS
                                        else ALL_LINEAR_MODULES)
    assert (config["peft_type"], config["task_type"], config["r"]) == ("LORA", "CAUSAL_LM", rank)
    assert config["use_rslora"] is rslora and config["base_model_name_or_path"] == str(path)

    np.testing.assert_allclose(_peft_logits(path, out, ids), ours, rtol=0, atol=ATOL)


def test_saved_keys_are_peft_names(llama3_dir, tmp_path):
    path, _ = llama3_dir
    cfg, _, adapters = _adapted(path, lora_lib.LoraConfig(rank=4), scan_layers=True)
    # The same adapters as PEFT itself would name them: compare against a real PeftModel.
    reference = peft.get_peft_model(load_hf_llama(path), peft.LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    expected = {k: tuple(v.shape)
                for k, v in peft.get_peft_model_state_dict(reference).items()}
    out = peft_io.save_peft_adapter(cfg, adapters, tmp_path)
    tensors = load_file(out / "adapter_model.safetensors")
    assert {k: v.shape for k, v in tensors.items()} == expected


# ----------------------------------------------------------------------------- PEFT -> JAX


@pytest.mark.parametrize("fixture,scan,target_modules,rank,alpha,rslora", [
    pytest.param("llama3_dir", True, ["q_proj", "v_proj", "down_proj"], 4, 8, True,
                 id="llama3-list-scanned-rslora"),
    pytest.param("tied_dir", False, r".*\.(k_proj|o_proj|up_proj)", 3, 12, False,
                 id="tied-regex-unrolled"),
])
def test_peft_created_adapters_load(request, tmp_path, rng, fixture, scan, target_modules, rank,
                                    alpha, rslora):
    path, torch_base = request.getfixturevalue(fixture)
    torch.manual_seed(0)
    model = peft.get_peft_model(load_hf_llama(path), peft.LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=target_modules, use_rslora=rslora,
        task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.1)
    model.save_pretrained(tmp_path / "adapter")
    ids = _ids(rng, 256)
    expected = hf_logits(model.eval(), ids)

    cfg, params = _base(path, scan)
    cfg, adapters = peft_io.load_peft_adapter(tmp_path / "adapter", cfg)
    assert (cfg.lora.rank, cfg.lora.alpha, cfg.lora.use_rslora) == (rank, alpha, rslora)
    got = _logits(cfg, params, ids, adapters)
    assert np.abs(got - hf_logits(torch_base, ids)).max() > MIN_EFFECT
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("scan", [True, False])
def test_round_trip_is_bit_identical(llama3_dir, tmp_path, scan):
    path, _ = llama3_dir
    lora_cfg = lora_lib.LoraConfig(rank=4, alpha=8.0, dropout=0.1,
                                   targets=lora_lib.ALL_LINEAR_TARGETS, use_rslora=True)
    cfg, _, adapters = _adapted(path, lora_cfg, scan)
    peft_io.save_peft_adapter(cfg, adapters, tmp_path)
    loaded_cfg, loaded = peft_io.load_peft_adapter(tmp_path, cfg.replace(lora=None))
    assert loaded_cfg == cfg
    _assert_trees_equal(loaded, adapters)

    # The other layout reads the same file into the same numbers.
    _, other = peft_io.load_peft_adapter(tmp_path, cfg.replace(scan_layers=not scan))
    per_layer = (hf.unstack_layers(adapters["layers"], cfg.num_hidden_layers) if scan
                 else [adapters[f"layers_{i}"] for i in range(cfg.num_hidden_layers)])
    relaid = ({f"layers_{i}": layer for i, layer in enumerate(per_layer)} if scan
              else {"layers": hf.stack_layers(per_layer)})
    _assert_trees_equal(other, relaid)


def test_subset_targets_round_trip(tied_dir, tmp_path):
    """A target set that is neither named pattern gets a regex adapting exactly those modules."""
    path, _ = tied_dir
    lora_cfg = lora_lib.LoraConfig(rank=3, targets=r"(self_attn/v_proj|mlp/gate_proj)$")
    cfg, _, adapters = _adapted(path, lora_cfg, scan_layers=True)
    peft_io.save_peft_adapter(cfg, adapters, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"] == [
        "gate_proj", "v_proj"]
    loaded_cfg, loaded = peft_io.load_peft_adapter(tmp_path, cfg)
    _assert_trees_equal(loaded, adapters)
    # The rebuilt regex adapts exactly the saved modules, in both layouts.
    for layer in ("layers", "layers_2"):
        adapted = {leaf for leaf in ALL_LINEAR_MODULES
                   if loaded_cfg.lora.matches((layer, peft_io.PARENTS[leaf], leaf))}
        assert adapted == {"v_proj", "gate_proj"}


# ----------------------------------------------------------------------------- merged export


@pytest.mark.parametrize("fixture,rank", [("llama3_dir", 4), ("tied_dir", 3)])
def test_merged_export_matches_unmerged(request, tmp_path, rng, fixture, rank):
    path, _ = request.getfixturevalue(fixture)
    lora_cfg = lora_lib.LoraConfig(rank=rank, alpha=8.0, targets=lora_lib.ALL_LINEAR_TARGETS)
    cfg, params, adapters = _adapted(path, lora_cfg, scan_layers=True)
    ids = _ids(rng, cfg.vocab_size)
    unmerged = _logits(cfg, params, ids, adapters)

    merged = lora_lib.merge(params, adapters, cfg.lora)
    hf.save_llama(cfg, merged, tmp_path)
    np.testing.assert_allclose(hf_logits(load_hf_llama(tmp_path), ids), unmerged, rtol=0, atol=ATOL)
    np.testing.assert_allclose(_logits(cfg.replace(lora=None), merged, ids), unmerged,
                               rtol=0, atol=ATOL)

    restored = lora_lib.unmerge(merged, adapters, cfg.lora)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-6)


@pytest.mark.parametrize("scan", [True, False])
def test_concatenated_adapters_equal_merging_one_then_the_other(llama3_dir, rng, scan):
    path, _ = llama3_dir
    sft_cfg = lora_lib.LoraConfig(rank=4, alpha=8.0, targets=lora_lib.ALL_LINEAR_TARGETS)
    dpo_cfg = lora_lib.LoraConfig(rank=2, alpha=7.0, targets=lora_lib.ATTENTION_TARGETS,
                                  use_rslora=True)
    cfg, params, sft = _adapted(path, sft_cfg, scan_layers=scan)
    dpo = _perturb_b(_fresh_adapters(path, scan, 2, lora_lib.ATTENTION_TARGETS), seed=2)
    ids = _ids(rng, cfg.vocab_size)
    # DPO after SFT: the SFT adapter merged into the base, the DPO adapter on top.
    stacked = _logits(cfg.replace(lora=dpo_cfg), lora_lib.merge(params, sft, sft_cfg), ids, dpo)
    both_cfg, both = lora_lib.concat((sft_cfg, sft), (dpo_cfg, dpo), scan_layers=scan)
    assert both_cfg.rank == 6 and both_cfg.scale == 1.0
    one = _logits(cfg.replace(lora=both_cfg), params, ids, both)
    sft_only = _logits(cfg.replace(lora=sft_cfg), params, ids, sft)
    assert np.abs(stacked - sft_only).max() > MIN_EFFECT  # the DPO adapter matters
    np.testing.assert_allclose(one, stacked, rtol=0, atol=ATOL)


# ----------------------------------------------------------------------------- semantics


@pytest.mark.parametrize("scan", [True, False])
def test_zero_at_init_and_optional_collection(llama3_dir, rng, scan):
    path, _ = llama3_dir
    cfg, params = _base(path, scan)
    ids = _ids(rng, cfg.vocab_size)
    base = _logits(cfg, params, ids)
    lcfg = cfg.replace(lora=lora_lib.LoraConfig(rank=4, targets=lora_lib.ALL_LINEAR_TARGETS))
    fresh = _fresh_adapters(path, scan, 4, lora_lib.ALL_LINEAR_TARGETS)
    assert all(not np.any(np.asarray(b)) for b in _leaves_named(fresh, "b"))
    assert all(np.any(np.asarray(a)) for a in _leaves_named(fresh, "a"))
    np.testing.assert_array_equal(_logits(lcfg, params, ids, fresh), base)
    # Without the "lora" collection the adapters are simply absent: the frozen base model.
    np.testing.assert_array_equal(_logits(lcfg, params, ids), base)


def _leaves_named(tree: dict, name: str) -> list:
    return [x for path, x in jax.tree_util.tree_flatten_with_path(tree)[0] if path[-1].key == name]


def test_dropout_needs_a_dropout_rng(llama3_dir, rng):
    path, _ = llama3_dir
    lora_cfg = lora_lib.LoraConfig(rank=4, dropout=0.5)
    cfg, params, adapters = _adapted(path, lora_cfg, scan_layers=True)
    ids = _ids(rng, cfg.vocab_size)
    no_dropout_cfg = cfg.replace(lora=lora_lib.LoraConfig(rank=4, dropout=0.0))
    deterministic = _logits(no_dropout_cfg, params, ids, adapters)
    np.testing.assert_array_equal(_logits(cfg, params, ids, adapters), deterministic)

    key = jax.random.key(7)
    dropped = _logits(cfg, params, ids, adapters, rngs={"dropout": key})
    assert np.abs(dropped - deterministic).max() > MIN_EFFECT
    np.testing.assert_array_equal(_logits(cfg, params, ids, adapters, rngs={"dropout": key}),
                                  dropped)
    # Dropout acts on the adapter input only: with zero b the rng changes nothing.
    zero_b = jax.tree_util.tree_map_with_path(
        lambda p, x: jnp.zeros_like(x) if p[-1].key == "b" else x, adapters)
    np.testing.assert_array_equal(_logits(cfg, params, ids, zero_b, rngs={"dropout": key}),
                                  _logits(cfg, params, ids, zero_b))


@pytest.mark.parametrize("scan", [True, False])
def test_logical_axes_name_the_rank(llama3_dir, scan):
    path, _ = llama3_dir
    cfg = hf.read_hf_config(path, scan_layers=scan).replace(
        lora=lora_lib.LoraConfig(rank=4, targets=lora_lib.ALL_LINEAR_TARGETS))
    axes = logical_axes(cfg, "lora")
    specs = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(specs) == 2 * 7 * (1 if scan else cfg.num_hidden_layers)
    assert all(lora_lib.LORA_RANK_AXIS in spec for spec in specs)
    q = axes["layers" if scan else "layers_0"]["self_attn"]["q_proj"]
    lead = ("layers",) if scan else ()
    assert tuple(q["a"]) == lead + ("embed", "lora_rank")
    assert tuple(q["b"]) == lead + ("lora_rank", "heads", "head_dim")


# ----------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def saved_adapter(llama3_dir, tmp_path_factory):
    path, _ = llama3_dir
    cfg, _, adapters = _adapted(path, lora_lib.LoraConfig(rank=4), scan_layers=True)
    return cfg, peft_io.save_peft_adapter(cfg, adapters, tmp_path_factory.mktemp("adapter"))


@pytest.fixture
def good_adapter(saved_adapter, tmp_path):
    """A private copy of a valid adapter directory, for a test to break."""
    cfg, src = saved_adapter
    return cfg, Path(shutil.copytree(src, tmp_path / "adapter"))


def _edit_config(adapter_dir, **changes) -> None:
    path = adapter_dir / "adapter_config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def _edit_tensors(adapter_dir, edit) -> None:
    path = adapter_dir / "adapter_model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


Q0_B = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
# adapter_config.json edit -> (file the error must name, words it must contain)
BAD_CONFIGS = {
    "peft_type": (dict(peft_type="IA3"), "adapter_config.json", "peft_type"),
    "bias": (dict(bias="all"), "adapter_config.json", "bias"),
    "fan_in_fan_out": (dict(fan_in_fan_out=True), "adapter_config.json", "fan_in_fan_out"),
    "layers_to_transform": (dict(layers_to_transform=[0]), "adapter_config.json",
                            "layers_to_transform"),
    "layer_zero_only": (dict(layers_to_transform=0), "adapter_config.json", "layers_to_transform"),
    "rank_pattern": (dict(rank_pattern={"q_proj": 2}), "adapter_config.json", "rank_pattern"),
    "alpha_pattern": (dict(alpha_pattern={"q_proj": 2}), "adapter_config.json", "alpha_pattern"),
    "use_dora": (dict(use_dora=True), "adapter_config.json", "use_dora"),
    "lm_head": (dict(target_modules=["q_proj", "lm_head"]), "adapter_config.json", "lm_head"),
    "uneven_layers": (dict(target_modules=r".*layers\.0\..*q_proj"), "adapter_config.json",
                      "different modules in different layers"),
    # Shapes in the file no longer fit the rank the config claims.
    "rank": (dict(r=8), "adapter_model.safetensors", "shape"),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS))
def test_bad_adapter_config(good_adapter, name):
    cfg, adapter_dir = good_adapter
    changes, file, words = BAD_CONFIGS[name]
    _edit_config(adapter_dir, **changes)
    with pytest.raises(peft_io.AdapterError, match=re.escape(str(adapter_dir / file))) as e:
        peft_io.load_peft_adapter(adapter_dir, cfg)
    assert words in str(e.value)


@pytest.mark.parametrize("problem", ["no_config", "bad_json", "no_weights", "missing_tensor",
                                     "wrong_shape", "extra_tensor"])
def test_bad_adapter_files(good_adapter, problem):
    cfg, adapter_dir = good_adapter
    config, weights = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    file, words = {
        "no_config": (config, "not found"), "bad_json": (config, "not valid JSON"),
        "no_weights": (weights, "not found"), "missing_tensor": (weights, Q0_B),
        "wrong_shape": (weights, "shape"), "extra_tensor": (weights, "lm_head"),
    }[problem]
    if problem == "no_config":
        config.unlink()
    elif problem == "bad_json":
        config.write_text("{not json")
    elif problem == "no_weights":
        weights.unlink()
    elif problem == "missing_tensor":
        _edit_tensors(adapter_dir, lambda t: t.pop(Q0_B))
    elif problem == "wrong_shape":
        _edit_tensors(adapter_dir, lambda t: t.update({Q0_B: np.ascontiguousarray(t[Q0_B].T)}))
    else:
        _edit_tensors(adapter_dir, lambda t: t.update(
            {"base_model.model.lm_head.lora_A.weight": np.zeros((4, 64), np.float32)}))
    with pytest.raises(peft_io.AdapterError, match=re.escape(str(file))) as e:
        peft_io.load_peft_adapter(adapter_dir, cfg)
    assert words in str(e.value)


def test_save_refuses_what_peft_cannot_express(llama3_dir, tmp_path):
    path, _ = llama3_dir
    cfg, _, adapters = _adapted(path, lora_lib.LoraConfig(
        rank=4, targets=lora_lib.ALL_LINEAR_TARGETS), scan_layers=False)
    with pytest.raises(ValueError, match="cfg.lora is None"):
        peft_io.save_peft_adapter(cfg.replace(lora=None), adapters, tmp_path)
    uneven = dict(adapters)
    uneven["layers_1"] = {"self_attn": {k: v for k, v in adapters["layers_1"]["self_attn"].items()
                                        if k != "q_proj"}}
    with pytest.raises(ValueError, match="layer 1 adapts"):
        peft_io.save_peft_adapter(cfg, uneven, tmp_path)
    with pytest.raises(ValueError, match="rank 8"):
        peft_io.save_peft_adapter(cfg.replace(lora=dataclasses.replace(cfg.lora, rank=8)),
                                  adapters, tmp_path)
