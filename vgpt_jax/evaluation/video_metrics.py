"""Per-frame PSNR and SSIM of predicted against true videos, on RGB scaled to [0, 1] (dm-pix).

PSNR is 10 log10(1 / MSE) over a frame's pixels and channels (+inf for identical frames). SSIM is
the standard one of Wang et al. (2004) as ``tf.image.ssim``: an 11x11 Gaussian window with
sigma 1.5 over the valid region, k1 = 0.01, k2 = 0.03, computed per channel and averaged.
"""

from __future__ import annotations

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

SSIM_WINDOW = 11  # frames must be at least this many pixels high and wide


def _frames(video: jax.Array) -> jax.Array:
    """uint8 (..., H, W, C) -> float32 (N, H, W, C) in [0, 1], the layout dm-pix takes."""
    return video.reshape((-1, *video.shape[-3:])).astype(jnp.float32) / 255.0


@jax.jit
def frame_psnr(predicted: jax.Array, target: jax.Array) -> jax.Array:
    """uint8 videos (..., T, H, W, 3) -> PSNR of each frame in dB (..., T); +inf where equal."""
    return dm_pix.psnr(_frames(predicted), _frames(target)).reshape(predicted.shape[:-3])


@jax.jit
def frame_ssim(predicted: jax.Array, target: jax.Array) -> jax.Array:
    """uint8 videos (..., T, H, W, 3), H and W >= 11 -> SSIM of each frame (..., T), in [-1, 1]."""
    return dm_pix.ssim(_frames(predicted), _frames(target), max_val=1.0).reshape(predicted.shape[:-3])


def frame_metrics(predicted: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """``{'psnr', 'ssim'}``, each (..., T) float64, for uint8 videos (..., T, H, W, 3) of one shape."""
    if predicted.shape != target.shape or predicted.dtype != np.uint8 or target.dtype != np.uint8:
        raise ValueError(
            f"PSNR/SSIM compare uint8 videos of one shape, got {predicted.shape} {predicted.dtype} "
            f"and {target.shape} {target.dtype}"
        )
    if min(predicted.shape[-3:-1]) < SSIM_WINDOW:
        size = f"{SSIM_WINDOW}x{SSIM_WINDOW}"
        raise ValueError(
            f"SSIM needs frames of at least {size} pixels, got videos of shape {predicted.shape}"
        )
    return {
        "psnr": np.asarray(frame_psnr(predicted, target), np.float64),
        "ssim": np.asarray(frame_ssim(predicted, target), np.float64),
    }
