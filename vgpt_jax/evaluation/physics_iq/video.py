"""Video reading for Physics-IQ with OpenCV, the decoder the benchmark's numbers were made with.

Frames are (H, W, 3) uint8 in OpenCV's BGR channel order, which the metrics keep (spec §6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from data_pipelines.video_io import REENCODE_HINT


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video, plus the size of its first decoded frame."""

    fps: float  # CAP_PROP_FPS, frames per second
    num_frames: int  # CAP_PROP_FRAME_COUNT
    width: int  # pixels
    height: int  # pixels


def probe(path: Path) -> VideoInfo:
    """Opens `path` and decodes its first frame; ValueError naming the file if either fails."""
    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok:
            raise ValueError(f"cannot decode the video {path}: {REENCODE_HINT}")
        return VideoInfo(
            fps=float(capture.get(cv2.CAP_PROP_FPS)),
            num_frames=int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
            width=frame.shape[1],
            height=frame.shape[0],
        )
    finally:
        capture.release()


def read_frames(path: Path, num_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yields the frames of `path` from the first, (H, W, 3) uint8 BGR.

    With `num_frames`, yields exactly that many and raises ValueError if the video has fewer;
    without, yields every frame.
    """
    capture = cv2.VideoCapture(str(path))
    try:
        count = 0
        while num_frames is None or count < num_frames:
            ok, frame = capture.read()
            if not ok:
                break
            count += 1
            yield frame
        if count == 0 or (num_frames is not None and count < num_frames):
            needed = "at least 1" if num_frames is None else num_frames
            raise ValueError(f"decoded {count} frames of {path} where {needed} were needed: {REENCODE_HINT}")
    finally:
        capture.release()
