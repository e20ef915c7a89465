"""float64 NumPy references for the video metrics, written from the definitions; nothing here
calls the library.

Layouts are TensorFlow's: activations (T, H, W, C) for one video, kernels (kT, kH, kW, Cin, Cout).
"""

from __future__ import annotations

import math

import numpy as np


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME: output ceil(size / stride); the odd padding pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv3d_same(x: np.ndarray, kernel: np.ndarray, strides=(1, 1, 1)) -> np.ndarray:
    """(T, H, W, Cin) * (kT, kH, kW, Cin, Cout) -> (T', H', W', Cout), zero SAME padding."""
    pads = [same_padding(n, k, s) for n, k, s in zip(x.shape[:3], kernel.shape[:3], strides, strict=True)]
    xp = np.pad(x.astype(np.float64), pads + [(0, 0)])
    out_shape = [-(-n // s) for n, s in zip(x.shape[:3], strides, strict=True)]
    out = np.zeros(out_shape + [kernel.shape[-1]])
    for dt in range(kernel.shape[0]):
        for dh in range(kernel.shape[1]):
            for dw in range(kernel.shape[2]):
                patch = xp[
                    dt : dt + strides[0] * out_shape[0] : strides[0],
                    dh : dh + strides[1] * out_shape[1] : strides[1],
                    dw : dw + strides[2] * out_shape[2] : strides[2],
                ]
                out += patch @ kernel[dt, dh, dw].astype(np.float64)
    return out


def max_pool_same(x: np.ndarray, window, strides) -> np.ndarray:
    """(T, H, W, C) -> (T', H', W', C): the max over each window's positions inside the input."""
    out_shape = [-(-n // s) for n, s in zip(x.shape[:3], strides, strict=True)]
    lo = [same_padding(n, k, s)[0] for n, k, s in zip(x.shape[:3], window, strides, strict=True)]
    out = np.empty(out_shape + [x.shape[-1]])
    for t in range(out_shape[0]):
        for h in range(out_shape[1]):
            for w in range(out_shape[2]):
                starts = [i * s - p for i, s, p in zip((t, h, w), strides, lo, strict=True)]
                sl = tuple(slice(max(a, 0), a + k) for a, k in zip(starts, window, strict=True))
                out[t, h, w] = x[sl].reshape(-1, x.shape[-1]).max(axis=0)
    return out


def unit3d(x: np.ndarray, params: dict, stats: dict, strides=(1, 1, 1)) -> np.ndarray:
    """Conv (no bias) -> (x - mean) / sqrt(var + 1e-3) + offset -> ReLU (Sonnet v1 batch norm)."""
    y = conv3d_same(x, params["Conv_0"]["kernel"], strides)
    mean = np.asarray(stats["BatchNorm_0"]["mean"], np.float64).reshape(-1)
    var = np.asarray(stats["BatchNorm_0"]["var"], np.float64).reshape(-1)
    y = (y - mean) / np.sqrt(var + 1e-3) + np.asarray(params["BatchNorm_0"]["bias"], np.float64)
    return np.maximum(y, 0.0)


def inception_block(x: np.ndarray, params: dict, stats: dict) -> np.ndarray:
    """DeepMind's Inception block: [1x1, 1x1->3x3x3, 1x1->3x3x3, maxpool3->1x1] on channels."""
    u = lambda name, inp: unit3d(inp, params[name], stats[name])
    b0 = u("Branch_0/Conv3d_0a_1x1", x)
    b1 = u("Branch_1/Conv3d_0b_3x3", u("Branch_1/Conv3d_0a_1x1", x))
    b2 = u("Branch_2/Conv3d_0b_3x3", u("Branch_2/Conv3d_0a_1x1", x))
    b3 = u("Branch_3/Conv3d_0b_1x1", max_pool_same(x, (3, 3, 3), (1, 1, 1)))
    return np.concatenate([b0, b1, b2, b3], axis=-1)


def tf1_resize_bilinear(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """tf.compat.v1.image.resize_bilinear(align_corners=False, half_pixel_centers=False), per pixel.

    Source coordinate of output pixel y is y * in_h / out_h; the neighbours are floor and
    min(ceil, in_h - 1), weighted by the fractional part. (H, W, C) -> (out_h, out_w, C) float64.
    """
    in_h, in_w = image.shape[:2]
    img = image.astype(np.float64)
    out = np.empty((out_h, out_w, image.shape[2]))
    for y in range(out_h):
        sy = y * (in_h / out_h)
        y0, y1 = math.floor(sy), min(math.ceil(sy), in_h - 1)
        fy = sy - y0
        for x in range(out_w):
            sx = x * (in_w / out_w)
            x0, x1 = math.floor(sx), min(math.ceil(sx), in_w - 1)
            fx = sx - x0
            top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * fx
            bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * fx
            out[y, x] = top + (bottom - top) * fy
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """10 log10(1 / MSE) of uint8 images (H, W, C) scaled to [0, 1]."""
    mse = np.mean((a.astype(np.float64) / 255 - b.astype(np.float64) / 255) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def ssim(a: np.ndarray, b: np.ndarray, size: int = 11, sigma: float = 1.5) -> float:
    """Wang et al. (2004) SSIM of uint8 images (H, W, C) scaled to [0, 1], channels averaged.

    Local statistics under a normalised size x size Gaussian window at every position where it
    fits inside the image; C1 = (0.01)^2, C2 = (0.03)^2.
    """
    x, y = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    g = np.exp(-0.5 * ((np.arange(size) - size // 2) / sigma) ** 2)
    window = np.outer(g, g) / np.outer(g, g).sum()
    h, w = x.shape[0] - size + 1, x.shape[1] - size + 1
    c1, c2 = 0.01**2, 0.03**2
    values = np.empty((h, w, x.shape[2]))
    for i in range(h):
        for j in range(w):
            px, py = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mx, my = np.einsum("ij,ijc->c", window, px), np.einsum("ij,ijc->c", window, py)
            vx = np.einsum("ij,ijc->c", window, (px - mx) ** 2)
            vy = np.einsum("ij,ijc->c", window, (py - my) ** 2)
            cxy = np.einsum("ij,ijc->c", window, (px - mx) * (py - my))
            values[i, j] = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(values.mean())
