"""Phi-3's gated MLP: fused gate||up projection (gate first), up * SiLU(gate), down projection."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vgpt_jax.nn.fp8 import projection, stored_scale
from vgpt_jax.nn.initializers import phi3_normal


@jax.custom_vjp
def swiglu(h: jax.Array) -> jax.Array:
    """(..., 2, F) [gate; up] -> (..., F): up · SiLU(gate), in h's dtype.

    Its gradient keeps only h for the backward (autodiff of SiLU kept gate, up and three SiLU
    intermediates: three more (T, F) arrays a layer) and recomputes the sigmoid there, in fp32,
    returning the gradient of [gate; up] as one array (autodiff summed two zero-padded halves).
    """
    gate, up = h[..., 0, :], h[..., 1, :]
    return up * jax.nn.silu(gate)


def _swiglu_fwd(h: jax.Array) -> tuple[jax.Array, jax.Array]:
    return swiglu(h), h


def _swiglu_bwd(h: jax.Array, dy: jax.Array) -> tuple[jax.Array]:
    # gate and up broadcast over the [gate; up] axis, and a select picks each half's formula: one
    # elementwise pass over the (..., 2, F) gradient (stacking two halves made XLA write the
    # sigmoid out in a pass of its own before a slower concatenation; README, "SwiGLU's gradient")
    gate, up = h[..., 0:1, :].astype(jnp.float32), h[..., 1:2, :].astype(jnp.float32)
    dy = dy[..., None, :].astype(jnp.float32)
    sig = jax.nn.sigmoid(gate)
    is_gate = jax.lax.broadcasted_iota(jnp.int32, h.shape, h.ndim - 2) == 0
    # d/dg [g·σ(g)] = σ(g)·(1 + g·(1 − σ(g)))
    dh = jnp.where(is_gate, dy * up * sig * (1.0 + gate * (1.0 - sig)), dy * gate * sig)
    return (dh.astype(h.dtype),)


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


class GatedMLP(nn.Module):
    """(B, T, D) -> (B, T, D).

    Parameters: ``gate_up`` (D, 2, F) = Phi-3 ``gate_up_proj.weight`` (2F, D) transposed and split
    [gate; up]; ``down`` (F, D) = ``down_proj.weight`` transposed.
    """

    mlp_dim: int
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32
    fp8: bool = False  # both projections as float8 matmuls (vgpt_jax.nn.fp8; sampling only)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        gate_up = self.param(
            "gate_up",
            nn.with_logical_partitioning(phi3_normal, ("embed", "gate_up", "mlp")),
            (d, 2, self.mlp_dim),
            self.param_dtype,
        )
        down = self.param(
            "down",
            nn.with_logical_partitioning(phi3_normal, ("mlp", "embed")),
            (self.mlp_dim, d),
            self.param_dtype,
        )
        h = projection("btd,dgf->btgf", x, gate_up, self.dtype, self.fp8, stored_scale(self, "gate_up"))
        h = nn.with_logical_constraint(h, ("activation_batch", "activation_length", None, "activation_mlp"))
        h = swiglu(h)
        return projection("btf,fd->btd", h, down, self.dtype, self.fp8, stored_scale(self, "down"))
