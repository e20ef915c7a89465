"""Phi-3's gated MLP: fused gate||up projection (gate first), up * SiLU(gate), down projection."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vgpt_jax.nn.fp8 import projection, stored_scale
from vgpt_jax.nn.initializers import phi3_normal


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
        gate, up = h[:, :, 0], h[:, :, 1]
        h = up * nn.silu(gate)
        return projection("btf,fd->btd", h, down, self.dtype, self.fp8, stored_scale(self, "down"))
