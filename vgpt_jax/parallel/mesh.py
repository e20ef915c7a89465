"""Device mesh from config, logical-axis rules, and shardings derived from them.

Mesh axes: ``data`` (pure data parallel), ``fsdp`` (data parallel with parameters and optimiser
state sharded), ``tensor`` (heads / MLP), ``sequence`` (tokens of one sequence). Every parameter
and constrained activation carries logical names; :data:`LOGICAL_AXIS_RULES` maps them to mesh
axes, so a config changes only the mesh sizes to move between 1 CPU, 8 devices, a GPU host or a pod.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from vgpt_jax.config import MESH_AXES

LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # parameters
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("layers", None),
    ("qkv", None),
    ("gate_up", None),
    ("head_dim", None),
    ("norm", None),
    ("patch_row", None),
    ("patch_col", None),
    ("channels", None),
    ("time_freq", None),
    ("patch_out", None),
    ("lora_rank", None),  # LoRA factors: small, so only their other axis is sharded
    # activations
    ("activation_batch", ("data", "fsdp")),
    ("activation_length", "sequence"),
    ("activation_embed", None),
    ("activation_heads", "tensor"),
    ("activation_mlp", "tensor"),
)


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Sizes of (data, fsdp, tensor, sequence); one axis may be -1 = the devices left over."""
    sizes = [int(getattr(mesh_config, ax)) for ax in MESH_AXES]
    fixed = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % fixed:
            raise ValueError(
                f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} cannot fill {num_devices} devices: "
                f"the fixed axes multiply to {fixed}, which does not divide {num_devices}"
            )
        sizes[sizes.index(-1)] = num_devices // fixed
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} needs {math.prod(sizes)} devices but "
            f"{num_devices} are available; set one axis to -1 or change the sizes "
            "(e.g. --config.mesh.fsdp=-1)"
        )
    return tuple(sizes)


def make_mesh(mesh_config: ml_collections.ConfigDict, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A mesh with Auto axis types (annotate-and-propagate), over ``devices`` or all devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_config, len(devices))
    device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def sharding_context(mesh: Mesh) -> contextlib.ExitStack:
    """The mesh and logical rules under which the model is traced (entered outside ``jit``)."""
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(nn.logical_axis_rules(LOGICAL_AXIS_RULES))
    return stack


def logical_sharding(mesh: Mesh, logical_axes: Sequence[str | None]) -> NamedSharding:
    """NamedSharding of an array whose dimensions carry these logical names."""
    spec = nn.logical_to_mesh_axes(tuple(logical_axes), LOGICAL_AXIS_RULES)
    return NamedSharding(mesh, spec)


def tree_shardings(mesh: Mesh, annotated_tree) -> object:
    """Shardings for a tree of ``nn.Partitioned`` (or abstract) leaves, from their logical names."""
    specs = nn.get_partition_spec(annotated_tree)
    specs = nn.logical_to_mesh(specs, LOGICAL_AXIS_RULES)
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def abstract_on_mesh(mesh: Mesh, annotated_tree) -> Any:
    """A tree of ``nn.Partitioned`` abstract leaves (``jax.eval_shape`` of an init) -> unboxed
    ShapeDtypeStructs carrying the shardings of their logical names on ``mesh``."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        nn.unbox(annotated_tree),
        tree_shardings(mesh, annotated_tree),
    )


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading batch axis over (data, fsdp); the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]
