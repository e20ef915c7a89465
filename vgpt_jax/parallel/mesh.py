"""Device mesh from config, logical-axis rules, and shardings derived from them.

Mesh axes: ``data`` (pure data parallel), ``fsdp`` (data parallel with parameters and optimiser
state sharded), ``tensor`` (heads / MLP), ``sequence`` (tokens of one sequence). Every parameter
and constrained activation carries logical names; ``config.mesh.logical_axis_rules`` (and
``config.tokenizer.logical_axis_rules`` for the tokenizer) map them to mesh axes, so a config
changes only the mesh sizes to move between 1 CPU, 8 devices, a GPU host or a pod.
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

AxisRules = tuple[tuple[str, str | tuple[str, ...] | None], ...]


def axis_rules(rules) -> AxisRules:
    """Logical axis rules as flax takes them, from a config's (a saved config's JSON lists become tuples)."""
    return tuple((name, tuple(axes) if isinstance(axes, list | tuple) else axes) for name, axes in rules)


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


def sharding_context(mesh: Mesh, rules) -> contextlib.ExitStack:
    """The mesh and logical axis ``rules`` (e.g. ``config.mesh.logical_axis_rules``) under which a
    model is traced (entered outside ``jit``)."""
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(mesh))
    stack.enter_context(nn.logical_axis_rules(axis_rules(rules)))
    return stack


def tree_shardings(mesh: Mesh, annotated_tree, rules) -> object:
    """Shardings for a tree of ``nn.Partitioned`` (or abstract) leaves, from their logical names."""
    specs = nn.get_partition_spec(annotated_tree)
    specs = nn.logical_to_mesh(specs, axis_rules(rules))
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def unboxed(tree: Any) -> Any:
    """The values of a tree's ``nn.Partitioned`` leaves, with no sharding constraint: ``nn.unbox``
    under a mesh constrains each leaf, which fails outside ``jit`` on abstract leaves (jax >= 0.10)
    and on single-device arrays."""
    is_box = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
    return jax.tree.map(lambda x: x.value if is_box(x) else x, tree, is_leaf=is_box)


def abstract_on_mesh(mesh: Mesh, annotated_tree, rules) -> Any:
    """A tree of ``nn.Partitioned`` abstract leaves (``jax.eval_shape`` of an init) -> unboxed
    ShapeDtypeStructs carrying the shardings of their logical names on ``mesh``."""
    return jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        unboxed(annotated_tree),
        tree_shardings(mesh, annotated_tree, rules),
    )


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Leading batch axis over (data, fsdp); the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp"), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape["data"] * mesh.shape["fsdp"]
