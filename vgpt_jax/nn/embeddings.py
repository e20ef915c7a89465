"""Embedders around the transformer: patches, timesteps, and the fixed 2-D sin-cos table."""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vgpt_jax.nn.initializers import phi3_normal, xavier_uniform_2d, zeros


def patchify(latents: jax.Array, patch: int) -> jax.Array:
    """(..., h, w, C) -> (..., (h/p)·(w/p), p·p·C); tokens row-major, features (p_row, p_col, c)."""
    *lead, h, w, c = latents.shape
    x = latents.reshape(*lead, h // patch, patch, w // patch, patch, c)
    x = jnp.moveaxis(x, -4, -3)  # (..., h/p, w/p, p_row, p_col, c)
    return x.reshape(*lead, (h // patch) * (w // patch), patch * patch * c)


def unpatchify(tokens: jax.Array, patch: int, height: int, width: int) -> jax.Array:
    """Inverse of :func:`patchify`: (..., S, p·p·C) -> (..., h, w, C)."""
    *lead, _, feat = tokens.shape
    c = feat // (patch * patch)
    x = tokens.reshape(*lead, height // patch, width // patch, patch, patch, c)
    x = jnp.moveaxis(x, -3, -4)  # (..., h/p, p_row, w/p, p_col, c)
    return x.reshape(*lead, height, width, c)


class PatchEmbed(nn.Module):
    """Conv k=p, s=p as a linear map on patches. (..., h, w, C) -> (..., S, D).

    Parameters: ``kernel`` (p, p, C, D) = torch Conv2d ``weight`` (D, C, p, p) permuted (2, 3, 1, 0);
    ``bias`` (D,).
    """

    hidden_size: int
    patch: int
    zero_init: bool = False  # the official x_embedder (noisy input) starts at zero
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, latents: jax.Array) -> jax.Array:
        c = latents.shape[-1]
        init = zeros if self.zero_init else xavier_uniform_2d((0, 1, 2), (3,))
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(init, ("patch_row", "patch_col", "channels", "embed")),
            (self.patch, self.patch, c, self.hidden_size),
            self.param_dtype,
        )
        bias = self.param(
            "bias", nn.with_logical_partitioning(zeros, ("embed",)), (self.hidden_size,), self.param_dtype
        )
        x = patchify(latents, self.patch).astype(self.dtype)
        w = jnp.asarray(kernel, self.dtype).reshape(-1, self.hidden_size)
        return x @ w + jnp.asarray(bias, self.dtype)


def timestep_features(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal features of raw t in [0, 1]: [cos(t·f), sin(t·f)], f_k = exp(-ln(P)·k/(dim/2)).

    t (...,) -> (..., dim) fp32.
    """
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t.astype(jnp.float32)[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedder(nn.Module):
    """t (...,) -> (..., D): sinusoid -> Linear -> SiLU -> Linear.

    Parameters: ``fc1`` {kernel (F, D), bias} = ``mlp.0``; ``fc2`` {kernel (D, D), bias} = ``mlp.2``.
    """

    hidden_size: int
    freq_dim: int = 256
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        h = timestep_features(t, self.freq_dim)
        dt = (self.dtype, self.param_dtype)
        h = nn.silu(dense("fc1", h, self.hidden_size, ("time_freq", "embed"), phi3_normal, *dt))
        return dense("fc2", h, self.hidden_size, ("mlp", "embed"), phi3_normal, *dt)


def dense(
    name: str, x: jax.Array, features: int, axes: tuple[str, str], kernel_init, dtype, param_dtype
) -> jax.Array:
    """A biased Linear named ``name`` in the calling compact module, with logical axis names.

    x (..., F_in) -> (..., features); the bias carries the kernel's output axis name.
    """
    layer = nn.Dense(
        features,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(kernel_init, axes),
        bias_init=nn.with_logical_partitioning(zeros, (axes[1],)),
        name=name,
    )
    return layer(x)


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    """[sin(p·ω), cos(p·ω)], ω_m = 10000^(-m/(dim/2)); pos (M,) -> (M, dim) float64."""
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


@functools.lru_cache(maxsize=4)
def sincos_2d_table(dim: int, grid_size: int, base_size: int) -> np.ndarray:
    """(grid, grid, dim) float32: cell (i, j) = [E(j / s), E(i / s)], s = grid / base, coords float32.

    The first half encodes the column, the second the row (the official table's layout). Cached:
    the release table is 192·192·3072 and every module bind asks for it. Treat it as read-only.
    """
    coords = np.arange(grid_size, dtype=np.float32) / np.float32(grid_size / base_size)
    cols, rows = np.meshgrid(coords, coords)  # cols[i, j] = coords[j], rows[i, j] = coords[i]
    table = np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)
    table = table.reshape(grid_size, grid_size, dim).astype(np.float32)
    table.flags.writeable = False
    return table


def cropped_pos_embed(table: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Centre crop of the table for a rows x cols token grid -> (rows·cols, D), row-major."""
    grid = table.shape[0]
    if rows > grid or cols > grid:
        raise ValueError(f"a {rows}x{cols} token grid does not fit the {grid}x{grid} position table")
    top, left = (grid - rows) // 2, (grid - cols) // 2
    return table[top : top + rows, left : left + cols].reshape(rows * cols, -1)
