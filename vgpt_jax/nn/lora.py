"""LoRA: a low-rank update ``scale · A @ B`` beside a frozen projection kernel ``W``.

A kernel ``W`` of shape (*in, *out) (its input dimensions first, as ours are) gets two
parameters beside it, named after it: ``<name>_lora_a`` (*in, r) and ``<name>_lora_b`` (r, *out).
The projection becomes ``x W + scale · (x A) B``, computed through the rank-r intermediate (the
product ``A B`` of a whole kernel's size is never formed in a step), with ``scale = alpha / r``.
A is drawn as PEFT's ``init_lora_weights="gaussian"`` (N(0, (1/r)²)) and B is zero, so a fresh
adapter leaves the model's outputs exactly as they were. :func:`merge_adapters` folds the update
into ``W`` for inference.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

A_SUFFIX = "_lora_a"
B_SUFFIX = "_lora_b"


@dataclasses.dataclass(frozen=True)
class LoRA:
    """Which kernels carry an adapter and its size (``rank`` 0: none; a hashable Linen attribute)."""

    rank: int = 0
    alpha: float = 0.0  # 0 = equal to the rank
    targets: tuple[str, ...] = ()

    @property
    def scale(self) -> float:
        """alpha / rank, the factor of the low-rank update."""
        return (self.alpha or self.rank) / self.rank

    def wraps(self, name: str) -> bool:
        """Whether the kernel ``name`` gets an adapter."""
        return self.rank > 0 and name in self.targets


def is_adapter(path: tuple[str, ...]) -> bool:
    """Whether the parameter at ``path`` (a tuple of names) is a LoRA factor."""
    return path[-1].endswith((A_SUFFIX, B_SUFFIX))


def adapter_params(
    module: nn.Module,
    name: str,
    in_shape: tuple[int, ...],
    in_axes: tuple[str, ...],
    out_shape: tuple[int, ...],
    out_axes: tuple[str, ...],
    rank: int,
    param_dtype: Any,
) -> tuple[jax.Array, jax.Array]:
    """The adapter of ``module``'s kernel ``name`` (in_shape + out_shape, logical axes in_axes +
    out_axes): A (*in, r) ~ N(0, (1/r)²) and B (r, *out) = 0, the rank axis ``lora_rank``."""
    a = module.param(
        name + A_SUFFIX,
        nn.with_logical_partitioning(nn.initializers.normal(stddev=1.0 / rank), (*in_axes, "lora_rank")),
        (*in_shape, rank),
        param_dtype,
    )
    b = module.param(
        name + B_SUFFIX,
        nn.with_logical_partitioning(nn.initializers.zeros, ("lora_rank", *out_axes)),
        (rank, *out_shape),
        param_dtype,
    )
    return a, b


def low_rank_update(down: str, up: str, x: jax.Array, a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """``scale · (x A) B`` through the rank-r intermediate, in x's dtype: ``einsum(down, x, A)``
    then ``einsum(up, ·, B)`` (the caller's specs put the result in its base product's layout)."""
    xa = jnp.einsum(down, x, jnp.asarray(a, x.dtype)) * jnp.asarray(scale, x.dtype)
    return jnp.einsum(up, xa, jnp.asarray(b, x.dtype))


def merged_kernel(w: jax.Array, a: jax.Array, b: jax.Array, scale: float) -> jax.Array:
    """``W + scale · A B`` in fp32 at full precision, for stacked (scanned) kernels too.

    w (*lead, *in, *out), a (*lead, *in, r), b (*lead, r, *out) -> w's shape and dtype.
    """
    lead = a.ndim + b.ndim - 2 - w.ndim
    rank = a.shape[-1]
    a2 = a.reshape(*a.shape[:lead], math.prod(a.shape[lead:-1]), rank).astype(jnp.float32)
    b2 = b.reshape(*b.shape[:lead], rank, -1).astype(jnp.float32)
    delta = jnp.matmul(a2, b2, precision=jax.lax.Precision.HIGHEST).reshape(w.shape)
    return (w.astype(jnp.float32) + scale * delta).astype(w.dtype)


def merge_adapters(params: Any, scale: float) -> Any:
    """``params`` with every adapter folded into its kernel and the adapter leaves removed."""
    flat = traverse_util.flatten_dict(params)
    merged = {}
    for path, w in flat.items():
        if is_adapter(path):
            continue
        a_path, b_path = (path[:-1] + (path[-1] + suffix,) for suffix in (A_SUFFIX, B_SUFFIX))
        if a_path in flat:
            w = merged_kernel(w, flat[a_path], flat[b_path], scale)
        merged[path] = w
    return traverse_util.unflatten_dict(merged)
