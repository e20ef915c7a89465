"""Projections as float8 matmuls: both operands scaled per tensor into e4m3's range, multiplied on
fp8 tensor cores (Hopper and later; XLA lowers an fp8 ``dot_general`` to cuBLASLt), the product
rescaled. For sampling only: training would need scaled gradients, which this does not provide."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

FP8 = jnp.float8_e4m3fn
# a kernel stored already quantized (models.video_gpt.inference_params) has its scale beside it
FP8_SCALE_SUFFIX = "_fp8_scale"


def scaled_fp8(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """x (any shape) -> (q, scale): q = x / scale in e4m3, scale = max|x| / e4m3's largest finite
    value (fp32 scalar), so that the largest entry lands on it and x ≈ q · scale."""
    amax = jnp.max(jnp.abs(x)).astype(jnp.float32)
    # an all-zero tensor keeps scale 1: q is zeros either way
    scale = jnp.where(amax > 0, amax / float(jnp.finfo(FP8).max), 1.0)
    return (x.astype(jnp.float32) / scale).astype(FP8), scale


def stored_scale(module: nn.Module, name: str) -> jax.Array | None:
    """The scale of parameter ``name`` when it is stored quantized (its ``_fp8_scale`` beside it)."""
    scale_name = name + FP8_SCALE_SUFFIX
    return module.get_variable("params", scale_name) if module.has_variable("params", scale_name) else None


def projection(
    spec: str,
    x: jax.Array,
    kernel: jax.Array,
    dtype: jnp.dtype,
    fp8: bool,
    kernel_scale: jax.Array | None = None,
) -> jax.Array:
    """``einsum(spec, x, kernel)`` in ``dtype``; with ``fp8``, both operands quantized per tensor
    (:func:`scaled_fp8`) and the fp8 product rescaled by the two scales. ``kernel_scale``: the
    kernel is stored quantized with this scale (:func:`stored_scale`)."""
    if not fp8:
        return jnp.einsum(spec, x.astype(dtype), jnp.asarray(kernel, dtype))
    qx, x_scale = scaled_fp8(x)
    qk, k_scale = scaled_fp8(kernel) if kernel_scale is None else (kernel, kernel_scale)
    y = jnp.einsum(spec, qx, qk, preferred_element_type=dtype)
    return y * (x_scale * k_scale).astype(dtype)
