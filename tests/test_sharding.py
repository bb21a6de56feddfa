"""Sharded training equals unsharded training (8 fake CPU devices), and two processes
equal one. Each run is a real `launch.train` subprocess."""

import socket
import subprocess
import sys

import numpy as np
import pytest

from aes_jax.train import sharding
from tests.train_utils import REPO, env, flat, read_metrics, read_state, run_train, train_cmd

STEPS = 3
COMMON = [f"--config.total_steps={STEPS}", "--config.eval_every=0", "--config.log_every=1",
          f"--config.checkpoint_every={STEPS}", "--config.lora.dropout=0.0"]


def mesh_flags(data: int, fsdp: int, tensor: int) -> list[str]:
    return [f"--config.mesh.data={data}", f"--config.mesh.fsdp={fsdp}",
            f"--config.mesh.tensor={tensor}"]


def assert_same_run(a, b):
    la = [m["loss"] for m in read_metrics(a)]
    lb = [m["loss"] for m in read_metrics(b)]
    np.testing.assert_allclose(lb, la, rtol=1e-5)
    pa, pb = flat(read_state(a, STEPS)), flat(read_state(b, STEPS))
    assert pa.keys() == pb.keys()
    for name in pa:
        if "trainable" in name or "opt_state" in name:
            np.testing.assert_allclose(pb[name], pa[name], rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    runs = {}
    for mode in ("full", "lora"):
        workdir = tmp_path_factory.mktemp(f"ref_{mode}")
        run_train(workdir, *COMMON, f"--config.use_lora={mode == 'lora'}", *mesh_flags(1, 1, 1))
        runs[mode] = workdir
    return runs


@pytest.mark.parametrize("mode, mesh", [
    ("full", (8, 1, 1)), ("full", (2, 4, 1)), ("full", (2, 2, 2)), ("lora", (2, 2, 2))])
def test_sharded_equals_single_device(reference, tmp_path, mode, mesh):
    run_train(tmp_path, *COMMON, f"--config.use_lora={mode == 'lora'}", *mesh_flags(*mesh),
              devices=8)
    assert_same_run(reference[mode], tmp_path)


def test_two_processes_equal_one(reference, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen(
        train_cmd(tmp_path, *COMMON, "--config.use_lora=False", f"--coordinator_address=127.0.0.1:{port}",
                  "--num_processes=2", f"--process_id={i}"),
        cwd=REPO, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-4000:]
    assert_same_run(reference["full"], tmp_path)


def test_mesh_shape_rules():
    assert sharding.mesh_shape({"data": -1, "fsdp": 2, "tensor": 1}, 8) == (4, 2, 1)
    assert sharding.mesh_shape({"data": 2, "fsdp": 2, "tensor": 2}, 8) == (2, 2, 2)
    with pytest.raises(ValueError, match="at most one axis"):
        sharding.mesh_shape({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="needs 4 devices, 8 are available"):
        sharding.mesh_shape({"data": 2, "fsdp": 2}, 8)


SPEC_SCRIPT = """
import jax
from aes_jax.models.llama import LlamaConfig, init_params, logical_axes
from aes_jax.train import sharding
cfg = LlamaConfig(vocab_size=259, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16)
mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
params = init_params(cfg, jax.random.PRNGKey(0))
sh = sharding.tree_shardings(logical_axes(cfg), params, mesh)
layer = sh["layers"]
for name, s in [("q", layer["self_attn"]["q_proj"]["kernel"]), ("o", layer["self_attn"]["o_proj"]["kernel"]),
                ("down", layer["mlp"]["down_proj"]["kernel"]), ("embed", sh["embed_tokens"]),
                ("norm", sh["norm"]["scale"])]:
    print(name, tuple(s.spec))
"""


def test_parameters_are_really_sharded():
    out = subprocess.run([sys.executable, "-c", SPEC_SCRIPT], cwd=REPO, env=env(8),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    specs = dict(line.split(" ", 1) for line in out.stdout.strip().splitlines())
    assert specs["q"] == "(None, 'fsdp', 'tensor', None)"  # layers, embed, heads, head_dim
    assert specs["o"] == "(None, 'tensor', None, 'fsdp')"
    assert specs["down"] == "(None, 'tensor', 'fsdp')"
    assert specs["embed"] == "(None, 'fsdp')"  # vocab 259 is not divisible by tensor=2
    assert specs["norm"] == "(None,)"
