"""Physics-IQ motion masks (spec §5): background subtraction on blurred grey frames.

The benchmark stores masks as lossy grayscale mp4v videos and computes its metrics from the decoded
files, so masks are written the same way here (skipping the round trip moves scores by up to 0.6
points, spec Q1). Mask files are cached under a key of the source video's bytes, the algorithm and
the OpenCV build, so a changed video can never be scored with a stale mask.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np

from vgpt_jax.evaluation.physics_iq.video import probe, read_frames

THRESHOLD = 10  # grey levels; a pixel moves where |blurred grey - background| > THRESHOLD
BACKGROUND_RATE = 0.3  # weight of the current frame in the running-average background
KERNEL = np.ones((5, 5), np.uint8)  # opening then closing, one iteration each
BLUR_SIZE = (5, 5)  # Gaussian blur; sigma 0 lets OpenCV pick it from the size
# Bump when anything above or in motion_masks changes: it is part of every cache key.
MASK_FORMAT = "physics-iq-mask-v1"


def motion_masks(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    """Yields one (H, W) uint8 mask in {0, 255} per (H, W, 3) uint8 BGR frame.

    Frame 0 only starts the background (float64 running average) and gets an all-zero mask. For
    later frames the background takes in the current frame *before* the difference, and is rounded
    to uint8 by cv2.convertScaleAbs, which goes through float32 (half-to-even): both as the
    benchmark does, which float64 rounding would not reproduce bit for bit (spec Q2, Q3).
    """
    background = None
    for frame in frames:
        grey = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), BLUR_SIZE, 0)
        if background is None:
            background = grey.astype(np.float64)
            yield np.zeros_like(grey)
            continue
        cv2.accumulateWeighted(grey, background, BACKGROUND_RATE)
        difference = cv2.absdiff(grey, cv2.convertScaleAbs(background))
        _, mask = cv2.threshold(difference, THRESHOLD, 255, cv2.THRESH_BINARY)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, KERNEL)
        yield cv2.morphologyEx(mask, cv2.MORPH_CLOSE, KERNEL)


def write_mask_video(video: Path, out: Path) -> None:
    """Writes the motion masks of every frame of `video` to `out` as the benchmark does.

    Grayscale mp4v at round(fps) frames per second, frame size floored to even numbers (OpenCV's
    writer crops odd-sized masks). Written under a temporary name and renamed, so an interrupted run
    leaves no truncated file behind for a later run to pick up.
    """
    info = probe(video)
    size = (info.width - info.width % 2, info.height - info.height % 2)
    partial = out.with_name(f".{out.stem}.{os.getpid()}.partial.mp4")
    writer = cv2.VideoWriter(str(partial), cv2.VideoWriter_fourcc(*"mp4v"), round(info.fps), size, False)
    try:
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write mp4v video to {partial}; is {out.parent} writable?")
        for mask in motion_masks(read_frames(video)):
            writer.write(mask)
        writer.release()
        os.replace(partial, out)
    finally:
        writer.release()
        partial.unlink(missing_ok=True)


def cache_key(video: Path) -> str:
    """Hex key of the mask of `video`: its bytes, MASK_FORMAT and the OpenCV version (the codec)."""
    digest = hashlib.sha256(f"{MASK_FORMAT}|opencv-{cv2.__version__}|".encode())
    with open(video, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()[:24]
