"""Flow matching with t = 0 noise and t = 1 data (spec §6, §9.1).

x_t = t·x1 + (1 − t)·ε; the model predicts x1; sampling converts x1 to a velocity
v = (x1 − z) / (1 − t) and takes Euler steps on the grid σ_i = i / steps.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


def per_frame(t: jax.Array, like: jax.Array) -> jax.Array:
    """Broadcasts per-frame values (..., F) against frames (..., F, h, w, C)."""
    return t.reshape(*t.shape, *([1] * (like.ndim - t.ndim))).astype(like.dtype)


def clip_times(key: jax.Array, clip_ids: jax.Array) -> jax.Array:
    """One t ~ U(0, 1) per clip, given to every frame of the clip. clip_ids (..., N) -> (..., N)."""
    per_clip = jax.random.uniform(key, clip_ids.shape, jnp.float32)  # clip ids are < N
    return jnp.take_along_axis(per_clip, clip_ids, axis=-1)


def interpolate(x1: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = t·x1 + (1 − t)·ε with t per frame. x1, noise (..., F, h, w, C); t (..., F)."""
    tb = per_frame(t, x1)
    return tb * x1 + (1.0 - tb) * noise


class TrainingInputs(NamedTuple):
    """What the model sees for one training sequence."""

    noisy: jax.Array  # x_t of every frame, (B, N, h, w, C)
    clean: jax.Array  # noise-augmented clean inputs, (B, N, h, w, C)
    t: jax.Array  # (B, N) per-frame time (constant within a clip)


def training_inputs(
    key: jax.Array, target: jax.Array, clean: jax.Array, clip_ids: jax.Array, clean_noise_min: float
) -> TrainingInputs:
    """Noises the targets per clip and augments the clean inputs (spec §6).

    target: x1 (B, N, h, w, C); clean: the clean copies' latents (an independent posterior
    sample of the same frames, or the same array); clip_ids (B, N).
    The clean copy of frame f becomes s·x + (1 − s)·ε' with s ~ U(clean_noise_min, 1) per frame.
    """
    t_key, noise_key, s_key, aug_key = jax.random.split(key, 4)
    t = clip_times(t_key, clip_ids)
    noisy = interpolate(target, jax.random.normal(noise_key, target.shape, target.dtype), t)
    s = jax.random.uniform(s_key, clip_ids.shape, jnp.float32, clean_noise_min, 1.0)
    clean_aug = interpolate(clean, jax.random.normal(aug_key, clean.shape, clean.dtype), s)
    return TrainingInputs(noisy, clean_aug, t)


def x1_loss(prediction: jax.Array, target: jax.Array, frame_weight: jax.Array | None = None) -> jax.Array:
    """Per-frame MSE over (h, w, C), averaged over frames (and batch), in fp32.

    prediction, target (B, F, h, w, C); frame_weight (B, F) >= 0 makes it a weighted average.
    """
    err = jnp.square(prediction.astype(jnp.float32) - target.astype(jnp.float32))
    per_frame_mse = jnp.mean(err, axis=(-3, -2, -1))
    if frame_weight is None:
        return jnp.mean(per_frame_mse)
    w = frame_weight.astype(jnp.float32)
    return jnp.sum(per_frame_mse * w) / jnp.maximum(jnp.sum(w), 1.0)


def time_grid(steps: int, shift: float = 1.0) -> jax.Array:
    """σ_i = i / steps, i = 0…steps, optionally shifted σ/(σ + s − s·σ). -> (steps + 1,) fp32."""
    sigma = jnp.linspace(0.0, 1.0, steps + 1, dtype=jnp.float32)
    return sigma / (sigma + shift - shift * sigma)


def velocity(x1_hat: jax.Array, z: jax.Array, t: jax.Array) -> jax.Array:
    """x1 prediction -> velocity at time t < 1: (x̂1 − z) / (1 − t)."""
    return (x1_hat - z) / (1.0 - t)


def guide(cond: jax.Array, uncond: jax.Array, scale: float) -> jax.Array:
    """Classifier-free guidance: uncond + w·(cond − uncond)."""
    return uncond + scale * (cond - uncond)
