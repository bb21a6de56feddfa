"""Device mesh and logical-axis sharding rules (plain data from the config).

Parameters name their axes ("embed", "heads", ...); the rules map each name onto mesh
axes ("data", "fsdp", "tensor"). A dimension that the mesh axes do not divide is
replicated instead of failing, and said once in the log.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical axis -> mesh axis (or axes, or None = replicated). Overridable per config.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", BATCH_AXES),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("head_dim", None),
    ("norm", None),
    ("layers", None),
    ("lora_rank", None),
    # activations (see models/llama.py): batch-sharded, the rest left to XLA
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", None),
    ("activation_vocab", "tensor"),
)


def mesh_shape(spec: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
    """{"data": -1, "fsdp": 2, "tensor": 1} -> (n/2, 2, 1); at most one -1 (= the rest)."""
    sizes = [int(spec.get(a, 1)) for a in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"mesh {dict(spec)}: at most one axis may be -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(f"mesh {dict(spec)}: {num_devices} devices not divisible by {known}")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(f"mesh {dict(spec)} = {tuple(sizes)} needs {math.prod(sizes)} devices, "
                         f"{num_devices} are available")
    return tuple(sizes)


def make_mesh(spec: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    shape = mesh_shape(spec, len(devices))
    return Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def _fit(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
    """Drops mesh axes from dimensions they do not divide."""
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = (axes,) if isinstance(axes, str) else tuple(axes or ())
        size = math.prod(mesh.shape[n] for n in names)
        if names and dim % size:
            log.warning("dimension of size %d is not divisible by mesh axes %s (%d): replicated",
                        dim, names, size)
            names = ()
        fitted.append(names[0] if len(names) == 1 else (names or None))
    return P(*fitted)


def tree_shardings(axes: Any, shapes: Any, mesh: Mesh,
                   rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
    """NamedShardings for a pytree, from its logical axes (PartitionSpecs of names)."""
    rules = [(k, tuple(v) if isinstance(v, list) else v) for k, v in rules]
    mesh_specs = nn.logical_to_mesh(axes, rules)
    return jax.tree.map(lambda spec, x: NamedSharding(mesh, _fit(spec, tuple(x.shape), mesh)),
                        mesh_specs, shapes, is_leaf=lambda x: isinstance(x, P))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over data and fsdp."""
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded over the batch axes (multi-host safe)."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in local_batch.items()}
