"""RMSNorm (Phi-3) and the affine-free LayerNorm of the final layer; statistics in fp32."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class RMSNorm(nn.Module):
    """x / rms(x) * scale, normalised in fp32 and cast back before the scale (as Phi-3 does).

    (..., D) -> (..., D). Parameter ``scale`` (D,) is Phi-3's ``*_layernorm.weight``.
    """

    eps: float = 1e-5
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param(
            "scale",
            nn.with_logical_partitioning(nn.initializers.ones, ("norm",)),
            (x.shape[-1],),
            self.param_dtype,
        )
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
        return jnp.asarray(scale, self.dtype) * h.astype(self.dtype)


def layer_norm_no_affine(x: jax.Array, eps: float) -> jax.Array:
    """LayerNorm without scale or bias, in fp32. (..., D) -> (..., D) fp32."""
    h = x.astype(jnp.float32)
    mean = jnp.mean(h, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(h - mean), axis=-1, keepdims=True)
    return (h - mean) * jax.lax.rsqrt(var + eps)
