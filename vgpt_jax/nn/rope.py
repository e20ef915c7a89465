"""Rotary position embedding on explicit position ids, with Phi-3's LongRoPE factors.

Video-GPT's positions are not token indices (a frame's clean and noisy copies share them), so
cos/sin are computed from the ids. The official attention always asks for the long factors
(it passes seq_len=5000 > 4096), so ``factors='long'`` is right for the release at every length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def inverse_frequencies(head_dim: int, theta: float, factors: tuple[float, ...] | None) -> np.ndarray:
    """(head_dim/2,) float32: 1 / (f_j * theta^(2j/head_dim)), in float32 like the reference."""
    exponent = np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim)
    base = np.power(np.float32(theta), exponent, dtype=np.float32)
    if factors is not None:
        base = np.asarray(factors, dtype=np.float32) * base
    return (np.float32(1.0) / base).astype(np.float32)


def rope_cos_sin(positions: jax.Array, inv_freq: np.ndarray, scaling: float) -> tuple[jax.Array, jax.Array]:
    """positions (B, T) int -> cos, sin (B, T, head_dim) fp32, both times the LongRoPE magnitude."""
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)[None, None, :]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb) * scaling, jnp.sin(emb) * scaling


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotate-half (NeoX) RoPE. x (B, T, H, Dh); cos/sin (B, T, Dh) fp32 -> x.dtype."""
    h = x.astype(jnp.float32)
    x1, x2 = jnp.split(h, 2, axis=-1)
    rotated = jnp.concatenate([-x2, x1], axis=-1)
    out = h * cos[:, :, None, :] + rotated * sin[:, :, None, :]
    return out.astype(x.dtype)
