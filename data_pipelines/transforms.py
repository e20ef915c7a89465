"""The official per-video transforms: frame sampling, rejection rules, ``crop_arr``, normalisation.

Everything here is a pure function of its arguments (randomness comes in as a NumPy ``Generator``),
so each rule can be checked on hand-made cases. Facts follow VIDEOGPT_SPEC §2 and §13:

* frames ``start + i * interval`` (i = 0 … N-1), ``start ~ U{0 … T - (N-1) * interval - 1}``;
* stages 1–2 use a fixed interval; stages 3–4 draw it per video from ``U{min … min(max_bound, 12)}``
  with ``max_bound = floor((T - 1) / (N - 1))`` and reject the video when ``max_bound < min``;
* videos with a side < 128 px or an aspect ratio > 4 are rejected (the caller draws another one);
* ``crop_arr``: halve (box filter) while the short side >= 2 * max_size, rescale (bicubic) so the
  long side is max_size, upscale a short side < 16 to 16, centre-crop both sides to multiples of 16;
* RGB in [0, 1] → ``(x - 0.5) / 0.5`` in [-1, 1].
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

MIN_SIDE = 128
MAX_ASPECT = 4.0
CROP_MULTIPLE = 16


def min_source_frames(num_frames: int, interval: int) -> int:
    """Fewest source frames that hold ``num_frames`` frames ``interval`` apart: (N - 1) * interval + 1."""
    return (num_frames - 1) * interval + 1


def sample_start(rng: np.random.Generator, num_source_frames: int, num_frames: int, interval: int) -> int:
    """First frame index, uniform over every start whose last frame is inside the video.

    Requires ``num_source_frames >= min_source_frames(num_frames, interval)``.
    """
    last_start = num_source_frames - (num_frames - 1) * interval - 1
    if last_start < 0:
        raise ValueError(
            f"a video of {num_source_frames} frames is too short for {num_frames} frames at interval "
            f"{interval} (needs {min_source_frames(num_frames, interval)}); check rejection_reason first"
        )
    return int(rng.integers(0, last_start + 1))


def flexible_interval_bound(
    num_source_frames: int, num_frames: int, min_interval: int, max_interval: int
) -> int:
    """Largest interval the flexible rule may draw for this video, or 0 when the video is rejected.

    ``floor((T - 1) / (N - 1))`` capped at ``max_interval``; 0 when that is below ``min_interval``.
    """
    bound = (num_source_frames - 1) // max(num_frames - 1, 1)
    return 0 if bound < min_interval else min(bound, max_interval)


def frame_indices(
    rng: np.random.Generator,
    num_source_frames: int,
    num_frames: int,
    interval: int,
    flexible: bool = False,
    max_interval: int = 12,
) -> np.ndarray | None:
    """Source frame indices (N,) int64 of one training clip, or None when the video is too short.

    ``interval`` is the fixed interval (stages 1–2) or, with ``flexible``, the lower bound of the
    per-video interval drawn uniformly from ``[interval, min(floor((T-1)/(N-1)), max_interval)]``.
    """
    if flexible:
        bound = flexible_interval_bound(num_source_frames, num_frames, interval, max_interval)
        if bound == 0:
            return None
        interval = int(rng.integers(interval, bound + 1))
    elif num_source_frames < min_source_frames(num_frames, interval):
        return None
    start = sample_start(rng, num_source_frames, num_frames, interval)
    return start + interval * np.arange(num_frames, dtype=np.int64)


def size_rejection(width: int, height: int, min_side: int = MIN_SIDE, max_aspect: float = MAX_ASPECT) -> str:
    """Why a ``width`` x ``height`` video is rejected by the size rules ('' when it is accepted)."""
    if min(width, height) < min_side:
        return f"side {min(width, height)} px < {min_side}"
    if max(width, height) > max_aspect * min(width, height):
        return f"aspect ratio {max(width, height) / min(width, height):.2f} > {max_aspect:g}"
    return ""


def _resize_steps(width: int, height: int, max_image_size: int) -> list[tuple[int, int, Image.Resampling]]:
    """crop_arr's successive resizes as (width, height, filter), before the final crop."""
    steps = []
    w, h = width, height
    while min(w, h) >= 2 * max_image_size:
        w, h = w // 2, h // 2
        steps.append((w, h, Image.Resampling.BOX))
    if max(w, h) > max_image_size:
        scale = max_image_size / max(w, h)
        w, h = round(w * scale), round(h * scale)
        steps.append((w, h, Image.Resampling.BICUBIC))
    if min(w, h) < CROP_MULTIPLE:
        scale = CROP_MULTIPLE / min(w, h)
        w, h = round(w * scale), round(h * scale)
        steps.append((w, h, Image.Resampling.BICUBIC))
    return steps


def crop_arr_size(width: int, height: int, max_image_size: int) -> tuple[int, int]:
    """(width, height) that :func:`crop_arr` produces from a ``width`` x ``height`` frame."""
    steps = _resize_steps(width, height, max_image_size)
    w, h = (steps[-1][0], steps[-1][1]) if steps else (width, height)
    return w - w % CROP_MULTIPLE, h - h % CROP_MULTIPLE


def crop_arr(frame: np.ndarray, max_image_size: int) -> np.ndarray:
    """The official resize + centre crop of one RGB frame: (H, W, 3) uint8 -> (H', W', 3) uint8.

    Sizes follow :func:`crop_arr_size`; the crop removes ``(side % 16) // 2`` rows/columns at the
    top/left and the rest at the bottom/right.
    """
    height, width = frame.shape[:2]
    steps = _resize_steps(width, height, max_image_size)
    if steps:
        image = Image.fromarray(frame)
        for w, h, resample in steps:
            image = image.resize((w, h), resample=resample)
        frame = np.asarray(image)
    return centre_crop(
        frame,
        frame.shape[0] - frame.shape[0] % CROP_MULTIPLE,
        frame.shape[1] - frame.shape[1] % CROP_MULTIPLE,
    )


def centre_crop(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crops the two axes before the last one of ``frames`` (..., H, W, C) to ``height`` x ``width``.

    The odd row/column goes to the bottom/right, as in crop_arr.
    """
    h, w = frames.shape[-3], frames.shape[-2]
    top, left = (h - height) // 2, (w - width) // 2
    return frames[..., top : top + height, left : left + width, :]


def fit_to_bucket(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 brought to one resolution bucket (T, height, width, 3).

    Clips whose crop_arr output already has the bucket size pass through unchanged (the official
    behaviour); others are scaled (bicubic) by the smallest factor that covers the bucket, keeping
    the aspect ratio, and centre-cropped, so no padding enters the batch.
    """
    h, w = frames.shape[1:3]
    if (h, w) == (height, width):
        return frames
    scale = max(height / h, width / w)
    new_w, new_h = max(width, math.ceil(w * scale - 1e-9)), max(height, math.ceil(h * scale - 1e-9))
    if (new_h, new_w) != (h, w):
        frames = np.stack(
            [np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.Resampling.BICUBIC)) for f in frames]
        )
    return centre_crop(frames, height, width)


def uint8_to_signed(pixels):
    """uint8 RGB -> float32 in [-1, 1]: ``(x / 255 - 0.5) / 0.5``. Works on NumPy and JAX arrays."""
    return pixels.astype("float32") / 127.5 - 1.0
